"""Container health check: `python -m libs.cli.healthcheck <port>` (or `--http <port>`).

Exits 0 when the gRPC health service at 127.0.0.1:<port> answers SERVING (with `--http`:
when http://127.0.0.1:<port>/healthz answers 200), 1 otherwise. Used by docker-compose;
Kubernetes probes the same endpoints natively.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import urllib.error
import urllib.request

from libs.common.grpcutil import check_health


def healthy_grpc(port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> bool:
    """True when the gRPC health check at host:port answers SERVING."""
    try:
        return asyncio.run(check_health(f"{host}:{port}", timeout=timeout))
    except Exception:
        return False


def healthy_http(port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> bool:
    """True when GET http://host:port/healthz answers 200."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=timeout) as reply:
            return int(reply.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m libs.cli.healthcheck")
    parser.add_argument("port", type=int, help="port on 127.0.0.1 to check")
    parser.add_argument("--http", action="store_true", help="check GET /healthz instead of gRPC")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds (default 2)")
    args = parser.parse_args(argv)
    check = healthy_http if args.http else healthy_grpc
    ok = check(args.port, timeout=args.timeout)
    if not ok:
        print(f"unhealthy: 127.0.0.1:{args.port}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
