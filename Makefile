# Quick start:  make train   (set up .venv, then train; Hydra overrides via ARGS="...")
#               make test    (set up .venv, then run the test suite; make test-fast: the edit loop, < 1 min)
#               make sweep   (the study's seven experiments x three seeds, then a report)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=
SIZES  ?= 28 64 128
SHARED ?= ../shared/data
DATA_ROOT ?= $(HOME)/.medmnist

.PHONY: venv train sweep test test-fast lint docs data clean robust ablation demo chromium

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev,export,scale,demo,trackers]"
	touch $@

# Offline machines with the PBC source pack beside the checkout: build official-layout files once.
data: venv
	@for s in $(SIZES); do f=$(DATA_ROOT)/bloodmnist_$$s.npz; [ $$s = 28 ] && f=$(DATA_ROOT)/bloodmnist.npz; \
	  if [ ! -f $$f ] && [ -f $(SHARED)/make_bloodmnist.py ]; then \
	    $(BIN)/python $(SHARED)/make_bloodmnist.py --root $(DATA_ROOT) --sizes $(SIZES) && break; fi; done

train: venv data
	$(BIN)/python train.py $(ARGS)

sweep: venv data
	$(BIN)/python sweep.py $(ARGS)

# Robustness (docs/guide/robustness.md, results in docs/results/robustness.md): the study's recipe and the robust one, three seeds each, then the shift suite.
# make robust                   baseline_64 vs baseline_64_robust (CPU is fine)
# make robust ROBUST_EXP=skip   skip vs skip_robust at 128 px (meant for a GPU)
ROBUST_EXP ?= baseline_64
ROBUST_DIR := outputs/robust/$(ROBUST_EXP)_$(shell date +%Y-%m-%d_%H-%M-%S)
robust: venv data
	$(BIN)/python train.py -m experiment=$(ROBUST_EXP),$(ROBUST_EXP)_robust seed=0,1,2 logger=csv \
	  trainer.enable_progress_bar=false hydra.sweep.dir=$(ROBUST_DIR) $(ARGS)
	$(BIN)/bloodcls robustness $(ROBUST_DIR) --table | tee $(ROBUST_DIR)/robustness_table.md

# The browser demo on a trained model: make demo CKPT=outputs/runs/<date>/<time>_<name>_<id> [PORT=7860]
CKPT ?=
PORT ?= 7860
demo: venv
	@if [ -z "$(CKPT)" ]; then echo "error: give the model: make demo CKPT=<run folder or .ckpt file>"; exit 2; fi
	$(BIN)/bloodcls demo $(CKPT) --port $(PORT)

# TEST_HOME=<empty folder>: the suite runs as on a machine that has never seen the data (.ci/run does this);
# only pytest sees it, so pip and the venv keep the real home.
TEST_HOME ?=
# The suite runs on every core (pytest-xdist; TEST_WORKERS=0 runs it in one process).
TEST_WORKERS ?= auto
chromium:
	@scripts/install_chromium.sh

test: venv chromium
	$(if $(TEST_HOME),HOME=$(TEST_HOME) )$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup $(ARGS)

# The edit loop: every test but the end-to-end runs (marked slow) and the real-data ones.
test-fast: venv
	$(BIN)/python -m pytest -q -m "not slow and not real" $(ARGS)

lint: venv
	$(BIN)/ruff check .

# The docs site (README + docs/, nav in mkdocs.yml) into site/; --strict: a broken link or a page left out fails.
docs: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache site

# The ablation of recipe=keras, one layer detail at a time, three seeds, then the table (docs/results/ablation.md).
# make ablation ABLATION_EXP=baseline_64  (about 12 CPU-hours at 64 px on one thread per job: meant for a GPU)
ABLATION_EXP ?= baseline_64
ABLATION_DIR := outputs/ablation/$(ABLATION_EXP)_$(shell date +%Y-%m-%d_%H-%M-%S)
ablation: venv data
	$(BIN)/python train.py -m recipe=keras +ablation=bn_momentum,init,bn_eps,no_early_stop experiment=$(ABLATION_EXP) \
	  seed=0,1,2 logger=csv trainer.enable_progress_bar=false hydra.sweep.dir=$(ABLATION_DIR) $(ARGS)
	$(BIN)/bloodcls ablation $(ABLATION_DIR) | tee $(ABLATION_DIR)/ablation_table.md
