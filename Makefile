# Everything a user runs. Each target that needs Python depends on the
# virtual environment, which is created and filled on first use.
#   make train convert     train the default model and convert it
#   make test              the full test suite
# Pass extra flags with ARGS, e.g. make train ARGS="--model minivgg --epochs 25"

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=

.DEFAULT_GOAL := help
.PHONY: help venv data train convert test compare tune bench classify webcam doctor pi-bundle pi-check clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml edge_runtime/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "error: Python 3.11 or newer is needed, $(PYTHON) is " + sys.version.split()[0])'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP) ## create the virtual environment in .venv and install the project

data: $(STAMP) ## make sure the Fashion-MNIST files are on this machine
	@PY=$(PY) sh tools/ensure-data.sh

train: data ## train the default model (runs/<name>/, runs/latest)
	$(PY) -m train $(ARGS)

convert: $(STAMP) ## convert runs/latest to TFLite, check accuracy, deploy to models/
	$(PY) -m convert $(ARGS)

test: data ## run the full test suite
	$(PY) -m pytest $(ARGS)

clean: ## remove the environment, runs and models
	rm -rf $(VENV) runs models .pytest_cache
