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

.PHONY: demo test lint format bench clean venv study-ciao study-synthetic reproduce-smoke help

# `make` alone (or `make help`) lists the targets with the `## ` comment on their line.
.DEFAULT_GOAL := help

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

venv: $(STAMP) ## create .venv and install recmtl with its test extras (TORCH_SPEC picks torch)

# The main job on the synthetic default: prepare -> train (PMTRec with social, category and co-view
# auxiliary tasks) -> evaluate on the test split. A few minutes on 2 CPU cores.
demo: $(STAMP) ## prepare -> train -> evaluate on the synthetic default (a few minutes on 2 CPU cores)
	$(BIN)/recmtl prepare --recipe datasets/synthetic.toml --out $(DEMO_DATA) --overwrite
	rm -rf $(DEMO_RUN)
	$(BIN)/recmtl train $(DEMO_DATA) --config configs/demo.toml --name $(notdir $(DEMO_RUN)) --runs-dir $(dir $(DEMO_RUN))
	$(BIN)/recmtl evaluate $(DEMO_RUN)

test: $(STAMP) ## run the test suite (real-data tests need RECMTL_SHARED_DATA or ../shared/data)
	$(BIN)/python -m pytest -q

lint: $(STAMP) ## ruff check and ruff format --check
	$(BIN)/ruff check recmtl cli tests benchmarks
	$(BIN)/ruff format --check recmtl cli tests benchmarks

format: $(STAMP) ## ruff format the sources
	$(BIN)/ruff format recmtl cli tests benchmarks

bench: $(STAMP) ## run benchmarks/ (prepare, training step, evaluation), appending to benchmarks/results/
	$(BIN)/python benchmarks/bench_prepare.py
	$(BIN)/python benchmarks/bench_train_step.py
	$(BIN)/python benchmarks/bench_evaluate.py

# prepare -> sweep -> compare on the synthetic default, small enough for CI (.ci/run runs it after the tests).
reproduce-smoke: $(STAMP) ## prepare -> sweep -> compare: 2 methods x 2 seeds x 2 epochs on synthetic data (results/smoke/)
	$(BIN)/recmtl prepare --recipe datasets/synthetic.toml --out data/synthetic --overwrite --quiet
	$(BIN)/recmtl sweep sweeps/smoke.toml --quiet
	$(BIN)/recmtl compare --sweep sweeps/smoke.toml --baseline single --out results/smoke

# docs/results.md: single / ew / pmtrec on Ciao (--aux social,category), 3 seeds each, test metrics.
CIAO_RAW ?= ../shared/data/ciao
study-ciao: $(STAMP) ## docs/results.md's Ciao table (raw files from CIAO_RAW, default ../shared/data/ciao)
	$(BIN)/recmtl prepare --recipe datasets/ciao.toml --raw $(CIAO_RAW) --out data/ciao --overwrite --quiet
	$(BIN)/python benchmarks/study.py --data data/ciao --aux social,category --methods single,ew,pmtrec \
		--seeds 0,1,2 --lr 0.005 --runs-dir runs/study-ciao

# The synthetic quality check: pmtrec with informative auxiliary tasks vs single, 3 seeds.
study-synthetic: $(STAMP) ## the synthetic check: pmtrec vs single, 3 seeds
	$(BIN)/recmtl prepare --recipe datasets/synthetic.toml --out $(DEMO_DATA) --overwrite --quiet
	$(BIN)/python benchmarks/study.py --data $(DEMO_DATA) --config configs/demo.toml \
		--methods single,pmtrec --seeds 0,1,2 --runs-dir runs/study-synthetic

clean: ## remove .venv, data/, runs/ and .pytest_cache
	rm -rf $(VENV) data runs .pytest_cache

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/\1\t\2/' | expand -t 18
