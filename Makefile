# pitstore — `make help` lists the targets.
SHELL := /bin/bash
PY := .venv/bin/python
VENV_STAMP := .venv/.installed
export PITSTORE_HOME ?= $(CURDIR)/data
export REDIS_URL ?= redis://localhost:6379/0

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  \033[1m%-14s\033[0m %s\n", $$1, $$2}'

$(VENV_STAMP): pyproject.toml requirements.lock
	@command -v java >/dev/null || { echo "installing Java 17 (for Spark)"; apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless >/dev/null; }
	python3.11 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $(VENV_STAMP)

venv: $(VENV_STAMP) ## Create .venv with the pinned versions

redis-server: ## Install redis-server if missing (Debian package)
	@command -v redis-server >/dev/null || { echo "installing redis-server"; apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }

redis: redis-server ## Start (or reuse) a local Redis on 6379
	@redis-cli -p 6379 ping >/dev/null 2>&1 || redis-server --port 6379 --daemonize yes --save '' --appendonly no --dir /tmp >/dev/null
	@for i in $$(seq 50); do redis-cli -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done; redis-cli -p 6379 ping >/dev/null

demo: venv redis ## Run the daily batch end to end on the embedded default dataset
	.venv/bin/pitstore demo

test: venv redis-server ## Run the whole test suite (Spark included)
	$(PY) -m pytest -q

test-fast: venv redis-server ## Run the tests without Spark
	$(PY) -m pytest -q -m "not spark"

lint: venv ## ruff + mypy + import layers (import-linter) + generated-SQL check
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy && .venv/bin/lint-imports && .venv/bin/pitstore codegen --check

# CI size: 200 accounts x 10 daily runs, in Redis DB 15 (flushed) of REDIS_URL's server.
PARITY_ARGS ?= --accounts 200 --merchants 40 --days 10
parity: venv redis ## Multi-day simulation: 100% online/offline parity after every run
	.venv/bin/pitstore parity simulate $(PARITY_ARGS)

codegen: venv ## Regenerate dbt SQL from the feature spec
	.venv/bin/pitstore codegen

bench: venv redis-server ## Benchmarks vs Feast/raw baselines (SIZE=small|medium); bench/results/latest.json
	$(PY) -m bench.run --size $(or $(SIZE),small) $(BENCH_ARGS)

bench-transform: venv ## #6: one incremental day vs full rebuild, dbt and Spark (SIZE=tiny|small|medium)
	$(PY) -m bench.transform_bench --size $(or $(SIZE),small) $(BENCH_TRANSFORM_ARGS)

clean: ## Remove generated data (not the venv)
	rm -rf data transforms/dbt/target transforms/dbt/logs

.PHONY: help venv redis-server redis demo test test-fast lint codegen clean parity bench bench-transform
