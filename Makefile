# ticketflow: `make help` lists the targets.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check "uv==0.13.9"
	@VIRTUAL_ENV=$(VENV) $(BIN)/uv pip install -q -r requirements.lock
	@VIRTUAL_ENV=$(VENV) $(BIN)/uv pip install -q --no-deps -e .
	@touch $(STAMP)

venv: $(STAMP) ## Create .venv and install the locked dependencies (done by every target that needs it)

lock: ## Re-resolve requirements.lock from pyproject.toml
	@test -x $(BIN)/uv || ($(PY) -m venv $(VENV) && $(BIN)/python -m pip install -q "uv==0.13.9")
	$(BIN)/uv pip compile -q pyproject.toml --extra local --extra dev --extra train --python-version 3.11 -o requirements.lock

run: $(STAMP) ## Run the whole stack locally (embedded PostgreSQL + Tansu broker + four services + a pager inbox on 8084); Ctrl-C stops it
	$(BIN)/python -m shared.localstack run

run-observed: $(STAMP) ## `make run` plus Debian's Prometheus scraping the services with the alert rules (installed if missing and root)
	$(BIN)/python deploy/run_observed.py

migrate: $(STAMP) ## Apply SQL migrations to DATABASE_URL
	$(BIN)/python -m shared.db migrate

test: $(STAMP) ensure-promtool ## Run lint, type checks and every test tier (unit, integration, e2e) except `slow`
	$(BIN)/ruff check .
	$(BIN)/mypy shared services tools
	$(BIN)/pytest $(PYTEST_ARGS)

test-ops: $(STAMP) ensure-promtool ## Prometheus rules (promtool check/test), dashboard metric names, compose structure
	$(BIN)/pytest tests/ops $(PYTEST_ARGS)

ensure-promtool: ## Install Debian's prometheus package for promtool when missing and root; else say the rule tests skip
	@deploy/ensure-promtool.sh

test-unit: $(STAMP) ## Unit tests only (no broker, no database)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test-slow: $(STAMP) ## Slow soak tests only
	$(BIN)/pytest -m slow $(PYTEST_ARGS)

bench-notifier: $(STAMP) ## Benchmark: escalation event to delivered notification, p50/p99 vs the bare Kafka hop
	$(BIN)/python bench/notifier/bench.py

bench-intake: $(STAMP) ## Benchmark: open-loop signed webhooks into intake vs a bare 202 endpoint and raw aiokafka, then wrk's closed-loop maximum (wrk installed if missing and root) (BENCH_RATE, BENCH_SECONDS, BENCH_WORKERS)
	@deploy/ensure-wrk.sh
	$(BIN)/python bench/intake/bench.py

bench-sla: $(STAMP) ## Benchmark: N open SLA clocks (N=10000,100000 default; N=1000000): breach lateness p50/p99/max vs bare loop.call_at, RSS and DB bytes per clock, starts+stops/s, recovery after kill -9, time to ready
	$(BIN)/python bench/sla/bench.py $(if $(N),--sizes $(N))

eval-router: $(STAMP) ## Router classification vs the labelled set: per-category P/R/F1, macro-F1, confusion matrices, threats below L2; fresh sets on their own lines (the held-out one: its line only)
	$(BIN)/python -m services.router.eval.report $(if $(VERBOSE),,--quiet)

train-router: $(STAMP) ## Retrain the router's threat second opinions (character n-grams, scikit-learn) on the studied evaluation sets, Chinese and English, print their cross-validated figures and write services/router/classify/threat_model.json and threat_model_en.json (deterministic)
	$(BIN)/python -m services.router.eval.train_threat

bench-router-decide: $(STAMP) ## Benchmark: pure routing decisions/s on one core (uncached, never-repeating and cached texts) vs a bare rjieba cut of the same texts, heap as the service sets it (BENCH_SECONDS; BENCH_GC=python: Python's collector as it comes)
	$(BIN)/python bench/router_decide.py

bench-router: bench-router-decide ## Benchmark: pure decisions/s, then end-to-end routed/s (consume, decide, persist, publish) and CPU per message vs a raw aiokafka loop (BENCH_MESSAGES; BENCH_TEXTS=unique: texts never seen; BENCH_LOG_LEVEL=INFO: the router logs as by default)
	$(BIN)/python bench/router_e2e.py

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/mypy shared services tools

fmt: $(STAMP) ## Format and fix imports
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

demo: $(STAMP) ## Live demo against a running `make run`: simulated customers and agents, live view (RATE=2 msgs/s; Ctrl-C stops)
	$(BIN)/python -m tools.demo --rate $(or $(RATE),2)

chaos: $(STAMP) ## Chaos suite on its own stack under load: kill -9 each service, restart the broker and PostgreSQL; lost/duplicated per fault must be 0 (CHAOS_SHORT=1: the short variant)
	$(BIN)/python -m tools.chaos

load: $(STAMP) ## Surge simulator on its own stack (free ports): PROFILE=steady|double11|broker-outage [RATE=base/s SECONDS=n]; counts lost/duplicated by event id
	$(BIN)/python -m tools.load --profile $(or $(PROFILE),steady) $(if $(RATE),--rate $(RATE)) $(if $(SECONDS),--seconds $(SECONDS))

bench: $(STAMP) ## Run every benchmark in turn (each prints its figures and same-run baseline), then write bench-results/<UTC time>.md and .json with the machine
	@dir=$$(mktemp -d); status=0; \
	for t in bench-intake bench-router bench-sla bench-notifier; do \
		BENCH_RESULTS_DIR=$$dir $(MAKE) --no-print-directory $$t || status=1; \
	done; \
	$(BIN)/python -m tools.bench_summary --from $$dir --out bench-results; \
	rm -rf $$dir; exit $$status

asyncapi: $(STAMP) ## Regenerate docs/asyncapi.json from the event schemas in shared/
	$(BIN)/python -m shared.asyncapi docs/asyncapi.json

clean: ## Remove the virtual environment and local stack data
	rm -rf $(VENV) .local

.PHONY: help venv lock run run-observed migrate test test-ops ensure-promtool test-unit test-slow lint fmt asyncapi clean bench-notifier bench-intake bench-sla eval-router train-router bench-router-decide bench-router bench demo load chaos
