# Set-up commands of the README. Each creates its own virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt -e ".[cpu,dev]"
	touch $(STAMP)

demo: install  ## the main job on an embedded synthetic dataset
	$(BIN)/defectscope demo --out runs/demo

lint: install
	$(BIN)/ruff check src tests benchmarks

test: lint  ## lint, then every test (real-data tests skip when ../shared is absent)
	$(BIN)/python -m pytest

bench: install  ## data-layer figures of the README
	$(BIN)/python benchmarks/data_pipeline.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
