# recmtl — the two set-up commands are `make demo` and `make test` (see README.md).
#
# TORCH_SPEC picks the torch requirement. The default pins the release this project is tested with;
# on machines with a local CPU wheel, pip takes it from there. Override it, e.g.
#   make test TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu"
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DATA ?= data/synthetic
DEMO_RUN ?= runs/demo

.PHONY: demo test lint format bench clean venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/recmtl prepare --recipe datasets/synthetic.toml --out $(DEMO_DATA) --overwrite
	$(BIN)/recmtl info $(DEMO_DATA)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check recmtl cli tests benchmarks
	$(BIN)/ruff format --check recmtl cli tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format recmtl cli tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_prepare.py

clean:
	rm -rf $(VENV) data runs .pytest_cache
