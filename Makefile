# Every target installs what it needs first, so each one works on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PINGO  := $(VENV)/bin/pingo
STAMP  := $(VENV)/.installed
CONFIG ?= pingo.toml

.PHONY: install browser config demo crawl factory train stats report schedule test lint format bench clean

install: $(STAMP) browser

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[test,distributed,lint]'
	touch $(STAMP)

# Headless Chromium + chromedriver render the search pages. Debian/Ubuntu: installed with apt.
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "installing chromium and chromium-driver with apt-get"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver; \
	else \
	  echo "pingo needs Chromium and chromedriver on PATH and could not find apt-get."; \
	  echo "Install them with your package manager (macOS: brew install --cask chromium; brew install chromedriver)."; \
	  exit 1; \
	fi

config: $(STAMP)
	@test -f $(CONFIG) || $(PINGO) --config $(CONFIG) init

demo: install config
	$(PINGO) --config $(CONFIG) demo

# Starts the demo site for the crawl when crawl.sources uses it and nothing answers there.
crawl: install config
	$(PINGO) --config $(CONFIG) crawl --with-demo-site

factory: install config
	$(PINGO) --config $(CONFIG) factory

train: install config
	$(PINGO) --config $(CONFIG) train

stats: install config
	$(PINGO) --config $(CONFIG) stats

report: install config
	$(PINGO) --config $(CONFIG) report

schedule: install config
	$(PINGO) --config $(CONFIG) schedule

test: install
	$(PY) -m pytest

# Style, import order and bugs (ruff), formatting at 100 columns, types (mypy), and the import
# layers of docs/architecture.md (import-linter). CI runs this before the tests.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

# Rewrites files: sorts imports, applies safe fixes, formats.
format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install
	@set -e; for b in bench/*.py; do echo "== $$b"; $(PY) $$b; done

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache bench/out
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
