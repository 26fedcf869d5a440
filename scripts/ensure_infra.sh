#!/usr/bin/env bash
# Start the local PostgreSQL, Redis, RabbitMQ and MariaDB that the tests use, if they are not running.
set -u

wait_for() {  # name, command, tries
  local name=$1 cmd=$2 tries=${3:-60}
  for _ in $(seq "$tries"); do
    if eval "$cmd" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  echo "ensure_infra: $name did not come up" >&2
  return 1
}

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "ensure_infra: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  wait_for PostgreSQL "pg_isready -h 127.0.0.1 -p 5432 -q" || exit 1
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
  echo "ensure_infra: starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
  wait_for Redis "redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG" || exit 1
fi

# The suite runs in parallel workers, each e2e module with a topology of ~10 processes with
# connection pools: PostgreSQL's default of 100 connections is too few (TooManyConnectionsError).
PG_MAX_CONNECTIONS=${HEDDLE_TEST_PG_MAX_CONNECTIONS:-500}
current=$(psql -h 127.0.0.1 -p 5432 -d test -Atc "show max_connections" 2>/dev/null || echo 0)
if [ "${current:-0}" -lt "$PG_MAX_CONNECTIONS" ]; then
  echo "ensure_infra: PostgreSQL max_connections $current -> $PG_MAX_CONNECTIONS (restart)"
  psql -h 127.0.0.1 -p 5432 -d test -qc "ALTER SYSTEM SET max_connections = $PG_MAX_CONNECTIONS" || exit 1
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main restart || exit 1
  wait_for PostgreSQL "pg_isready -h 127.0.0.1 -p 5432 -q" || exit 1
fi

rabbit_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
if ! rabbit_up; then
  echo "ensure_infra: starting RabbitMQ"
  rabbitmq-server -detached || true
  wait_for RabbitMQ rabbit_up 90 || exit 1
fi
maria_up() { (exec 3<>/dev/tcp/127.0.0.1/3306) 2>/dev/null; }
if ! maria_up; then
  echo "ensure_infra: starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
  wait_for MariaDB maria_up 60 || exit 1
fi
echo "ensure_infra: PostgreSQL, Redis, RabbitMQ and MariaDB are up"
