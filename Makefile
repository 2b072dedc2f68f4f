# The commands of README.md. Each creates its own virtual environment,
# installs tfkd with what it needs, and makes Fashion-MNIST available
# offline.
#   make benchmark     # the main job: the benchmark on offline Fashion-MNIST,
#                      # written to benchmarks/runs/ (untracked)
#   make test          # the test suite, in the three environments below
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
#                      # (.venv-torch-cpu); not part of make test
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

# The docs need no TensorFlow: mkdocstrings reads tfkd's source statically.
DOCS := .venv-docs

.PHONY: test test-latest test-bench test-fast test-jax test-torch benchmark results env-latest env-bench env-jax env-torch env-docs docs data clean

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

env-latest: $(LATEST)/.installed
env-bench: $(BENCH)/.installed
env-docs: $(DOCS)/.installed
env-jax: $(JAX)/.installed
env-torch: $(TORCH)/.installed

# The site in site/ (ignored by git), built offline in strict mode: a
# broken link, a page missing from the navigation or a docstring that does
# not render is an error. The API reference, the benchmarks page (from the
# committed results.json) and the notebook page are generated at build
# time (docs/hooks/generate.py); nothing tracked is written.
docs: env-docs
	NO_MKDOCS_2_WARNING=1 $(DOCS)/bin/mkdocs build --strict --clean

data:
	bash scripts/ensure_fashion_mnist.sh

test: test-latest test-bench test-jax

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

# The same files on PyTorch (a CPU build, no TensorFlow). Not in make test
# (yet): on 2 shared CPU cores (2026-12-03) the environment takes 2 min to
# install from local wheels and 1.3 GB, the tests 1.3-2.3 min.
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
results: env-bench data
	for experiment in $$($(BENCH)/bin/python -m benchmarks --list); do \
		TFKD_BENCHMARK_OUTPUT=benchmarks/results $(BENCH)/bin/python -m benchmarks $$experiment --preset quick || exit 1; \
	done
	$(BENCH)/bin/python scripts/cache_scale.py --out benchmarks/results/cache_scale/results.json

clean:
	rm -rf .venv-latest-* .venv-bench-* .venv-docs build site *.egg-info
	rm -rf .venv-latest-* .venv-bench-* .venv-jax-* .venv-torch-* build *.egg-info
