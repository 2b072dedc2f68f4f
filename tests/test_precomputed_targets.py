"""`Distiller.precompute_targets`: the teacher run once, never in the step.

Runs on every Keras backend (`conftest.BACKEND_INDEPENDENT_FILES`): the
data are NumPy arrays, which `fit` batches on each backend.
"""

import keras
import numpy as np
import pytest

import tfkd
from tfkd import teacher_outputs as teacher_outputs_lib

ROWS = 96


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((ROWS, 8)).astype("float32")
    y = rng.integers(0, 3, ROWS)
    return x, y


def _model(hidden, seed, softmax=False):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(hidden, activation="relu", name="hidden"),
        keras.layers.Dense(3, activation="softmax" if softmax else None,
                           name="logits"),
    ])


def _terms():
    return [
        tfkd.CRD("hidden", "hidden", num_data=ROWS, feat_dim=8, num_negatives=16),
        tfkd.FitNetHint("hidden", "hidden"),
    ]


def _distiller(teacher, terms=None, **options):
    student = _model(4, seed=1)
    keras.utils.set_random_seed(2)  # the terms' connectors and CRD's memory
    distiller = tfkd.Distiller(
        teacher=teacher, student=student, temperature=2.0, alpha=0.5,
        extra_losses=_terms() if terms is None else terms, **options)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    return distiller


def _fit(distiller, x, targets):
    keras.utils.set_random_seed(3)
    history = distiller.fit(x, targets, batch_size=32, epochs=2, verbose=0,
                            shuffle=False)
    return ({k: v[-1] for k, v in history.history.items()},
            [np.asarray(w) for w in distiller.student.get_weights()])


def test_training_on_precomputed_targets_equals_the_online_teacher():
    x, y = _data()
    teacher = _model(16, seed=0)
    cached = _distiller(teacher)
    targets = cached.precompute_targets(x, y, batch_size=40, verbose=0)
    cached_logs, cached_weights = _fit(cached, x, targets)

    online = _distiller(teacher)
    online_logs, online_weights = _fit(
        online, x, {"labels": y, "index": targets["index"]})

    assert sorted(cached_logs) == sorted(online_logs)
    for name, value in online_logs.items():
        np.testing.assert_allclose(cached_logs[name], value, rtol=1e-5, atol=1e-6)
    for cached_weight, online_weight in zip(cached_weights, online_weights):
        np.testing.assert_allclose(cached_weight, online_weight, atol=1e-5)


def test_the_teacher_does_not_run_during_training():
    x, y = _data()
    teacher = _model(16, seed=0)
    cached = _distiller(teacher)
    targets = cached.precompute_targets(x, y, verbose=0)
    # A teacher whose every output and layer is now +inf (inputs are >= 0;
    # NaN would not do: ReLU maps it to 0 on oneDNN): any step that ran it
    # would have a non-finite loss, which the step guard refuses (and the
    # pre-flight check refuses it before that, as the online control shows).
    teacher.set_weights([np.full_like(w, np.inf) for w in teacher.get_weights()])
    logs, weights = _fit(cached, x, targets)
    assert all(np.isfinite(value) for value in logs.values())
    assert all(np.all(np.isfinite(w)) for w in weights)

    online = _distiller(teacher)
    with pytest.raises(ValueError, match="teacher outputs"):
        _fit(online, x, {"labels": y, "index": targets["index"]})


def test_targets_hold_the_teachers_logits_features_and_row_indices():
    x, y = _data()
    teacher = _model(16, seed=0)
    targets = _distiller(teacher).precompute_targets(x, y, batch_size=40, verbose=0)
    assert sorted(targets) == ["index", "labels", "teacher_features", "teacher_logits"]
    np.testing.assert_array_equal(targets["labels"], y)
    np.testing.assert_array_equal(targets["index"], np.arange(ROWS))
    np.testing.assert_allclose(targets["teacher_logits"],
                               teacher.predict(x, verbose=0), atol=1e-6)
    hidden = keras.Model(teacher.inputs, teacher.get_layer("hidden").output)
    assert list(targets["teacher_features"]) == ["hidden"]
    np.testing.assert_allclose(targets["teacher_features"]["hidden"],
                               hidden.predict(x, verbose=0), atol=1e-6)


def test_logit_terms_only_store_logits_and_no_index():
    x, _ = _data()
    teacher = _model(16, seed=0)
    targets = _distiller(teacher, terms=[]).precompute_targets(x, verbose=0)
    assert sorted(targets) == ["labels", "teacher_logits"]
    np.testing.assert_array_equal(targets["labels"], np.full(ROWS, -1))


def test_a_softmax_teacher_is_stored_as_log_probabilities():
    x, y = _data()
    teacher = _model(16, seed=0, softmax=True)
    targets = _distiller(teacher, terms=[]).precompute_targets(x, y, verbose=0)
    probabilities = teacher.predict(x, verbose=0)
    np.testing.assert_allclose(targets["teacher_logits"], np.log(probabilities),
                               atol=1e-5)


@pytest.mark.parametrize("make_x, error, match", [
    (lambda x: (row for row in x), TypeError, "argument `x`"),
    (lambda x: x[:0], ValueError, "at least one row"),
    (lambda x: [x, x[:10]], ValueError, "same number of rows"),
])
def test_bad_inputs_are_refused(make_x, error, match):
    x, _ = _data()
    distiller = _distiller(_model(16, seed=0))
    with pytest.raises(error, match=match):
        distiller.precompute_targets(make_x(x), verbose=0)


def test_bad_arguments_are_refused_before_the_teacher_runs():
    x, y = _data()
    distiller = _distiller(_model(16, seed=0))
    with pytest.raises(ValueError, match="argument `y`.*96 rows"):
        distiller.precompute_targets(x, y[:10], verbose=0)
    with pytest.raises(ValueError, match="batch_size"):
        distiller.precompute_targets(x, y, batch_size=0, verbose=0)
    with pytest.raises(ValueError, match="max_megabytes.*teacher_features|hidden"):
        distiller.precompute_targets(x, y, max_megabytes=1e-6, verbose=0)


def test_distillers_whose_teacher_outputs_change_per_step_are_refused():
    x, y = _data()
    teacher = _model(16, seed=0)
    augmented = _distiller(teacher, terms=[],
                           augmentation=keras.layers.GaussianNoise(0.1))
    with pytest.raises(ValueError, match="augmentation"):
        augmented.precompute_targets(x, y, verbose=0)
    without_teacher = tfkd.Distiller(teacher=None, student=_model(4, seed=1))
    with pytest.raises(ValueError, match="teacher=None"):
        without_teacher.precompute_targets(x, y, verbose=0)
    ensemble = tfkd.Distiller(teacher=[teacher, _model(16, seed=5)],
                              student=_model(4, seed=1))
    with pytest.raises(ValueError, match="ensemble"):
        ensemble.precompute_targets(x, y, verbose=0)


def test_a_teacher_with_non_finite_outputs_is_named():
    x, y = _data()
    x[50] = 3e38  # overflows to inf inside the teacher
    with pytest.raises(ValueError, match="finite teacher outputs.*batch 2"):
        _distiller(_model(16, seed=0)).precompute_targets(
            x, y, batch_size=32, verbose=0)


def test_features_that_do_not_fit_the_terms_are_refused_before_training():
    x, y = _data()
    distiller = _distiller(_model(16, seed=0))
    targets = distiller.precompute_targets(x, y, verbose=0)
    features = targets["teacher_features"]
    cases = [
        ({"other": features["hidden"]}, "missing \\['hidden'\\]"),
        ({"hidden": features["hidden"][:, :5]}, "shape \\(batch, \\*\\(16,\\)\\)"),
    ]
    for bad, match in cases:
        with pytest.raises(ValueError, match=match):
            distiller.fit(x, {**targets, "teacher_features": bad}, epochs=1, verbose=0)
    logits_only = _distiller(_model(16, seed=0), terms=[])
    with pytest.raises(ValueError, match="read by no term \\['hidden'\\]"):
        logits_only.fit(x, {"labels": y, "teacher_logits": targets["teacher_logits"],
                            "teacher_features": features}, epochs=1, verbose=0)


def test_features_without_logits_are_refused():
    with pytest.raises(ValueError, match="teacher_features"):
        teacher_outputs_lib.split_targets(
            {"labels": np.zeros(2), "teacher_features": {"hidden": np.zeros((2, 4))}})


def test_attach_teacher_logits_takes_features_by_layer_name():
    logits = np.zeros((2, 3), "float32")
    targets = tfkd.attach_teacher_logits(
        np.zeros(2), logits, teacher_features={"hidden": np.ones((2, 4))})
    assert sorted(targets) == ["labels", "teacher_features", "teacher_logits"]
    with pytest.raises(TypeError, match="teacher_features"):
        tfkd.attach_teacher_logits(np.zeros(2), logits,
                                   teacher_features=[np.ones((2, 4))])
