"""The docstring examples of the modules that run on every Keras backend.

tests/test_docstrings.py runs every example on TensorFlow; this file runs
those of `ANY_BACKEND` on whatever backend runs it (`make test-jax`: JAX,
`make test-torch`: PyTorch, both without TensorFlow). The list grows as modules become backend-neutral.
"""

import doctest
import importlib

import pytest

#: Modules whose examples need neither TensorFlow nor the Distiller.
ANY_BACKEND = (
    "tfkd.backend_support",
    "tfkd.cache.batches",
    "tfkd.cache.concatenated",
    "tfkd.cache.fingerprint",
    "tfkd.cache.format",
    "tfkd.cache.locking",
    "tfkd.cache.py_stream",
    "tfkd.cache.reader",
    "tfkd.cache.row_blocks",
    "tfkd.cache.shards",
    "tfkd.cache.topk",
    "tfkd.cache.views",
    "tfkd.hyperparameters",
    "tfkd.memory_limit",
    "tfkd.teacher_logits",
    "tfkd.teacher_outputs",
    "tfkd.teachers.layer_groups",
    "tfkd.teachers.layers",
    "tfkd.teachers.schedules",
    "tfkd.teachers.weights",
    "tfkd.torch_step_guard",
    "tfkd.utils.files",
    "tfkd.utils.ownership",
    "tfkd.utils.progress",
    "tfkd.utils.untrusted",
)


@pytest.mark.parametrize("name", ANY_BACKEND)
def test_docstring_examples_run_on_this_backend(name):
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        verbose=False,
    )
    assert result.attempted > 0, f"no examples in {name}"
    assert result.failed == 0, f"{result.failed} example(s) failed in {name}"
