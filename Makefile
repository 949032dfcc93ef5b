# Set-up commands of the README. Each creates its own virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# test processes (pytest-xdist); each file runs whole in one of them
TEST_WORKERS ?= 2
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "defectscope needs Python 3.11 or newer, $(PYTHON) is " + sys.version.split()[0] + ": run make PYTHON=python3.11 (or newer)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt -e ".[cpu,dev]"
	touch $(STAMP)

demo: install  ## the main job on an embedded synthetic dataset
	$(BIN)/defectscope demo --out runs/demo

lint: install  ## ruff, and the import-layer contracts of pyproject.toml (import-linter)
	$(BIN)/ruff check src tests benchmarks notebooks
	$(BIN)/ruff format --check src tests benchmarks notebooks
	$(BIN)/lint-imports

test: lint  ## lint, then every test (real-data tests skip when ../shared is absent)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25

bench: install  ## data-layer figures of the README
	$(BIN)/python benchmarks/data_pipeline.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
