# The two commands of README.md. Each creates its own virtual environment
# (.venv), installs tfkd with what it needs, and makes Fashion-MNIST
# available offline.
#   make benchmark   # the main job: the benchmark on offline Fashion-MNIST
#   make test        # the test suite
# TF=gpu installs tensorflow[and-cuda] instead of tensorflow-cpu.

PYTHON ?= python3
VENV ?= .venv
TF ?= cpu
PRESET ?= quick
PY := $(VENV)/bin/python

.PHONY: test benchmark env data clean

$(VENV)/.installed-$(TF): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(TF),bench,dev]"
	touch $@

env: $(VENV)/.installed-$(TF)

data:
	bash scripts/ensure_fashion_mnist.sh

test: env data
	$(PY) -m pytest tests -ra

benchmark: env data
	$(PY) -m benchmarks run --dataset fashion_mnist --preset $(PRESET)

clean:
	rm -rf $(VENV) build *.egg-info
