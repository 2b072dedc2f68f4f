"""Tests of tfkd/teacher_logits.py: a teacher's logits over batches."""

import gc
import weakref

import keras
import numpy as np
import pytest

from tfkd import teacher_logits


def _teacher(activation=None, outputs=3):
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(outputs, activation=activation)]
    )


def test_logits_teacher_gives_its_outputs():
    teacher = _teacher()
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    run = teacher_logits.TeacherLogits(teacher)
    np.testing.assert_allclose(run(x), teacher.predict(x, verbose=0), rtol=1e-6)
    assert run.kind == "logits"


def test_softmax_teacher_gives_log_probabilities():
    teacher = _teacher("softmax")
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    run = teacher_logits.TeacherLogits(teacher)
    expected = np.log(teacher.predict(x, verbose=0).astype(np.float64))
    np.testing.assert_allclose(run(x), expected, rtol=1e-5)
    assert run.kind == "probabilities"


def test_one_traced_function_per_teacher_held_weakly():
    teacher = _teacher()
    function = teacher_logits.predict_function(teacher)
    assert teacher_logits.predict_function(teacher) is function
    assert teacher_logits.predict_function(_teacher()) is not function
    reference = weakref.ref(teacher)
    del teacher, function
    gc.collect()
    assert reference() is None


def test_bad_teachers_and_outputs_are_refused():
    with pytest.raises(TypeError, match="`teacher`"):
        teacher_logits.TeacherLogits("resnet")
    with pytest.raises(ValueError, match="`teacher_outputs`"):
        teacher_logits.TeacherLogits(_teacher(), "softmax")
    flat = keras.Sequential([keras.Input((4,)), keras.layers.Reshape((2, 2))])
    with pytest.raises(ValueError, match=r"shape \(batch, classes\)"):
        teacher_logits.TeacherLogits(flat)(np.ones((2, 4), "float32"))
    with pytest.raises(ValueError, match="NaN or inf in the outputs of batch 7"):
        teacher_logits.TeacherLogits(_teacher())(
            np.full((2, 4), np.nan, "float32"), step=7
        )
