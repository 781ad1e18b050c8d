# asyncstack — every target bootstraps what it needs; running one twice does nothing extra.
SHELL := /bin/bash
.DEFAULT_GOAL := help
export PATH := $(HOME)/.local/bin:$(PATH)
UV := uv
PKGS := libs/asynccore services/blog services/orders services/stream loadtests deploy
SCENARIO ?= blog

.PHONY: help bootstrap uv sync services run test test-unit test-stack lint bench load up down warm \
	bench-asynccore bench-blog bench-orders bench-stream bench-async-vs-sync bench-report dashboards

help:
	@echo "make run     the whole stack in the foreground (Ctrl-C stops it)"
	@echo "make test    everything the project checks (what CI runs)"
	@echo "make lint    ruff + mypy"
	@echo "make bench   every benchmark; make load SCENARIO=blog one locust scenario"
	@echo "make up/down the stack on a docker host"

uv:
	@command -v uv >/dev/null || python3 -m pip install --quiet --user uv==0.13.9 || python3 -m pip install --quiet uv==0.13.9

sync: uv
	@$(UV) sync --frozen --quiet

# Debian's servers installed if missing and started if not answering (loopback, data under
# ASYNCSTACK_STATE_DIR), and the Kafka jars resolved from Maven Central: one line per step, none the second time.
services:
	@bash deploy/local/ensure-services

bootstrap: sync services

lint: sync
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy libs/asynccore/src services/blog/src services/orders/src services/stream/src loadtests/src \
		deploy/local/nginx_exporter.py deploy/tests deploy/grafana/generate.py

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

bench: bench-asynccore bench-blog bench-orders bench-stream bench-async-vs-sync bench-report dashboards

bench-asynccore: bootstrap
	$(UV) run python -m loadtests.bench.asynccore_red

bench-blog: bootstrap
	$(UV) run python -m loadtests.bench.blog

bench-orders: bootstrap
	$(UV) run python -m loadtests.bench.orders

bench-stream: bootstrap
	$(UV) run python -m loadtests.bench.stream

# Crawl the running site through nginx: warms the blog cache and fails on any broken link.
warm: sync
	$(UV) run python -m blog.warm --base-url $(or $(BASE_URL),http://127.0.0.1:8080)

load: bootstrap
	$(UV) run python -m loadtests.run $(SCENARIO)

dashboards: sync
	$(UV) run python deploy/grafana/generate.py

up:
	@test -f .env || { echo "cp .env.example .env and set its values first"; exit 1; }
	docker compose up -d --build

down:
	docker compose down
