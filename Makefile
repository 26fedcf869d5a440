# Heddle — the two commands that matter are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint fmt protos check-protos up down bench infra clean console

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml libs/sdk/pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps -e libs/sdk
	touch $(STAMP)

## Start the whole stack embedded (SQLite, in-process bus); gateway on http://127.0.0.1:8080
run: $(STAMP)
	@scripts/ensure_sandbox.sh
	$(BIN)/heddle serve

## Start local PostgreSQL/Redis/RabbitMQ if down, then run the whole suite, in parallel workers
## (pytest-xdist; a module's tests stay on one worker, so module fixtures start once)
TEST_WORKERS ?= 3
test: $(STAMP) infra
	@scripts/ensure_chromium.sh
	@scripts/ensure_sandbox.sh
	@echo "Console screenshots: $(CURDIR)/var/screenshots"
	$(BIN)/python -m pytest -q --durations=30 -n $(TEST_WORKERS) --dist loadfile
	@echo "Console screenshots: $(CURDIR)/var/screenshots"

## Rebuild the web console (console/ -> services/gateway/console_dist, committed)
console:
	cd console && npm ci --no-audit --no-fund && npm run build

infra:
	@scripts/ensure_infra.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy --config-file libs/sdk/pyproject.toml
	$(BIN)/lint-imports
	cd console && { test -d node_modules || npm ci --no-audit --no-fund; } && npx tsc --noEmit

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## Regenerate the checked-in gRPC/protobuf modules from protos/
protos: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

## Production topology as local processes against local PostgreSQL/Redis/RabbitMQ
up: $(STAMP) infra
	@scripts/ensure_sandbox.sh
	$(BIN)/heddle up

down: $(STAMP)
	$(BIN)/heddle down

bench: $(STAMP)
	$(BIN)/python bench/plan_10k.py
	$(BIN)/python bench/engine.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
