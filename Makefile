# Quick start:  make train   (set up .venv, then train; Hydra overrides via ARGS="...")
#               make test    (set up .venv, then run the test suite)
#               make sweep   (the study's seven experiments x three seeds, then a report)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=
SIZES  ?= 28 64 128
SHARED ?= ../shared/data
DATA_ROOT ?= $(HOME)/.medmnist

.PHONY: venv train sweep test lint data clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev,export,scale]"
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

test: venv
	$(BIN)/python -m pytest -q $(ARGS)

lint: venv
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
