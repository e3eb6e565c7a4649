# The three commands of the README: demo, test, bench. Each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint browser bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

# The cluster extra too: the contract tests run every backend against the real services.
$(VENV)/.installed-dev: pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev,cluster]'
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/hypemeter demo

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench tools
	$(BIN)/ruff format --check src tests bench tools
	$(BIN)/mypy src
	$(BIN)/lint-imports
	$(BIN)/python tools/sizes.py src

# The whole suite, then the e2e suites again on the cluster profile (PostgreSQL, NATS, Redis).
# On the cluster, the suites whose code paths do not depend on the profile are left to the
# first run: the per-platform webhook suites, the pollers and WebSub (timed against fake
# platforms), the dashboard and the demo, the CLI and control socket, the HTTP edge's
# hostile inputs and body formats, the embedded maintainer's folding, the tenant-wide
# views, key administration (tests/cluster checks keys across API processes), export and
# import (PostgreSQL included in the first run) and the registry's CRUD (its store's
# contract runs on PostgreSQL; test_registry_erase and test_webhooks use it on the cluster),
# CSV rendering and file names, and TLS with the cached readiness probe.
# test_webhooks.py (every platform's path, and connectors shared between processes) stays.
CLUSTER_ONLY_EMBEDDED = test_pollers test_websub test_webhooks_meta test_webhooks_social \
	test_webhooks_twitch test_webhooks_video test_dashboard test_demo test_cli \
	test_control_socket test_hostile test_rollup_maintenance test_tenant_views test_live_tenant \
	test_ingest_formats test_admin_and_tenants test_transfer test_registry \
	test_exports_security test_transport
CLUSTER_SKIPS = $(foreach f,$(CLUSTER_ONLY_EMBEDDED),--ignore=tests/e2e/$(f).py)
# tests/cluster kills and restarts the shared services: it runs alone. The embedded run
# uses two processes (pytest-xdist, one file at a time each): most of its time is spent
# waiting on servers. The cluster run stays in one: each of its servers is five processes.
PYTEST = $(BIN)/pytest -q -p no:cacheprovider
PARALLEL = -n 2 --dist loadfile
test: lint browser
	$(PYTEST) tests/cluster
	$(PYTEST) $(PARALLEL) tests/contract tests/e2e tests/unit
	HYPEMETER_E2E_CLUSTER=1 $(PYTEST) tests/e2e $(CLUSTER_SKIPS)

# The dashboard's tests drive Debian's Chromium (Playwright uses it as its browser).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null 2>&1 || $(SUDO) apt-get install -y -q chromium \
		|| { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium; }

bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache
