"""TensorFlow imported on first use, and the errors where it is missing."""

import os
import pathlib
import subprocess

import keras
import numpy as np
import pytest

from conftest import python_on_another_backend
from tfkd import backend_support

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _without_tensorflow(code, backend):
    python, _ = python_on_another_backend()
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=str(ROOT))
    prelude = "import sys\nsys.modules['tensorflow'] = None\n"
    return subprocess.run([python, "-c", prelude + code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def _other_backend():
    return python_on_another_backend()[1]


def test_missing_tensorflow_names_the_feature_the_extra_and_the_alternative():
    result = _without_tensorflow(
        "from tfkd import backend_support\n"
        "tf = backend_support.lazy_tensorflow('a tf.data pipeline', 'a PyDataset')\n"
        "try:\n"
        "    tf.data\n"
        "except backend_support.TensorFlowRequiredError as error:\n"
        "    print(error)\n", _other_backend())
    assert result.returncode == 0, result.stderr[-2000:]
    message = result.stdout
    assert "a tf.data pipeline needs TensorFlow" in message
    assert "tfkd[cpu]" in message and "use a PyDataset" in message


def test_a_feature_of_the_tensorflow_step_refuses_another_backend():
    result = _without_tensorflow(
        "from tfkd import backend_support\n"
        "try:\n"
        "    backend_support.require_tensorflow('tf.distribute', 'DataParallel', backend=True)\n"
        "except ImportError as error:\n"
        "    print(error)\n", _other_backend())
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"KERAS_BACKEND={_other_backend()!r}" in result.stdout
    assert "use DataParallel" in result.stdout


def test_type_checks_never_import_tensorflow():
    result = _without_tensorflow(
        "from tfkd import backend_support\n"
        "print(backend_support.is_tf_dataset([1]), backend_support.is_tf_tensor(1.0),\n"
        "      backend_support.imported_tensorflow())\n", _other_backend())
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["False", "False", "None"]


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="needs TensorFlow")
def test_with_tensorflow_the_stand_in_is_the_module():
    import tensorflow as tf

    lazy = backend_support.lazy_tensorflow("a test")
    assert lazy.data.Dataset is tf.data.Dataset
    assert backend_support.is_tf_dataset(tf.data.Dataset.range(2))
    assert not backend_support.is_tf_dataset(np.arange(2))
    assert backend_support.require_tensorflow("a test", backend=True) is tf
