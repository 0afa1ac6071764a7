# certfleet: the front door. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
	  echo "python venv failed: install python3-venv (apt-get install python3-venv)"; exit 1; }
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

.PHONY: venv
venv: $(STAMP) ## Create the virtualenv and install certfleet with its dev tools

.PHONY: demo
demo: venv ## Run the whole system locally on SQLite + redis and issue for the example fleet
	@infra/ensure-services.sh
	@infra/demo.sh

.PHONY: run
run: venv ## Run the API and the issuer in the foreground (settings from CERTFLEET_* env)
	@infra/ensure-services.sh
	$(BIN)/certfleet stack run

.PHONY: test
test: venv ## Run the whole test suite (real redis-server, PostgreSQL and OpenSSL)
	@infra/ensure-services.sh --postgres
	$(BIN)/pytest -n 2 $(PYTEST_ARGS)

.PHONY: test-fast
test-fast: venv ## The fast tier: SQLite and a private redis-server only (no PostgreSQL, sshd, browser)
	@infra/ensure-services.sh
	$(BIN)/pytest -n 2 --fast $(PYTEST_ARGS)

.PHONY: bench
BENCH_SCALE ?= full
BENCH_STEPS ?= raw,csr,keygen,latency,scan,campaign,cli
bench: venv ## Benchmarks vs in-process references (BENCH_SCALE=small|full, BENCH_STEPS=...)
	@infra/ensure-services.sh --postgres
	$(BIN)/python -m infra.bench --scale $(BENCH_SCALE) --steps $(BENCH_STEPS)

.PHONY: lint
lint: venv ## ruff lint and format check
	$(BIN)/ruff check --no-cache .
	$(BIN)/ruff format --no-cache --check .

.PHONY: fmt
fmt: venv ## Format the code
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

.PHONY: typecheck
typecheck: venv ## mypy (strict on shared/)
	$(BIN)/mypy --strict shared
	$(BIN)/mypy services

.PHONY: clean
clean: ## Remove the virtualenv and caches (never var/: the database and the CA keys live there)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache var/demo

.PHONY: clean-state
clean-state: ## Delete var/ (database, CA keys, admin token) after asking; CONFIRM=yes skips the question
	@if [ "$(CONFIRM)" != yes ]; then \
	  read -r -p "Delete var/ with the database, the CA keys and the admin token? Type yes: " answer; \
	  [ "$$answer" = yes ] || { echo "kept var/"; exit 1; }; \
	fi
	rm -rf var
