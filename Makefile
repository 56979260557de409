# Set-up and everyday commands. Each target installs what it needs into .venv when it is missing.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.zsad-installed
OUT ?= demo_out
BACKBONE ?= tiny-random

.PHONY: install demo test test-fast lint format package clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"  # the tested versions (constraints.txt)
	touch $(STAMP)

install: $(STAMP)

## The main job: train on synthetic categories, test zero-shot on held-out ones (offline by default).
demo: $(STAMP)
	$(BIN)/zsad demo --backbone $(BACKBONE) --out $(OUT)

## The whole test suite (CPU, offline).
test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

## The wheel and sdist as a release has them: built, checked (twine) and the wheel run outside the checkout.
package: $(STAMP)
	bash .ci/wheel

clean:
	rm -rf $(VENV) $(OUT) runs .pytest_cache .ruff_cache
