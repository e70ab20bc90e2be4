# Témoin: `make run` starts the whole stack on its embedded default, `make test` tests it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format lock clean bench-audit bench-ingest bench-vault bench-report bench-dashboard bench-anonymise bench-footprint bench-scale

# Browser tests only (tests/fixtures/browser.py, docs/testing.md): Debian's Chromium, and axe-core
# from npm in a test-only directory. `make test` installs them when missing; `make run` never.
CHROMIUM := /usr/bin/chromium
BROWSER_NPM := tests/browser
BROWSER_NPM_STAMP := $(BROWSER_NPM)/node_modules/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/temoin run

# The dashboard's tests sign in against a second, independent OpenID provider (node-oidc-provider).
tests/oidc/node_modules/.package-lock.json: tests/oidc/package.json tests/oidc/package-lock.json
	cd tests/oidc && npm ci --no-audit --no-fund --silent

test: $(STAMP) $(CHROMIUM) $(BROWSER_NPM_STAMP) tests/oidc/node_modules/.package-lock.json
	$(BIN)/pytest

# Present: nothing to do. Absent: install, and refresh the package lists only if that fails.
$(CHROMIUM):
	$(APT_INSTALL) || ($(SUDO) apt-get update -q && $(APT_INSTALL)) \
		|| { echo "make test: the browser tests need Debian's chromium at $@"; exit 1; }

$(BROWSER_NPM_STAMP): $(BROWSER_NPM)/package-lock.json
	cd $(BROWSER_NPM) && npm ci --no-audit --no-fund
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Benchmarks: each prints its figure beside a peer measured in the same run.
bench-audit: $(STAMP)
	$(BIN)/python -m benchmarks.audit

bench-ingest: $(STAMP)
	$(BIN)/python -m benchmarks.ingest

bench-vault: $(STAMP)
	$(BIN)/python -m benchmarks.vault

bench-report: $(STAMP)
	$(BIN)/python -m benchmarks.report

bench-dashboard: $(STAMP)
	$(BIN)/python -m benchmarks.dashboard

bench-anonymise: $(STAMP)
	$(BIN)/python -m benchmarks.anonymise

bench-footprint: $(STAMP)
	$(BIN)/python -m benchmarks.footprint

bench-scale: $(STAMP)
	$(BIN)/python -m benchmarks.scale

# Re-pin every dependency after changing pyproject.toml.
lock:
	rm -rf /tmp/temoin-lock && $(PYTHON) -m venv /tmp/temoin-lock
	/tmp/temoin-lock/bin/pip install --quiet --disable-pip-version-check '.[dev]'
	/tmp/temoin-lock/bin/pip freeze --exclude temoin > requirements.lock

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache tests/oidc/node_modules
