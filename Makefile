# recmtl — the two set-up commands are `make demo` and `make test` (see README.md).
#
# TORCH_SPEC picks the torch requirement. The default pins the release this project is tested with;
# on machines with a local CPU wheel, pip takes it from there. Override it, e.g.
#   make test TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu"
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
# pytest-xdist workers for `make test`: auto = one per core (TEST_JOBS=0 runs in one process)
TEST_JOBS ?= auto
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DATA ?= data/synthetic
DEMO_RUN ?= runs/demo

.PHONY: demo test lint format bench clean venv help
.PHONY: reproduce-smoke reproduce-synthetic reproduce-ciao reproduce-lastfm reproduce-epinions
.PHONY: reproduce-amazon-videogames reproduce-amazon-office reproduce-pmtrec-ciao reproduce-robustness
.PHONY: reproduce-stem
.PHONY: reproduce-pmtrec-study

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

test: $(STAMP) ## run the test suite on TEST_JOBS workers (real-data tests need RECMTL_SHARED_DATA or ../shared/data)
	$(BIN)/python -m pytest -q -n $(TEST_JOBS)

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

# Whole studies: prepare -> sweep (sweeps/DATASET.toml: every method x 3 seeds; resumable, so a stopped target
# continues where it stopped) -> compare against single and against ew, into results/DATASET/.
# Raw files: CIAO_RAW and LASTFM_RAW (default ../shared/data/...), RAW=... for the datasets users bring.
CIAO_RAW ?= ../shared/data/ciao
LASTFM_RAW ?= ../shared/data/lastfm-2k
JOBS ?= 1
define study
	$(BIN)/recmtl sweep sweeps/$(1).toml --jobs $(JOBS) --quiet
	$(BIN)/recmtl compare --sweep sweeps/$(1).toml --baseline single --out results/$(1)/vs-single
	$(BIN)/recmtl compare --sweep sweeps/$(1).toml --baseline ew --out results/$(1)/vs-ew --no-plots
endef
define need_raw
	@test -n "$(RAW)" || { echo "error: give the raw files: make $@ RAW=path/to/raw (see docs/data.md)" >&2; exit 2; }
endef

reproduce-synthetic: $(STAMP) ## every method x 3 seeds on the synthetic default -> results/synthetic/
	$(BIN)/recmtl prepare --recipe datasets/synthetic.toml --out data/synthetic --overwrite --quiet
	$(call study,synthetic)

reproduce-ciao: $(STAMP) ## every method x 3 seeds on Ciao (CIAO_RAW) -> results/ciao/
	$(BIN)/recmtl prepare --recipe datasets/ciao.toml --raw $(CIAO_RAW) --out data/ciao --overwrite --quiet
	$(call study,ciao)

reproduce-lastfm: $(STAMP) ## every method x 3 seeds on Last.fm (LASTFM_RAW) -> results/lastfm/
	$(BIN)/recmtl prepare --recipe datasets/lastfm.toml --raw $(LASTFM_RAW) --out data/lastfm --overwrite --quiet
	$(call study,lastfm)

reproduce-epinions: $(STAMP) ## every method x 3 seeds on Epinions: make reproduce-epinions RAW=dir
	$(call need_raw)
	$(BIN)/recmtl prepare --recipe datasets/epinions.toml --raw $(RAW) --out data/epinions --overwrite --quiet
	$(call study,epinions)

reproduce-amazon-videogames: $(STAMP) ## every method x 3 seeds on Amazon Video Games: RAW=dir
	$(call need_raw)
	$(BIN)/recmtl prepare --recipe datasets/amazon-videogames.toml --raw $(RAW) --out data/amazon-videogames --overwrite --quiet
	$(call study,amazon-videogames)

reproduce-amazon-office: $(STAMP) ## every method x 3 seeds on Amazon Office: RAW=dir
	$(call need_raw)
	$(BIN)/recmtl prepare --recipe datasets/amazon-office.toml --raw $(RAW) --out data/amazon-office --overwrite --quiet
	$(call study,amazon-office)

# PMTRec's own checks on Ciao (prepare it with reproduce-ciao first): sensitivity and readings.
reproduce-pmtrec-ciao: $(STAMP) ## PMTRec ablation, alpha x tau sensitivity and [reading] options on Ciao -> results/pmtrec-*/
	$(BIN)/recmtl sweep sweeps/pmtrec-ablation-ciao.toml --jobs $(JOBS) --quiet
	$(BIN)/recmtl compare --sweep sweeps/pmtrec-ablation-ciao.toml --baseline single --out results/pmtrec-ablation-ciao
	$(BIN)/recmtl sweep sweeps/pmtrec-sensitivity-ciao.toml --jobs $(JOBS) --quiet
	$(BIN)/recmtl compare --sweep sweeps/pmtrec-sensitivity-ciao.toml --baseline ew --out results/pmtrec-sensitivity-ciao
	$(BIN)/recmtl sweep sweeps/pmtrec-readings-ciao.toml --jobs $(JOBS) --quiet
	$(BIN)/recmtl compare --sweep sweeps/pmtrec-readings-ciao.toml --baseline single --out results/pmtrec-readings-ciao
	$(BIN)/recmtl compare --sweep sweeps/pmtrec-readings-ciao.toml --only ew,pmtrec --baseline ew --out results/pmtrec-readings-ciao/vs-ew --no-plots

# STEM (--encoder stem) against matrix factorisation on Ciao and Last.fm (raw files as for reproduce-ciao /
# reproduce-lastfm): sweeps/stem-*.toml, then compare against single with the aux-ratio breakdown.
reproduce-stem: $(STAMP) ## STEM vs MF (single, ew, pmtrec; stem+ew, stem+pmtrec) x 3 seeds, Ciao and Last.fm -> results/stem-*/
	$(BIN)/recmtl prepare --recipe datasets/ciao.toml --raw $(CIAO_RAW) --out data/ciao --overwrite --quiet
	$(BIN)/recmtl prepare --recipe datasets/lastfm.toml --raw $(LASTFM_RAW) --out data/lastfm --overwrite --quiet
	$(BIN)/recmtl sweep sweeps/stem-ciao.toml --jobs $(JOBS) --quiet
	$(BIN)/recmtl compare --sweep sweeps/stem-ciao.toml --baseline single --buckets aux-ratio --out results/stem-ciao
	$(BIN)/recmtl sweep sweeps/stem-lastfm.toml --jobs $(JOBS) --quiet
	$(BIN)/recmtl compare --sweep sweeps/stem-lastfm.toml --baseline single --buckets aux-ratio --out results/stem-lastfm
# Each setting's pmtrec against the ew of the same tasks and sampling: $(call compare_settings,SWEEP,OUT,SETTINGS)
# with SETTINGS = SETTING:LABEL+LABEL... naming sweeps/SWEEP.toml's [methods.LABEL] tables compared in
# SETTING ('+': make's $(call) splits on commas), written to results/OUTSETTING.
define compare_settings
	for s in $(3); do set -- $$(echo $$s | tr : ' '); \
	  $(BIN)/recmtl compare --sweep sweeps/$(1).toml --only $$(echo $$2 | tr + ,) --baseline ew \
	    --out results/$(2)$$1 --no-plots || exit 1; done
endef

# Where tasks meet: --aux-sampling x PMTRec's norm_source x three auxiliary-task sets, on Ciao and Last.fm
# (prepare them with reproduce-ciao and reproduce-lastfm first). Everything against single, then each
# setting's pmtrec against its ew: SETTING:EW_TABLE+PMTREC_TABLE (tests/sweeps/test_shipped_sweeps.py holds
# each pair to one setting).
PMTREC_STUDY_SETTINGS = independent:ew+pmtrec aligned:ew-aligned+pmtrec-aligned au:ew-au+pmtrec-au \
	all:ew-all+pmtrec-all all-aligned:ew-all-aligned+pmtrec-all-aligned
define pmtrec_study
	$(BIN)/recmtl sweep sweeps/pmtrec-study-$(1).toml --jobs $(JOBS) --quiet
	$(BIN)/recmtl compare --sweep sweeps/pmtrec-study-$(1).toml --baseline single --out results/pmtrec-study-$(1)/vs-single
	$(call compare_settings,pmtrec-study-$(1),pmtrec-study-$(1)/vs-ew-,$(PMTREC_STUDY_SETTINGS))
endef

# PMTRec's unit vs raw combination next to ew, per setting (SETTINGS as for compare_settings).
define pmtrec_combine
	$(BIN)/recmtl sweep sweeps/pmtrec-combine-$(1).toml --jobs $(JOBS) --quiet
	$(call compare_settings,pmtrec-combine-$(1),pmtrec-combine-$(1)/,$(2))
endef

reproduce-pmtrec-study: $(STAMP) ## aux sampling x norm source x aux sets, 3 seeds, Ciao + Last.fm; PMTRec's unit vs raw combination and readings; alpha x tau; 150 epochs -> results/pmtrec-*/
	$(call pmtrec_study,ciao)
	$(call pmtrec_study,lastfm)
	$(call pmtrec_combine,ciao,independent:ew-independent+pmtrec-independent aligned:ew-aligned+pmtrec-aligned \
	  au:ew-au+pmtrec-au+pmtrec-au-uniform all:ew-all+pmtrec-all+pmtrec-all-uniform \
	  au-readings:ew-au+pmtrec-au+pmtrec-au-logit+pmtrec-au-alpha1)
	$(BIN)/recmtl compare runs/sweeps/pmtrec-study-ciao/single-s? runs/sweeps/pmtrec-combine-ciao/ew-au-s? \
	  runs/sweeps/pmtrec-combine-ciao/ew-all-s? runs/sweeps/pmtrec-combine-ciao/pmtrec-au-s? \
	  runs/sweeps/pmtrec-combine-ciao/pmtrec-all-s? --baseline single --out results/pmtrec-combine-ciao/vs-single
	$(call pmtrec_combine,lastfm,independent:ew-independent+pmtrec-independent aligned:ew-aligned+pmtrec-aligned \
	  au:ew-au+pmtrec-au+pmtrec-au-uniform all:ew-all+pmtrec-all+pmtrec-all-uniform)
	$(BIN)/recmtl compare runs/sweeps/pmtrec-combine-lastfm/ew-au-s? runs/sweeps/pmtrec-combine-lastfm/pmtrec-au-combine=raw-s? \
	  runs/sweeps/pmtrec-combine-lastfm/pmtrec-au-logit-s? --baseline ew --out results/pmtrec-combine-lastfm/au-readings --no-plots
	$(BIN)/recmtl sweep sweeps/pmtrec-sensitivity-lastfm.toml --jobs $(JOBS) --quiet
	$(BIN)/recmtl compare --sweep sweeps/pmtrec-sensitivity-lastfm.toml --baseline ew --out results/pmtrec-sensitivity-lastfm
	$(BIN)/recmtl sweep sweeps/pmtrec-sensitivity-ciao-au.toml --jobs $(JOBS) --quiet
	$(BIN)/recmtl compare --sweep sweeps/pmtrec-sensitivity-ciao-au.toml --baseline ew --out results/pmtrec-sensitivity-ciao-au
	$(BIN)/recmtl sweep sweeps/pmtrec-budget-ciao.toml --jobs $(JOBS) --quiet
	$(BIN)/recmtl compare --sweep sweeps/pmtrec-budget-ciao.toml --baseline ew --out results/pmtrec-budget-ciao --no-plots
	$(BIN)/recmtl sweep sweeps/pmtrec-budget-lastfm.toml --jobs $(JOBS) --quiet
	$(call compare_settings,pmtrec-budget-lastfm,pmtrec-budget-lastfm/,au:ew+pmtrec+pmtrec-alpha1 all:ew-all+pmtrec-all)

# Robustness: a pure-noise social table; a good method must not fall below single.
reproduce-robustness: $(STAMP) ## the noisy-social robustness check on synthetic data -> results/robustness-noisy-social/
	$(BIN)/recmtl prepare --recipe datasets/synthetic-noisy-social.toml --out data/synthetic-noisy-social --overwrite --quiet
	$(BIN)/recmtl sweep sweeps/robustness-noisy-social.toml --jobs $(JOBS) --quiet
	$(BIN)/recmtl compare --sweep sweeps/robustness-noisy-social.toml --baseline single --out results/robustness-noisy-social

clean: ## remove .venv, data/, runs/ and .pytest_cache
	rm -rf $(VENV) data runs .pytest_cache

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/\1\t\2/' | expand -t 29
