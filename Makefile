# pitstore — `make help` lists the targets.
SHELL := /bin/bash
PY := .venv/bin/python
VENV_STAMP := .venv/.installed
export PITSTORE_HOME ?= $(CURDIR)/data
export REDIS_URL ?= redis://localhost:6379/0
# The port of REDIS_URL (redis://[user:pass@]host[:port]/db), 6379 when it has none:
# `make redis` starts its local server there.
# REDIS_URL as `make help` shows it: a password in it is masked.
REDIS_URL_SHOWN := $(shell printf '%s' '$(REDIS_URL)' | sed -E 's#//[^@/]*@#//***@#')
REDIS_PORT := $(or $(shell printf '%s' '$(REDIS_URL)' | sed -nE 's#^rediss?://([^@/]*@)?[^:/]*:([0-9]+).*#\2#p'),6379)

.DEFAULT_GOAL := help

##@ Start here

help: ## List the targets and the settings they use
	@printf 'Usage: make TARGET   (pitstore: a point-in-time feature store; see README.md)\n'
	@awk 'BEGIN {FS = ":.*?## "} /^##@ / {printf "\n\033[1m%s\033[0m\n", substr($$0, 5)} /^[a-zA-Z_-]+:.*?## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@printf '\nSettings (environment or make VAR=value):\n'
	@printf '  PITSTORE_HOME    %s\n' '$(PITSTORE_HOME)'
	@printf '  REDIS_URL        %s   (make redis uses port %s)\n' '$(REDIS_URL_SHOWN)' '$(REDIS_PORT)'
	@printf '  SIZE             bench size: tiny, small (default), medium\n'

demo: venv redis ## Run the daily batch end to end: data, 45 daily runs, parity, model
	.venv/bin/pitstore demo

monitor: venv redis ## A small world with a shift (amount zeroed from day 52) scored through the API; HTML monitor report
	$(PY) -m pitstore.monitor.demo --home $(PITSTORE_HOME)/monitor-demo

test: venv redis-server chromium ## Run the whole test suite (real Redis, dbt, Feast, Spark, Chromium)
	$(PY) -m pytest -q

##@ Development

test-fast: venv redis-server chromium ## Run the tests without Spark
	$(PY) -m pytest -q -m "not spark"

test-unit: venv ## Run the fast unit tests only (no Redis, dbt, Spark or servers)
	$(PY) -m pytest -q -m "not integration"

lint: venv ## ruff + mypy + import layers (import-linter) + generated-SQL check
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy && .venv/bin/lint-imports && .venv/bin/pitstore codegen --check

codegen: venv ## Regenerate dbt SQL from the feature spec
	.venv/bin/pitstore codegen

# CI size: 200 accounts x 10 daily runs, in Redis DB 15 (flushed) of REDIS_URL's server.
PARITY_ARGS ?= --accounts 200 --merchants 40 --days 10

parity: venv redis ## Multi-day simulation, 100% online/offline parity after every run (Redis DB 15)
	.venv/bin/pitstore parity simulate $(PARITY_ARGS)

bench: venv redis-server ## Benchmarks against Feast and raw baselines (SIZE=...); docs/benchmarks.md
	$(PY) -m bench.run --size $(or $(SIZE),small) $(BENCH_ARGS)

bench-transform: venv ## Benchmark #6 alone: one incremental day vs a full rebuild
	$(PY) -m bench.transform_bench --size $(or $(SIZE),small) $(BENCH_TRANSFORM_ARGS)

##@ Setup

venv: $(VENV_STAMP) ## Create .venv with the pinned versions

chromium: ## Install Debian's chromium if missing (the HTML report's browser test)
	@command -v chromium >/dev/null || { echo "installing chromium"; apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

redis-server: ## Install redis-server if missing (Debian package)
	@command -v redis-server >/dev/null || { echo "installing redis-server"; apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }

redis: redis-server ## Start (or reuse) a local Redis on REDIS_URL's port
	@redis-cli -p $(REDIS_PORT) ping >/dev/null 2>&1 || redis-server --port $(REDIS_PORT) --daemonize yes --save '' --appendonly no --dir /tmp >/dev/null
	@for i in $$(seq 50); do redis-cli -p $(REDIS_PORT) ping >/dev/null 2>&1 && break; sleep 0.1; done; redis-cli -p $(REDIS_PORT) ping >/dev/null

clean: ## Remove generated data (not the venv)
	rm -rf data transforms/dbt/target transforms/dbt/logs

$(VENV_STAMP): pyproject.toml requirements.lock
	@command -v java >/dev/null || { echo "installing Java 17 (for Spark)"; apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless >/dev/null; }
	python3.11 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $(VENV_STAMP)

.PHONY: help venv chromium redis-server redis demo monitor test test-fast test-unit lint codegen clean parity bench bench-transform
