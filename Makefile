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

.PHONY: demo test lint format bench clean venv study-ciao study-synthetic

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

# The main job on the synthetic default: prepare -> train (PMTRec with social, category and co-view
# auxiliary tasks) -> evaluate on the test split. A few minutes on 2 CPU cores.
demo: $(STAMP)
	$(BIN)/recmtl prepare --recipe datasets/synthetic.toml --out $(DEMO_DATA) --overwrite
	rm -rf $(DEMO_RUN)
	$(BIN)/recmtl train $(DEMO_DATA) --config configs/demo.toml --name $(notdir $(DEMO_RUN)) --runs-dir $(dir $(DEMO_RUN))
	$(BIN)/recmtl evaluate $(DEMO_RUN)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check recmtl cli tests benchmarks
	$(BIN)/ruff format --check recmtl cli tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format recmtl cli tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_prepare.py
	$(BIN)/python benchmarks/bench_train_step.py
	$(BIN)/python benchmarks/bench_evaluate.py

# docs/results.md: single / ew / pmtrec on Ciao (--aux social,category), 3 seeds each, test metrics.
CIAO_RAW ?= ../shared/data/ciao
study-ciao: $(STAMP)
	$(BIN)/recmtl prepare --recipe datasets/ciao.toml --raw $(CIAO_RAW) --out data/ciao --overwrite --quiet
	$(BIN)/python benchmarks/study.py --data data/ciao --aux social,category --methods single,ew,pmtrec \
		--seeds 0,1,2 --lr 0.005 --runs-dir runs/study-ciao

# The synthetic quality check: pmtrec with informative auxiliary tasks vs single, 3 seeds.
study-synthetic: $(STAMP)
	$(BIN)/recmtl prepare --recipe datasets/synthetic.toml --out $(DEMO_DATA) --overwrite --quiet
	$(BIN)/python benchmarks/study.py --data $(DEMO_DATA) --config configs/demo.toml \
		--methods single,pmtrec --seeds 0,1,2 --runs-dir runs/study-synthetic

clean:
	rm -rf $(VENV) data runs .pytest_cache
