# The README's two commands, each self-sufficient on a fresh machine:
#
#   make demo    set up .venv (once), then the main job: dataset, demo sweep, report
#   make test    set up .venv (once), then the test suite (.ci/run runs exactly this)
#   make test-fast  the same without the end-to-end tests marked `slow` (the README tour, sweeps, notebooks, …)
#
# Setup reuses an existing .venv and installs only what is missing: torch only when the venv has no torch yet
# (a CUDA torch already there is kept), the package whenever pyproject.toml is newer than the last install.
#
#   make demo TORCH=torch                     torch spec for a venv without one (default: the CPU wheel below)
#   make test PYTEST_ARGS="-k readme -x"      extra pytest arguments
#   make setup VENV=/path/to/venv PYTHON=python3.12

PYTHON      ?= python3
VENV        ?= .venv
TORCH       ?= torch==2.13.0
EXTRAS      ?= dev
PYTEST_ARGS ?=

BIN   := $(abspath $(VENV))/bin
STAMP := $(abspath $(VENV))/.stacking-installed

# recipes run as if the venv were activated
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(BIN):$(PATH)

.PHONY: setup demo test test-fast lint

setup: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, and only into a venv without one: the CPU wheel (or $(TORCH)), because an unpinned torch pulled in
# by litgpt/lightning would be a multi-GB CUDA build
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

# The main job (README "The main job"); `stacking data` reuses data/stdlib-bytes when it is already built.
demo: setup
	$(BIN)/stacking data --out data/stdlib-bytes --tokenizer bytes
	$(BIN)/stacking sweep experiments/grids/demo.yaml
	$(BIN)/stacking report sweeps/demo

# The tests (README "The tests").
test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The formatter and linter (ruff, in the dev extras; settings in pyproject.toml): CI runs them before the tests.
lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

# The fast lane: everything but the end-to-end tests (`@pytest.mark.slow`); `make test` and CI run them all.
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)
