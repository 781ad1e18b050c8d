# asyncstack — every target bootstraps what it needs; running one twice does nothing extra.
SHELL := /bin/bash
.DEFAULT_GOAL := help
export PATH := $(HOME)/.local/bin:$(PATH)
UV := uv
PKGS := libs/asynccore libs/contracts libs/crawler libs/devservers services/blog services/orders services/stream loadtests deploy
SCENARIO ?= blog

.PHONY: help bootstrap uv sync services browser run logs test test-unit test-stack lint bench load up down warm \
	bench-asynccore bench-blog bench-orders bench-stream bench-async-vs-sync bench-report dashboards

help:
	@echo "make run              the whole stack in the foreground (Ctrl-C stops it); DEMO=0 starts it empty"
	@echo "make logs             follow every process's log of the running stack (ASYNCSTACK_RUN_DIR)"
	@echo "make test             everything the project checks (what CI runs)"
	@echo "make test-unit        the tests that need no local stack"
	@echo "make test-stack       only the stack tests (deploy/tests and others marked stack)"
	@echo "make lint             ruff + mypy + import contracts"
	@echo "make services         install and start Redis, MariaDB, RabbitMQ; fetch the Kafka jars"
	@echo "make bench            every benchmark, then the report (BENCHMARKS.md) and the dashboards"
	@echo "make bench-asynccore  RED metrics and the shared stack against bare aiohttp"
	@echo "make bench-blog       cache hits vs ceiling, uncached, churn, cold-key burst"
	@echo "make bench-orders     orders with keys, as clients send them, vs the article's create_order"
	@echo "make bench-stream     events/s vs a plain aiokafka loop, Quix Streams and faust, CPU per event, freshness"
	@echo "make bench-async-vs-sync  the blog against a gunicorn/Flask baseline"
	@echo "make bench-report     every benchmark into BENCHMARKS.md (QUICK=1 for a short run)"
	@echo "make load SCENARIO=x  one locust scenario against the running stack (blog|flash_sale|stream_ingest|shop_day); SMOKE=1 a short one"
	@echo "make warm             crawl the running site: warm the blog cache, fail on a broken link"
	@echo "make dashboards       regenerate the Grafana dashboards"
	@echo "make up / make down   the stack on a docker host (cp .env.example .env first)"

uv:
	@command -v uv >/dev/null || python3 -m pip install --quiet --user uv==0.13.9 || python3 -m pip install --quiet uv==0.13.9

sync: uv
	@$(UV) sync --frozen --quiet

# Debian's servers installed if missing and started if not answering (loopback, data under
# ASYNCSTACK_STATE_DIR), and the Kafka jars resolved from Maven Central: one line per step, none the second time.
services:
	@bash deploy/local/ensure-services

# playwright-core for the blog's browser tests (Chromium itself is Debian's, from ensure-services);
# the stamp keeps a second run from installing again.
browser:
	@cd services/blog/browser && { [ node_modules/.stamp -nt package-lock.json ] || \
		{ npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.stamp; }; }

bootstrap: sync services browser

# ruff (with complexity, size and docstring gates for libs/ and services/: pyproject.toml), mypy (no
# `type: ignore` without an error code, none unused), and the import contracts of .importlinter.
lint: sync
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy libs/asynccore/src libs/contracts/src libs/crawler/src libs/devservers/src \
		services/blog/src services/orders/src services/stream/src loadtests/src \
		deploy/tests deploy/grafana/generate.py deploy/local/seed.py
	$(UV) run lint-imports

# One pytest per package (each has its own conftest), in asyncio debug mode so a forgotten await fails;
# exit 5 = "no tests collected" is not a failure.
define pytest_each
	@set -e; for pkg in $(PKGS); do \
		if [ -d $$pkg/tests ]; then \
			echo "== $$pkg"; \
			PYTHONASYNCIODEBUG=1 $(UV) run pytest -W error::RuntimeWarning $(1) $$pkg/tests \
				|| { rc=$$?; [ $$rc -eq 5 ] || exit $$rc; }; \
		fi; \
	done
endef

test: bootstrap lint
	$(call pytest_each,)

# The same suites split: without the local stack, and only the stack-level checks.
test-unit: bootstrap
	$(call pytest_each,-m "not stack")

test-stack: bootstrap
	$(call pytest_each,-m stack)

run: bootstrap
	@bash deploy/local/run

# Every process of the running stack logs to $(ASYNCSTACK_RUN_DIR)/logs/<process>.log (JSON for the services).
logs:
	@dir=$${ASYNCSTACK_RUN_DIR:-/tmp/asyncstack}/logs; test -d $$dir || { echo "no $$dir: is make run up?"; exit 1; }; \
		exec tail -n 20 -F $$dir/*.log

# The report runs every benchmark itself (and writes BENCHMARKS.md), then the dashboards are regenerated.
bench: bench-report dashboards

bench-asynccore: bootstrap
	$(UV) run python -m loadtests.bench.asynccore_red

bench-blog: bootstrap
	$(UV) run python -m loadtests.bench.blog

bench-orders: bootstrap
	$(UV) run python -m loadtests.bench.orders

bench-stream: bootstrap
	$(UV) run python -m loadtests.bench.stream

bench-async-vs-sync: bootstrap
	$(UV) run python -m loadtests.bench.async_vs_sync

# Every benchmark in one go, rewriting BENCHMARKS.md; QUICK=1 for a shorter run.
bench-report: bootstrap
	$(UV) run python -m loadtests.bench.report $(if $(QUICK),--quick)

# Crawl the running site through nginx: warms the blog cache and fails on any broken link.
warm: sync
	$(UV) run python -m blog.warm --base-url $(or $(BASE_URL),http://127.0.0.1:8080)

# SMOKE=1: the scenario's [smoke] size (a few users for seconds), as the stack tests run it.
load: bootstrap
	$(UV) run python -m loadtests.run $(SCENARIO) $(if $(SMOKE),--smoke)

dashboards: sync
	$(UV) run python deploy/grafana/generate.py

up:
	@test -f .env || { echo "cp .env.example .env and set its values first"; exit 1; }
	docker compose up -d --build

down:
	docker compose down
