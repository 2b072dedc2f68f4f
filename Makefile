# The commands of README.md. Each creates its own virtual environment,
# installs tfkd with what it needs, and makes Fashion-MNIST available
# offline.
#   make benchmark     # the main job: the benchmark on offline Fashion-MNIST,
#                      # written to benchmarks/runs/ (untracked)
#   make test          # the test suite, in the four environments below
#   make test-latest   # ... all of it on the newest Keras and TensorFlow, no AutoKeras
#   make test-bench    # ... what depends on the Keras version, in the benchmark
#                      # environment (Keras 3.12 + AutoKeras)
#   make test-fast     # day-to-day: the newest environment without the slowest files
#   make results       # rerun every experiment the README quotes (quick presets)
#   make docs          # the documentation site, built strictly into site/
#   make test-jax      # the backend-independent tests on KERAS_BACKEND=jax,
#                      # in an environment without TensorFlow (.venv-jax-cpu)
#   make test-torch    # the same on KERAS_BACKEND=torch, in an environment
#                      # with a CPU build of PyTorch and no TensorFlow
#                      # (.venv-torch-cpu)
#   make gpu-wheels    # fill gpu_wheels/ (ignored) with what a GPU machine
#                      # without TensorFlow or internet needs: Keras, tfkd,
#                      # namex and optree wheels and Fashion-MNIST as .npz
#   make gpu-check     # on that machine: train a Distiller on its GPU with
#                      # JAX (GPU_BACKEND=torch: PyTorch), print images/s
# TF=gpu installs tensorflow[and-cuda] instead of tensorflow-cpu, in
# environments of their own (.venv-*-gpu): the two TensorFlow distributions
# are one module and never share an environment.

PYTHON ?= python3
TF ?= cpu
PRESET ?= quick
# The newest Keras release tfkd is tested on; the benchmark environment
# stays on 3.12, the newest AutoKeras 3.0 works with.
KERAS_LATEST ?= keras>=3.15,<3.16

LATEST := .venv-latest-$(TF)
BENCH := .venv-bench-$(TF)
# JAX on the CPU and no TensorFlow at all: what a JAX user installs.
JAX := .venv-jax-cpu
# PyTorch on the CPU and no TensorFlow. torch is pinned: an unpinned torch
# from the package index brings ~5 GB of CUDA libraries.
TORCH := .venv-torch-cpu
TORCH_PIN ?= torch==2.13.0

# TensorFlow, JAX and PyTorch in one environment, for `python -m
# benchmarks backends` (each backend trains in a worker process of its
# own); torch pinned as in .venv-torch-cpu (TORCH_PIN).
BACKENDS_ENV := .venv-backends

# The docs need no TensorFlow: mkdocstrings reads tfkd's source statically.
DOCS := .venv-docs

.PHONY: test test-latest test-bench test-fast test-jax test-torch benchmark results env-latest env-bench env-jax env-torch env-backends env-docs docs data clean gpu-wheels gpu-check

$(LATEST)/.installed: setup.cfg pyproject.toml
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST)/bin/python -m pip install --quiet -e ".[$(TF),bench,dev]" "$(KERAS_LATEST)"
	touch $@

$(BENCH)/.installed: setup.cfg pyproject.toml
	rm -rf $(BENCH)
	$(PYTHON) -m venv $(BENCH)
	$(BENCH)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH)/bin/python -m pip install --quiet -e ".[$(TF),bench,autokeras,dev]"
	touch $@

# Only the `docs` extra's requirements, read from setup.cfg (not tfkd itself,
# which would pull in Keras for nothing).
$(DOCS)/.installed: setup.cfg
	rm -rf $(DOCS)
	$(PYTHON) -m venv $(DOCS)
	$(DOCS)/bin/python -m pip install --quiet --upgrade pip
	$(DOCS)/bin/python -m pip install --quiet $$($(PYTHON) -c \
		'import configparser; c = configparser.ConfigParser(); c.read("setup.cfg"); print(" ".join(c["options.extras_require"]["docs"].split()))')
	touch $@

$(JAX)/.installed: setup.cfg pyproject.toml
	rm -rf $(JAX)
	$(PYTHON) -m venv $(JAX)
	$(JAX)/bin/python -m pip install --quiet --upgrade pip
	$(JAX)/bin/python -m pip install --quiet -e ".[dev]" "$(KERAS_LATEST)" "jax[cpu]"
	touch $@

$(TORCH)/.installed: setup.cfg pyproject.toml
	rm -rf $(TORCH)
	$(PYTHON) -m venv $(TORCH)
	$(TORCH)/bin/python -m pip install --quiet --upgrade pip
	$(TORCH)/bin/python -m pip install --quiet -e ".[dev]" "$(KERAS_LATEST)" "$(TORCH_PIN)"
	touch $@

$(BACKENDS_ENV)/.installed: setup.cfg pyproject.toml
	rm -rf $(BACKENDS_ENV)
	$(PYTHON) -m venv $(BACKENDS_ENV)
	$(BACKENDS_ENV)/bin/python -m pip install --quiet --upgrade pip
	$(BACKENDS_ENV)/bin/python -m pip install --quiet -e ".[cpu,bench,dev]" \
		"$(KERAS_LATEST)" "jax[cpu]" "$(TORCH_PIN)"
	touch $@

env-latest: $(LATEST)/.installed
env-bench: $(BENCH)/.installed
env-docs: $(DOCS)/.installed
env-jax: $(JAX)/.installed
env-torch: $(TORCH)/.installed
env-backends: $(BACKENDS_ENV)/.installed

# The site in site/ (ignored by git), built offline in strict mode: a
# broken link, a page missing from the navigation or a docstring that does
# not render is an error. The API reference, the benchmarks page (from the
# committed results.json) and the notebook page are generated at build
# time (docs/hooks/generate.py); nothing tracked is written.
docs: env-docs
	NO_MKDOCS_2_WARNING=1 $(DOCS)/bin/mkdocs build --strict --clean

data:
	bash scripts/ensure_fashion_mnist.sh

test: test-latest test-bench test-jax test-torch

test-latest: env-latest data
	$(LATEST)/bin/python -m pytest tests -ra --durations=15

# Files whose subject does not change with Keras (file formats, crash
# points, imports, the docs: tests/conftest.py, SAME_ON_EVERY_KERAS_FILES)
# ran in test-latest already.
test-bench: env-bench data
	TFKD_TESTS=keras-dependent $(BENCH)/bin/python -m pytest tests -ra --durations=15

# The newest environment without the slowest files (tests/conftest.py,
# SLOW_FILES: every experiment's smoke run, crash points, worker
# processes, the docs blocks).
test-fast: env-latest data
	TFKD_TESTS=fast $(LATEST)/bin/python -m pytest tests -ra --durations=15

# The backend-independent test files (the list in tests/conftest.py), on
# JAX; TensorFlow is not installed there, so nothing can lean on it. They
# need no Fashion-MNIST.
test-jax: env-jax
	KERAS_BACKEND=jax $(JAX)/bin/python -m pytest tests -ra --durations=15

# The same files on PyTorch (a CPU build of torch 2.13, no TensorFlow; the
# CUDA builds on PyPI are several GB). In make test, and so in CI: the
# environment takes about 2 min to install from local wheels and 1.3 GB.
test-torch: env-torch
	KERAS_BACKEND=torch $(TORCH)/bin/python -m pytest tests -ra --durations=15

benchmark: env-bench data
	$(BENCH)/bin/python -m benchmarks compare --dataset fashion_mnist --preset $(PRESET)

# Every experiment whose quick results the README quotes, in the
# benchmark environment (hours on 2 CPU cores; each resumes if stopped),
# written over the committed results in benchmarks/results/ (every other
# run writes to benchmarks/runs/, which git ignores). Each results.json
# records the commit it came from and whether the tree was clean.
# The experiments come from their one registry (benchmarks/experiments).
# `backends` runs in the environment with every Keras backend.
results: env-bench env-backends data
	for experiment in $$($(BENCH)/bin/python -m benchmarks --list); do \
		python=$(BENCH)/bin/python; \
		if [ $$experiment = backends ]; then python=$(BACKENDS_ENV)/bin/python; fi; \
		TFKD_BENCHMARK_OUTPUT=benchmarks/results $$python -m benchmarks $$experiment --preset quick || exit 1; \
	done
	$(BENCH)/bin/python scripts/cache_scale.py --out benchmarks/results/cache_scale/results.json

# A GPU machine with JAX or PyTorch and no TensorFlow or internet
# (scripts/gpu_check.py). Here, with internet: `make gpu-wheels` fills the
# ignored gpu_wheels/ with the Keras and tfkd wheels, the Keras
# dependencies such a machine lacks (namex, pure Python; optree, binary,
# for GPU_PYTHON_VERSION) and Fashion-MNIST as a .npz (about 34 MB in all).
# Keras also needs absl-py, rich, packaging (pure Python), numpy, h5py and
# ml-dtypes (binary): add their wheels the same way where the GPU machine
# lacks them (`pip download keras==$(GPU_KERAS) -d DIR` lists them all).
# There, from the repository's root: `make gpu-check`; the JSON goes to
# benchmarks/results/gpu_check/<backend>-<accelerator>.json.
GPU_WHEELS := gpu_wheels
GPU_KERAS ?= 3.15.1
GPU_PYTHON_VERSION ?= 3.12
GPU_PYTHON ?= python3
GPU_BACKEND ?= jax

gpu-wheels: env-latest data
	mkdir -p $(GPU_WHEELS)
	$(LATEST)/bin/python -m pip download --quiet --no-deps -d $(GPU_WHEELS) "keras==$(GPU_KERAS)" namex
	$(LATEST)/bin/python -m pip download --quiet --no-deps --only-binary=:all: \
		--python-version $(GPU_PYTHON_VERSION) --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 -d $(GPU_WHEELS) optree
	$(LATEST)/bin/python -m pip wheel --quiet --no-deps -w $(GPU_WHEELS) .
	$(LATEST)/bin/python scripts/gpu_check.py --prepare-data

gpu-check:
	TFKD_BENCHMARK_OUTPUT=benchmarks/results $(GPU_PYTHON) scripts/gpu_check.py --backend $(GPU_BACKEND)

clean:
	rm -rf .venv-latest-* .venv-bench-* .venv-docs build site *.egg-info
	rm -rf .venv-latest-* .venv-bench-* .venv-jax-* .venv-torch-* .venv-backends build *.egg-info
