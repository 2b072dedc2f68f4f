"""Shared test set-up: two logical CPU devices and a clean Keras session.

The CPU is split into two logical devices before TensorFlow initializes, so
`tf.distribute.MirroredStrategy` can be tested on a machine without GPUs.

On another Keras backend (`KERAS_BACKEND=jax`, `make test-jax`;
`KERAS_BACKEND=torch`, `make test-torch`) TensorFlow is never imported
here, and only the test files of `BACKEND_INDEPENDENT_FILES` are collected:
the rest still need TensorFlow (`tf.data`, `tf.distribute`, or TensorFlow in
the test itself; issue #23).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

ON_TENSORFLOW = keras.backend.backend() == "tensorflow"

#: Test files that run on every Keras backend. The list grows as the
#: Distiller's step becomes backend-neutral (issue #23).
BACKEND_INDEPENDENT_FILES = (
    "test_backend_parity.py",
    "test_backend_support.py",
    "test_cache_fingerprint.py",
    "test_cache_format.py",
    "test_cache_py_stream.py",
    "test_data_idx.py",
    "test_distiller_backends.py",
    "test_distiller_settings.py",
    "test_docstrings_backends.py",
    "test_ensembles.py",
    "test_environment_report_backends.py",
    "test_feature_views.py",
    "test_generations.py",
    "test_gpu_check.py",
    "test_hyperparameters.py",
    "test_import_without_tensorflow.py",
    "test_losses.py",
    "test_losses_properties.py",
    "test_memory_limit.py",
    "test_mixing.py",
    "test_precomputed_targets.py",
    "test_preflight.py",
    "test_recipes.py",
    "test_saved_fixtures.py",
    "test_step_losses.py",
    "test_teacher_logits.py",
    "test_teachers_layer_groups.py",
    "test_teachers_layers.py",
    "test_teachers_registry.py",
    "test_teachers_schedules.py",
    "test_teachers_stage_rules.py",
    "test_teachers_weights.py",
    "test_terms_contrastive.py",
    "test_terms_contrastive_backends.py",
    "test_terms_correlation.py",
    "test_terms_decoupled.py",
    "test_terms_features.py",
    "test_terms_relations.py",
    "test_terms_similarity.py",
    "test_terms_soft_targets.py",
    "test_terms_transformed.py",
    "test_torch_step.py",
    "test_torch_step_guard.py",
)


#: Test files whose subject does not change with the Keras version (file
#: formats, crash points, imports, the docs and committed results): the
#: benchmark environment (Keras 3.12, `make test-bench`) skips them, as
#: the newest-Keras environment runs them (`TFKD_TESTS=keras-dependent`).
SAME_ON_EVERY_KERAS_FILES = (
    "test_backend_support.py",
    "test_cache_codec.py",
    "test_cache_faults.py",
    "test_cache_fingerprint.py",
    "test_cache_format.py",
    "test_cache_owned.py",
    "test_cache_reader.py",
    "test_committed_results.py",
    "test_data_idx.py",
    "test_docs_blocks.py",
    "test_import_graph.py",
    "test_import_without_tensorflow.py",
    "test_notebook.py",
)

#: The slowest files (each a minute or more of end-to-end runs: every
#: experiment's smoke preset, crash points, worker processes, the docs):
#: `make test-fast` (`TFKD_TESTS=fast`) skips them for day-to-day work.
SLOW_FILES = (
    "test_benchmark_protocol.py",
    "test_cache_faults.py",
    "test_cache_shards_multi_worker.py",
    "test_checkpoint_faults.py",
    "test_docs_blocks.py",
    "test_experiments_backends.py",
    "test_experiments_cache_speed.py",
    "test_experiments_capacity.py",
    "test_experiments_compare.py",
    "test_experiments_deploy.py",
    "test_experiments_gain.py",
    "test_experiments_methods.py",
    "test_experiments_teachers.py",
    "test_experiments_transfer.py",
    "test_fault_tolerance.py",
    "test_gpu_check.py",
    "test_kd_gain.py",
    "test_multi_worker.py",
    "test_notebook.py",
)

#: `TFKD_TESTS` -> the test files that selection skips.
SKIPPED_BY_SELECTION = {
    "all": (),
    "keras-dependent": SAME_ON_EVERY_KERAS_FILES,
    "fast": SLOW_FILES,
}


def _skipped_files():
    selection = os.environ.get("TFKD_TESTS", "all")
    if selection not in SKIPPED_BY_SELECTION:
        raise pytest.UsageError(
            f"Invalid TFKD_TESTS. Expected one of {sorted(SKIPPED_BY_SELECTION)}. "
            f"Received: TFKD_TESTS={selection!r}"
        )
    return SKIPPED_BY_SELECTION[selection]


def pytest_ignore_collect(collection_path, config):
    """Skips the files `TFKD_TESTS` leaves out; off TensorFlow, every file
    not in `BACKEND_INDEPENDENT_FILES`."""
    if collection_path.is_dir():
        return None
    if not (collection_path.name.startswith("test_") and collection_path.suffix == ".py"):
        return None
    if collection_path.name in _skipped_files():
        return True
    if ON_TENSORFLOW:
        return None
    return collection_path.name not in BACKEND_INDEPENDENT_FILES


def _split_cpu_into_two_logical_devices():
    if not ON_TENSORFLOW:
        return
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0],
            [tf.config.LogicalDeviceConfiguration()] * 2,
        )
    except RuntimeError:
        # TensorFlow was initialized already (a plugin imported it first);
        # the distribution tests then skip themselves.
        pass


_split_cpu_into_two_logical_devices()


@pytest.fixture(autouse=True)
def clear_keras_session():
    """Each test starts from a fresh Keras state and the float32 policy.

    Python's garbage collector is left to run on its own schedule: a forced
    `gc.collect()` around every test costs about a second each.
    """
    keras.backend.clear_session(free_memory=False)
    keras.mixed_precision.set_dtype_policy("float32")
    yield
    keras.backend.clear_session(free_memory=False)
    keras.mixed_precision.set_dtype_policy("float32")


@pytest.fixture(scope="session")
def fashion_mnist():
    """Fashion-MNIST as uint8 arrays, read offline (see tfkd.data)."""
    from tfkd import data

    return data.load_fashion_mnist_arrays(download=False)


def two_replica_strategy():
    """A `MirroredStrategy` over the two logical CPUs (skips without them).

    Cross-replica sums go through `ReductionToOneDevice`: the default
    collective all-reduce keys its collective instances per strategy
    object, and a second strategy in the same process then collides with
    the first one's instances ("Shape mismatch in the collective instance").
    GPU users keep the default (NCCL); the arithmetic is the same.
    """
    import tensorflow as tf

    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        pytest.skip("needs two logical CPU devices (see tests/conftest.py)")
    return tf.distribute.MirroredStrategy(
        [d.name for d in devices[:2]],
        cross_device_ops=tf.distribute.ReductionToOneDevice(),
    )


def assert_each_rejected(function, base, cases, errors=ValueError):
    """Calls `function(**base, **kwargs)` for each case; expects an error.

    One test for many cheap argument checks, none worth a Keras reset.
    Each case is `(kwargs, regex the error message must match)`.
    """
    import re

    for kwargs, match in cases:
        try:
            function(**{**base, **kwargs})
        except errors as error:
            assert re.search(match, str(error)), (kwargs, str(error))
        else:
            pytest.fail(f"{function.__name__} accepted {kwargs}")


def small_conv_bn_model():
    """A small user model with conv/BatchNorm pairs and no nested backbone.

    Layers: conv_a, bn_a, conv_b, bn_b, pooling, hidden, head (3 logits);
    input (8, 8, 1). Seeded, so every call gives the same weights.
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="conv_a")(inputs)
    x = keras.layers.BatchNormalization(name="bn_a")(x)
    x = keras.layers.Conv2D(4, 3, name="conv_b")(x)
    x = keras.layers.BatchNormalization(name="bn_b")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(6, name="hidden")(x)
    outputs = keras.layers.Dense(3, name="head")(x)
    return keras.Model(inputs, outputs)


def python_on_another_backend():
    """`(python, backend)` to run a subprocess without TensorFlow.

    The current interpreter on its own backend when that is not TensorFlow;
    on TensorFlow, Keras's NumPy backend where SciPy (which it needs) is
    installed, else the interpreter of `make env-jax` where it was built;
    skips otherwise.
    """
    import importlib.util
    import pathlib
    import sys

    backend = keras.backend.backend()
    if backend != "tensorflow":
        return sys.executable, backend
    if importlib.util.find_spec("scipy") is not None:
        return sys.executable, "numpy"
    jax_python = pathlib.Path(__file__).resolve().parents[1] / ".venv-jax-cpu/bin/python"
    if jax_python.exists():
        return str(jax_python), "jax"
    pytest.skip("no Keras backend but TensorFlow here (see `make env-jax`)")


def value_and_gradient(function, x):
    """`function(x)` and the gradient of its sum at `x`, on this backend.

    The backend-neutral twin of a `tf.GradientTape` over a `tf.Variable`:
    TensorFlow's tape, `jax.value_and_grad`, or torch's autograd.

    Args:
        function: Maps a float32 tensor to a tensor (`keras.ops` inside).
        x: A float32 array, the point.

    Returns:
        `(value, gradient)` as NumPy arrays, `gradient` of `x`'s shape.
    """
    import numpy as np

    x = np.asarray(x, "float32")
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        variable = tf.Variable(x)
        with tf.GradientTape() as tape:
            value = function(variable)
            total = tf.reduce_sum(value)
        return np.asarray(value), np.asarray(tape.gradient(total, variable))
    if backend == "jax":
        import jax

        def total(point):
            value = function(point)
            return jax.numpy.sum(value), value

        (_, value), gradient = jax.value_and_grad(total, has_aux=True)(
            jax.numpy.asarray(x)
        )
        return np.asarray(value), np.asarray(gradient)
    if backend == "torch":
        point = keras.ops.convert_to_tensor(x).detach().requires_grad_(True)
        value = function(point)
        value.sum().backward()
        return (
            value.detach().cpu().numpy(),
            point.grad.detach().cpu().numpy(),
        )
    pytest.skip(f"no gradients on the {backend!r} backend")
