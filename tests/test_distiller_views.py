"""Views: terms that read a second augmented view of each training batch.

`Distiller(views={"strong": layer})` draws the view once per step and runs
teacher and student on it for the terms whose `view` is "strong"; without
views a step runs each model exactly once.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tfkd.terms.soft_targets import SoftTargetKL
from counting_layers import CountingDense

FEATURES, CLASSES = 6, 4


def _mlp(name, seed, counting=False):
    keras.utils.set_random_seed(seed)
    dense = CountingDense if counting else keras.layers.Dense
    return keras.Sequential(
        [keras.Input((FEATURES,)), dense(8, activation="relu", name="hidden"),
         keras.layers.Dense(CLASSES, name="logits")],
        name=name,
    )


def _data(n=64):
    x = np.random.default_rng(0).normal(size=(n, FEATURES)).astype("float32")
    return x, x[:, :CLASSES].argmax(axis=-1).astype("int32")


def _dataset(x, y, batch_size=16):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


def _negate():
    """A deterministic "augmentation": the view is -x."""
    return keras.layers.Rescaling(scale=-1.0, name="negate")


def _np_kl(t, s, temperature):
    def log_softmax(z):
        z = z - z.max(axis=-1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    log_p = log_softmax(t.astype(np.float64) / temperature)
    log_q = log_softmax(s.astype(np.float64) / temperature)
    return temperature**2 * (np.exp(log_p) * (log_p - log_q)).sum(-1).mean()


@pytest.mark.parametrize("with_view", [False, True])
def test_a_view_costs_one_more_pass_per_model_and_no_view_none(with_view):
    x, y = _data(64)
    teacher = _mlp("teacher", 0, counting=True)
    student = _mlp("student", 1, counting=True)
    options = (
        {"views": {"strong": _negate()},
         "extra_losses": [SoftTargetKL(view="strong", name="strong_kl")]}
        if with_view else {}
    )
    distiller = tfkd.Distiller(teacher=teacher, student=student, **options)
    distiller.compile(optimizer="adam")
    # Keras's own loop, without the pre-flight inference on one batch.
    keras.Model.fit(distiller, _dataset(x, y), epochs=1, verbose=0)
    steps, passes = 4, 2 if with_view else 1
    assert int(student.get_layer("hidden").calls.numpy()) == steps * passes
    assert int(teacher.get_layer("hidden").calls.numpy()) == steps * passes


def test_a_term_on_the_strong_view_reads_both_models_on_that_view():
    x, y = _data(32)
    teacher, student = _mlp("teacher", 0), _mlp("student", 1)
    distiller = tfkd.Distiller(
        teacher=teacher, student=student, temperature=2.0,
        views={"strong": _negate()},
        extra_losses=[SoftTargetKL(temperature=2.0, view="strong", name="strong_kl")],
    )
    distiller.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0))
    logs = distiller.fit(x, y, batch_size=32, epochs=1, verbose=0).history
    t, s = np.asarray(teacher(x)), np.asarray(student(x))
    t_strong, s_strong = np.asarray(teacher(-x)), np.asarray(student(-x))
    np.testing.assert_allclose(logs["strong_kl"][0], _np_kl(t_strong, s_strong, 2.0),
                               rtol=1e-5)
    np.testing.assert_allclose(logs["distillation_loss"][0], _np_kl(t, s, 2.0),
                               rtol=1e-5)
    assert abs(logs["strong_kl"][0] - logs["distillation_loss"][0]) > 1e-4


def test_evaluation_reads_the_batch_itself_for_every_term():
    x, y = _data(32)
    distiller = tfkd.Distiller(
        teacher=_mlp("teacher", 0), student=_mlp("student", 1),
        views={"strong": _negate()},
        extra_losses=[SoftTargetKL(view="strong", name="strong_kl")],
    )
    distiller.compile(optimizer="adam")
    result = distiller.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    np.testing.assert_allclose(result["strong_kl"], result["distillation_loss"],
                               rtol=1e-6)


def test_views_round_trip_through_a_keras_file(tmp_path):
    x, y = _data(32)
    distiller = tfkd.Distiller(
        teacher=_mlp("teacher", 0), student=_mlp("student", 1),
        views={"strong": _negate()},
        extra_losses=[SoftTargetKL(view="strong", name="strong_kl", weight=0.5)],
    )
    distiller.compile(optimizer="adam")
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    distiller.save(tmp_path / "views.keras")
    loaded = keras.saving.load_model(tmp_path / "views.keras")
    assert sorted(loaded.views) == ["strong"]
    assert loaded.get_config()["views"]["strong"]["config"]["scale"] == -1.0
    assert loaded.extra_losses[0].view == "strong"
    before = distiller.evaluate(x, y, verbose=0, return_dict=True)
    after = loaded.evaluate(x, y, verbose=0, return_dict=True)
    assert sorted(after) == sorted(before)
    for name in before:
        np.testing.assert_allclose(after[name], before[name], rtol=1e-6)


def test_a_distiller_without_views_saves_no_views_key():
    distiller = tfkd.Distiller(teacher=_mlp("teacher", 0), student=_mlp("student", 1))
    assert "views" not in distiller.get_config()
    assert distiller.views == {}


@pytest.mark.parametrize("options, error, pattern", [
    ({"extra_losses": [SoftTargetKL(view="strong", name="strong_kl")]},
     ValueError, r"`views`.*a view named 'strong'.*strong_kl.*Received: views=\[\]"),
    ({"views": {"strong": "flip"},
      "extra_losses": [SoftTargetKL(view="strong", name="strong_kl")]},
     TypeError, r"views\['strong'\].*keras.layers.Layer"),
    ({"views": [("strong", None)]}, TypeError, r"`views`.*dict"),
    ({"views": {"strong": "later"}}, TypeError, r"views\['strong'\]"),
    ({"views": {"weak": keras.layers.Identity()},
      "extra_losses": [SoftTargetKL(view="strong", name="strong_kl")]},
     ValueError, r"a view named 'strong'"),
])
def test_bad_views_are_refused_before_training(options, error, pattern):
    with pytest.raises(error, match=pattern):
        tfkd.Distiller(teacher=_mlp("teacher", 0), student=_mlp("student", 1),
                       **options)


def test_a_view_no_term_reads_is_refused():
    with pytest.raises(ValueError, match=r"`views`.*no term reads \['strong'\]"):
        tfkd.Distiller(teacher=_mlp("teacher", 0), student=_mlp("student", 1),
                       views={"strong": _negate()})


def test_views_need_a_teacher_that_can_run():
    # Cached logits belong to the batch itself; a view needs the teacher.
    with pytest.raises(ValueError, match=r"`teacher`.*teacher model with views"):
        tfkd.Distiller(student=_mlp("student", 1), views={"strong": _negate()},
                       extra_losses=[SoftTargetKL(view="strong", name="strong_kl")])


def test_views_and_mixing_are_refused_together():
    student = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                keras.layers.Dense(CLASSES)])
    teacher = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                keras.layers.Dense(CLASSES)])
    with pytest.raises(ValueError, match=r"`mixing`.*views \['strong'\]"):
        tfkd.Distiller(teacher=teacher, student=student,
                       mixing=keras.layers.MixUp(), views={"strong": _negate()},
                       extra_losses=[SoftTargetKL(view="strong", name="strong_kl")])


def test_a_view_with_cached_logits_runs_the_teacher_on_the_view_only():
    x, y = _data(32)
    teacher, student = _mlp("teacher", 0, counting=True), _mlp("student", 1)
    cached_teacher = _mlp("cached", 2)  # other logits than the live teacher's
    cached = np.asarray(cached_teacher(x))
    data = tf.data.Dataset.from_tensor_slices(
        (x, tfkd.attach_teacher_logits(y, cached))
    ).batch(32)
    distiller = tfkd.Distiller(
        teacher=teacher, student=student, temperature=2.0,
        views={"strong": _negate()},
        extra_losses=[SoftTargetKL(temperature=2.0, view="strong", name="strong_kl")],
    )
    distiller.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0))
    logs = keras.Model.fit(distiller, data, epochs=1, verbose=0).history
    assert int(teacher.get_layer("hidden").calls.numpy()) == 1  # the view only
    s = np.asarray(student(x))
    np.testing.assert_allclose(logs["distillation_loss"][0], _np_kl(cached, s, 2.0),
                               rtol=1e-5)
    np.testing.assert_allclose(
        logs["strong_kl"][0],
        _np_kl(np.asarray(teacher(-x)), np.asarray(student(-x)), 2.0), rtol=1e-5,
    )
