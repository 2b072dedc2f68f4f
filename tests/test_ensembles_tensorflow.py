"""Teacher ensembles in a Distiller fed by `tf.data` pipelines.

Moved verbatim from tests/test_ensembles.py, which runs on every Keras
backend (`conftest.BACKEND_INDEPENDENT_FILES`); their array-fed twins stay
there.
"""

import keras
import numpy as np
import tensorflow as tf

import tfkd
from test_ensembles import _copy, _data, _mlp


def _fit(teacher, **kwargs):
    x, y = _data(64)
    student = _mlp("student", 3)
    distiller = tfkd.Distiller(teacher=teacher, student=student, alpha=0.2, **kwargs)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    distiller.fit(dataset, epochs=2, verbose=0)
    return student.get_weights()


def test_two_copies_of_a_teacher_train_like_the_teacher_alone():
    teacher = _mlp("teacher", 0)
    alone = _fit(teacher)
    pair = _fit([_copy(teacher, "copy_a"), _copy(teacher, "copy_b")],
                teacher_weights=[1.0, 3.0])
    for a, b in zip(alone, pair):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_each_teacher_runs_once_per_step():
    x, y = _data(64)
    teachers = [_mlp(f"t{i}", i, counting=True) for i in range(3)]
    distiller = tfkd.Distiller(teacher=teachers, student=_mlp("student", 5))
    distiller.compile(optimizer="sgd")
    # Keras's own loop, without tfkd's pre-flight batch.
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    keras.Model.fit(distiller, dataset, epochs=1, verbose=0)
    for teacher in teachers:
        assert int(teacher.get_layer("hidden").calls.numpy()) == 4
    keras.Model.evaluate(distiller, dataset, verbose=0)
    for teacher in teachers:
        assert int(teacher.get_layer("hidden").calls.numpy()) == 8
