"""Teacher ensembles: the mixture of tempered probabilities, in the Distiller."""

import keras
import numpy as np
import pytest

import tfkd
from tfkd import ensembles
from tfkd.terms.features import FitNetHint
from counting_layers import CountingDense

FEATURES, CLASSES = 6, 4


def _mlp(name, seed, hidden=8, softmax=False, counting=False, classes=CLASSES):
    keras.utils.set_random_seed(seed)
    dense = CountingDense if counting else keras.layers.Dense
    return keras.Sequential(
        [
            keras.Input((FEATURES,)),
            dense(hidden, activation="relu", name="hidden"),
            keras.layers.Dense(classes, activation="softmax" if softmax else None),
        ],
        name=name,
    )


def _data(n=32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, FEATURES)).astype("float32")
    return x, x[:, :CLASSES].argmax(axis=-1).astype("int32")


def _np_log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _np_cross_entropy(labels, s):
    return -_np_log_softmax(s)[np.arange(len(labels)), labels]


def test_two_teacher_loss_matches_numpy():
    """KL(p_ens ‖ p_s) with p_ens = 0.25 softmax(z1/T) + 0.75 softmax(z2/T)."""
    x, y = _data()
    t1, t2, student = _mlp("t1", 0), _mlp("t2", 1), _mlp("student", 2)
    temperature, alpha = 3.0, 0.2
    distiller = tfkd.Distiller(
        teacher=[t1, t2], teacher_weights=[0.25, 0.75], student=student,
        temperature=temperature, alpha=alpha,
    )
    distiller.compile(optimizer="sgd")
    results = distiller.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)

    z1, z2, s = (keras.ops.convert_to_numpy(m(x)).astype(np.float64) for m in (t1, t2, student))
    p_ens = 0.25 * np.exp(_np_log_softmax(z1 / temperature)) + 0.75 * np.exp(
        _np_log_softmax(z2 / temperature)
    )
    kl = (p_ens * (np.log(p_ens) - _np_log_softmax(s / temperature))).sum(1)
    soft = temperature**2 * kl.mean()
    hard = _np_cross_entropy(y, s).mean()
    np.testing.assert_allclose(results["distillation_loss"], soft, rtol=1e-3)
    np.testing.assert_allclose(results["loss"], alpha * hard + (1 - alpha) * soft, rtol=1e-3)


def _copy(model, name):
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    twin.name = name
    return twin


# Array-fed twins of the tf.data tests of tests/test_ensembles_tensorflow.py,
# for every backend.


def _fit_arrays(teacher, **kwargs):
    x, y = _data(64)
    student = _mlp("student", 3)
    distiller = tfkd.Distiller(teacher=teacher, student=student, alpha=0.2, **kwargs)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    distiller.fit(x, y, batch_size=16, shuffle=False, epochs=2, verbose=0)
    return student.get_weights()


def test_two_copies_of_a_teacher_train_like_the_teacher_alone_from_arrays():
    teacher = _mlp("teacher", 0)
    alone = _fit_arrays(teacher)
    pair = _fit_arrays([_copy(teacher, "copy_a"), _copy(teacher, "copy_b")],
                       teacher_weights=[1.0, 3.0])
    for a, b in zip(alone, pair):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_each_teacher_runs_once_per_step_from_arrays():
    x, y = _data(64)
    teachers = [_mlp(f"t{i}", i, counting=True) for i in range(3)]
    distiller = tfkd.Distiller(teacher=teachers, student=_mlp("student", 5))
    distiller.compile(optimizer="sgd")
    # Keras's own loop, without tfkd's pre-flight batch: 4 batches of 16.
    keras.Model.fit(distiller, x, y, batch_size=16, shuffle=False, epochs=1, verbose=0)
    for teacher in teachers:
        assert int(np.asarray(teacher.get_layer("hidden").calls)) == 4
    keras.Model.evaluate(distiller, x, y, batch_size=16, verbose=0)
    for teacher in teachers:
        assert int(np.asarray(teacher.get_layer("hidden").calls)) == 8


def test_probability_teachers_are_converted_per_teacher():
    """A softmax teacher in the list counts as its logit twin."""
    x, _ = _data()
    logits_teacher = _mlp("t_logits", 0)
    softmax_teacher = _mlp("t_softmax", 0, softmax=True)
    softmax_teacher.set_weights(logits_teacher.get_weights())
    other = _mlp("other", 1)
    with_logits = ensembles.TeacherEnsemble([logits_teacher, other], temperature=2.0)
    with_probabilities = ensembles.TeacherEnsemble(
        [softmax_teacher, other], temperature=2.0,
        teacher_outputs=["probabilities", "logits"],
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(with_probabilities(x)), keras.ops.convert_to_numpy(with_logits(x)), rtol=1e-4, atol=1e-4
    )


def test_keras_file_round_trip_with_a_list_of_teachers(tmp_path):
    x, y = _data()
    distiller = tfkd.Distiller(
        teacher=[_mlp("t1", 0), _mlp("t2", 1)], teacher_weights=[1.0, 3.0],
        student=_mlp("student", 2), logit_standardization=True,
    )
    distiller.compile(optimizer="adam")
    distiller.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "ensemble.keras"
    distiller.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.is_ensemble and [t.name for t in loaded.teachers] == ["t1", "t2"]
    assert loaded.get_config()["teacher_weights"] == [0.25, 0.75]
    assert loaded.logit_standardization is True
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded.teacher(x)), keras.ops.convert_to_numpy(distiller.teacher(x)), rtol=1e-6)
    expected = distiller.evaluate(x, y, verbose=0, return_dict=True)
    got = loaded.evaluate(x, y, verbose=0, return_dict=True)
    np.testing.assert_allclose(got["loss"], expected["loss"], rtol=1e-5)


def test_a_list_of_one_teacher_is_that_teacher():
    teacher = _mlp("teacher", 0)
    distiller = tfkd.Distiller(teacher=[teacher], student=_mlp("student", 1))
    assert distiller.teacher is teacher and not distiller.is_ensemble
    config = distiller.get_config()
    assert config["teacher"]["config"]["name"] == "teacher"
    assert config["teacher_weights"] is None


def _student():
    return _mlp("student", 9)


@pytest.mark.parametrize(
    "make_kwargs, error, pattern",
    [
        (lambda: {"teacher": []}, ValueError, "teacher"),
        (lambda: {"teacher": [_mlp("t", 0), "model"]}, TypeError, "teacher"),
        (lambda: {"teacher": [_mlp("t", 0), _mlp("u", 1, classes=3)]}, ValueError,
         "same number of output classes"),
        (lambda: {"teacher": [_mlp("t", 0), _mlp("u", 1)], "teacher_weights": [1.0]},
         ValueError, "teacher_weights"),
        (lambda: {"teacher": [_mlp("t", 0), _mlp("u", 1)], "teacher_weights": [1.0, -1.0]},
         ValueError, "teacher_weights"),
        (lambda: {"teacher": [_mlp("t", 0), _mlp("u", 1)],
                  "teacher_weights": [1.0, float("inf")]}, ValueError, "teacher_weights"),
        (lambda: {"teacher": [_mlp("t", 0), _mlp("u", 1)], "teacher_weights": "1,1"},
         TypeError, "teacher_weights"),
        (lambda: {"teacher": _mlp("t", 0), "teacher_weights": [1.0]}, ValueError,
         "teacher_weights"),
        (lambda: {"teacher": [_mlp("t", 0), _mlp("u", 1)],
                  "teacher_outputs": ["logits"]}, ValueError, "teacher_outputs"),
        (lambda: {"teacher": [_mlp("t", 0), _mlp("u", 1)],
                  "extra_losses": [FitNetHint("hidden", "hidden")]}, ValueError,
         "extra_losses"),
        (lambda: {"logit_standardization": 1}, TypeError, "logit_standardization"),
    ],
)
def test_bad_ensembles_are_refused_before_training(make_kwargs, error, pattern):
    kwargs = make_kwargs()
    kwargs.setdefault("teacher", _mlp("t", 0))
    with pytest.raises(error, match=pattern):
        tfkd.Distiller(student=_student(), **kwargs)


def test_the_same_model_twice_is_refused():
    teacher = _mlp("t", 0)
    with pytest.raises(ValueError, match="teacher_weights"):
        tfkd.Distiller(teacher=[teacher, teacher], student=_student())


def test_mixture_logits_give_the_mixture_at_their_temperature_only():
    z1 = np.array([[2.0, 0.0, -1.0]])
    z2 = np.array([[-1.0, 1.0, 0.5]])
    mixed = np.asarray(ensembles.mixture_logits([z1, z2], [0.5, 0.5], 2.0), np.float64)
    p = 0.5 * np.exp(_np_log_softmax(z1 / 2.0)) + 0.5 * np.exp(_np_log_softmax(z2 / 2.0))
    np.testing.assert_allclose(np.exp(_np_log_softmax(mixed / 2.0)), p, rtol=1e-5)
    p_at_1 = 0.5 * np.exp(_np_log_softmax(z1)) + 0.5 * np.exp(_np_log_softmax(z2))
    assert not np.allclose(np.exp(_np_log_softmax(mixed / 1.0)), p_at_1, rtol=1e-2)
