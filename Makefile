# taskd — `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config/dev.yaml
PYTEST_ARGS ?=

help: ## Show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/taskd: pyproject.toml
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

install: $(BIN)/taskd ## Create .venv and install taskd with its dev tools

run: install ## Start the whole system locally (api, worker, notifier, promoter) with config/dev.yaml
	@$(BIN)/taskd check --config $(CONFIG)
	@$(BIN)/taskd migrate --config $(CONFIG)
	@$(BIN)/python scripts/local_kafka.py $(CONFIG)
	@$(BIN)/python scripts/local_smtp.py $(CONFIG)
	@$(BIN)/taskd token --config $(CONFIG) --sub dev --banner
	exec $(BIN)/taskd --role all --config $(CONFIG)

stop-kafka: ## Stop the local Kafka-protocol broker that `make run` started
	@test -f .run/tansu.pid && kill $$(cat .run/tansu.pid) && rm .run/tansu.pid || echo "no local broker running"

stop-smtp: ## Stop the local SMTP sink that `make run` started
	@test -f .run/smtp.pid && kill $$(cat .run/smtp.pid) && rm .run/smtp.pid || echo "no local SMTP sink running"

test: install ## Run the whole test suite against local Postgres and Redis
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: install ## ruff (lint and format check)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

type: install ## mypy --strict
	$(BIN)/mypy

chaos: install ## Randomized fault soak (MINUTES=3): kills, Redis loss, outages; prints a table
	$(BIN)/python -m tests.fault.chaos --minutes $${MINUTES:-3}

bench: install ## Benchmarks of issue 9 (processing, submit, latency, backlog) against the targets
	$(BIN)/python -m bench

bench-peers: install ## The same, plus arq, saq, celery, dramatiq, taskiq and procrastinate, with ratios
	$(BIN)/python -m bench --peers

.PHONY: help install run stop-kafka stop-smtp test lint type bench bench-peers chaos
