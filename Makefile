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
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src
	$(BIN)/lint-imports

# The whole suite, then the e2e suites again on the cluster profile (PostgreSQL, NATS, Redis).
# On the cluster, the per-platform webhook suites, the pollers and WebSub (the same code
# as on the embedded profile, timed against fake platforms) are left to the first run;
# test_webhooks.py (every platform's path, and connectors shared between processes) stays.
CLUSTER_SKIPS = $(foreach f,test_pollers test_websub test_webhooks_meta test_webhooks_social 	test_webhooks_twitch test_webhooks_video test_dashboard test_demo,--ignore=tests/e2e/$(f).py)
test: lint browser
	$(BIN)/pytest -q -p no:cacheprovider
	HYPEMETER_E2E_CLUSTER=1 $(BIN)/pytest -q -p no:cacheprovider tests/e2e $(CLUSTER_SKIPS)

# The dashboard's tests drive Debian's Chromium (Playwright uses it as its browser).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null 2>&1 || $(SUDO) apt-get install -y -q chromium \
		|| { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium; }

bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache
