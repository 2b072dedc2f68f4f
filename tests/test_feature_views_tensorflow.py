"""Feature views in a Distiller fed by `tf.data` pipelines.

Moved verbatim from tests/test_feature_views.py, which runs on every Keras
backend (`conftest.BACKEND_INDEPENDENT_FILES`); their array-fed twins stay
there.
"""

import keras
import pytest
import tensorflow as tf

import tfkd
from tfkd.terms.features import FitNetHint
from counting_layers import CountingDense
from test_feature_views import _data, _mlp


def _dataset(x, y, batch_size):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


@pytest.mark.parametrize("run_eagerly", [False, True])
def test_each_model_runs_once_per_training_step(run_eagerly):
    x, y = _data(64)
    teacher = _mlp("teacher", 16, 0, counting=True)
    student = _mlp("student", 8, 1, counting=True)
    distiller = tfkd.Distiller(
        teacher=teacher,
        student=student,
        extra_losses=[
            FitNetHint(teacher_layer="hidden", student_layer="hidden"),
            # A second term on other layers still costs no extra pass.
            FitNetHint(teacher_layer="embedding", student_layer="embedding", name="hint2"),
        ],
    )
    distiller.compile(optimizer="adam", run_eagerly=run_eagerly)
    # Keras's own loop, without tfkd's pre-flight inference on one batch:
    # every counted call is a training step.
    keras.Model.fit(distiller, _dataset(x, y, 16), epochs=1, verbose=0)
    steps = 4
    assert int(student.get_layer("hidden").calls.numpy()) == steps
    assert int(teacher.get_layer("hidden").calls.numpy()) == steps


def test_each_model_runs_once_per_evaluation_step():
    x, y = _data(64)
    teacher = _mlp("teacher", 16, 0, counting=True)
    student = _mlp("student", 8, 1, counting=True)
    distiller = tfkd.Distiller(
        teacher=teacher,
        student=student,
        extra_losses=[
            FitNetHint(teacher_layer=None, student_layer=None, name="logit_hint"),
            FitNetHint(teacher_layer="embedding", student_layer="embedding"),
        ],
    )
    distiller.compile(optimizer="adam")
    keras.Model.evaluate(distiller, _dataset(x, y, 32), verbose=0)
    assert int(student.get_layer("hidden").calls.numpy()) == 2
    assert int(teacher.get_layer("hidden").calls.numpy()) == 2


def test_a_reloaded_sequential_still_runs_once_per_step():
    """Sequential.from_config rebuilds layer by layer, leaving stale calls on
    every layer; the view must follow the current graph, not the first call."""
    x, y = _data(64)
    config = _mlp("student", 8, 1, counting=True).get_config()
    student = keras.Sequential.from_config(config, custom_objects={"CountingDense": CountingDense})
    distiller = tfkd.Distiller(
        teacher=_mlp("teacher", 16, 0),
        student=student,
        extra_losses=[FitNetHint(teacher_layer="embedding", student_layer="embedding")],
    )
    distiller.compile(optimizer="adam")
    keras.Model.fit(distiller, _dataset(x, y, 32), epochs=1, verbose=0)
    assert int(student.get_layer("hidden").calls.numpy()) == 2
