# Everything a user runs. Each target that needs Python depends on the
# virtual environment, which is created and filled on first use.
#   make classify ARGS=photo.jpg   classify with the model shipped in edge_runtime/shipped/
#   make train convert             train the default model and convert it into models/
#   make test                      the full test suite, as CI runs it
# Pass extra flags with ARGS, e.g. make train ARGS="--model minivgg --epochs 25"

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=
# The model commands use: models/ after `make convert`, else the one shipped in edge_runtime/shipped/.
MODEL   = $$($(PY) -c 'from edge_runtime.deployed import default_model_path; print(default_model_path())')

.DEFAULT_GOAL := help
.PHONY: help venv data test-tools train convert ship-model test compare tune bench classify webcam serve doctor real-photos pi-bundle pi-check clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml edge_runtime/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "error: Python 3.10 or newer is needed, $(PYTHON) is " + sys.version.split()[0])'
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

ship-model: data ## ship models/ (after its gate passed) as edge_runtime's default model, with its figures
	$(PY) -m tools.ship_model $(ARGS)

test-tools: ## install qemu-user-static and Chromium for the tests when apt is usable, else name the command
	@sh tools/ensure-test-tools.sh

test: data test-tools ## run the full test suite (what it skipped, and why, is listed at the end)
	$(PY) -m pytest $(ARGS)

compare: data ## train mlp, cnn, minivgg and edge under the same rules; one table and plot
	$(PY) -m tools.compare $(ARGS)

tune: data ## Keras Tuner search over the edge model (installs keras-tuner)
	$(PY) -m pip install --quiet -e '.[tune]'
	$(PY) -m tools.tune $(ARGS)

bench: data ## size, accuracy, speed and where the time goes of every variant, and the peer runtimes: benchmarks/results.md, peers.md
	$(PY) -m tools.bench $(ARGS)

classify: $(STAMP) ## classify images: make classify ARGS="photo.jpg more/"
	$(PY) -m edge_runtime classify $(ARGS)

webcam: $(STAMP) ## classify webcam frames (ARGS="--camera 0" or a video file)
	$(PY) -m edge_runtime webcam $(ARGS)

serve: $(STAMP) ## the camera in a browser and a JSON API: http://127.0.0.1:8080/ (ARGS="--host 0.0.0.0")
	$(PY) -m edge_runtime serve $(ARGS)

doctor: $(STAMP) ## check interpreter, model, cameras and display on this machine
	$(PY) -m edge_runtime doctor $(ARGS)

real-photos: $(STAMP) ## accuracy on ../shared/real-photos (if present), and what own photos buy (imprinted and fine-tuned): benchmarks/real_photos/
	$(PY) -m tools.real_photos --model "$(MODEL)" --naive $(ARGS)
	$(PY) -m tools.own_photos

pi-bundle: $(STAMP) ## dist/fashion-edge-pi.tar.gz: runtime, model, install script, systemd unit
	$(PY) -m tools.pi_bundle $(ARGS)

pi-check: data ## run the runtime under an emulated Raspberry Pi 4 CPU and compare with this machine
	PY=$(PY) PI_MODEL="$${PI_MODEL:-$(MODEL)}" bash tools/pi_check.sh

clean: ## remove the environment, runs and models
	rm -rf $(VENV) runs models dist .pytest_cache
