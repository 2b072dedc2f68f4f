"""FitNets hints and attention transfer: NumPy references, connectors, saving."""

import inspect
import zipfile

import keras
import numpy as np
import pytest

import tfkd
from tfkd.terms import features as feature_losses
from tfkd.terms.decoupled import DecoupledKD
from tfkd.terms.features import AttentionTransfer, FitNetHint
from tfkd.terms.relations import RKDAngle, RKDDistance

CLASSES = 3


def _features(seed, shape):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _cnn(name, filters, seed):
    """Conv (8x8) -> pool (4x4) -> conv -> GAP -> embedding -> logits."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Conv2D(2 * filters, 3, padding="same", activation="relu", name="conv2"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(2 * filters, activation="relu", name="embedding"),
            keras.layers.Dense(CLASSES, name="logits"),
        ],
        name=name,
    )


def _images(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 8, 8, 1)).astype("float32")
    regions = [x[:, :4, :4, 0], x[:, 4:, :4, 0], x[:, :, 4:, 0]]
    y = np.stack([r.mean(axis=(1, 2)) for r in regions], axis=-1).argmax(axis=-1)
    return x, y.astype("int32")


# -- NumPy references -------------------------------------------------------


def _np_attention(features, p):
    energy = (np.abs(features.astype(np.float64)) ** p).sum(axis=-1)
    energy = energy.reshape(len(features), -1)
    norm = np.linalg.norm(energy, axis=1, keepdims=True)
    return energy / np.maximum(norm, 1e-12)


def _np_attention_transfer(t, s, p):
    return 0.5 * ((_np_attention(s, p) - _np_attention(t, p)) ** 2).mean(axis=-1)


def test_fitnet_hint_loss_matches_numpy():
    t, s = _features(0, (4, 3, 3, 5)), _features(1, (4, 3, 3, 5))
    expected = ((t.astype(np.float64) - s) ** 2).reshape(4, -1).mean(axis=-1)
    got = feature_losses.fitnet_hint_loss(t, s)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6)


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_attention_transfer_loss_matches_numpy(p):
    t, s = _features(2, (4, 5, 5, 6)), _features(3, (4, 5, 5, 2))  # channels differ
    got = feature_losses.attention_transfer_loss(t, s, p)
    np.testing.assert_allclose(
        np.asarray(got), _np_attention_transfer(t, s, p), rtol=1e-5, atol=1e-9
    )
    rows = np.linalg.norm(np.asarray(feature_losses.attention_map(t, p)), axis=-1)
    np.testing.assert_allclose(rows, 1.0, rtol=1e-6)


def test_attention_map_of_dead_features_is_zero_not_nan():
    q = feature_losses.attention_map(np.zeros((2, 3, 3, 4), "float32"))
    np.testing.assert_array_equal(np.asarray(q), 0.0)


def test_fitnet_term_with_conv_connector_matches_numpy():
    t, s = _features(4, (4, 3, 3, 6)), _features(5, (4, 3, 3, 2))
    weights = np.array([1.0, 0.0, 2.0, 0.5], "float32")
    hint = FitNetHint()
    hint.build(t.shape, s.shape)
    assert isinstance(hint.connector, keras.layers.Conv2D)
    kernel, bias = hint.connector.get_weights()
    assert kernel.shape == (1, 1, 2, 6)
    regressed = s.astype(np.float64) @ kernel[0, 0] + bias  # 1x1 conv
    per_example = ((t - regressed) ** 2).reshape(4, -1).mean(axis=-1)
    got = hint(t, s, sample_weight=weights)
    # Keras's "sum_over_batch_size": weighted sum / examples.
    np.testing.assert_allclose(float(got), (per_example * weights).sum() / 4, rtol=1e-5)


def test_attention_term_matches_numpy_with_sample_weights():
    t, s = _features(6, (4, 5, 5, 3)), _features(7, (4, 5, 5, 7))
    weights = np.array([0.0, 1.0, 1.0, 3.0], "float32")
    got = AttentionTransfer("t", "s")(t, s, sample_weight=weights)
    expected = (_np_attention_transfer(t, s, 2.0) * weights).sum() / 4
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


# -- connectors ---------------------------------------------------------------


@pytest.mark.parametrize(
    "teacher_shape, student_shape, connector, kind",
    [
        ((None, 4, 4, 16), (None, 4, 4, 8), "auto", keras.layers.Conv2D),
        ((None, 32), (None, 8), "auto", keras.layers.Dense),
        ((None, 4, 4, 8), (None, 4, 4, 8), "auto", None),
        ((None, 4, 4, 8), (None, 4, 4, 8), "always", keras.layers.Conv2D),
    ],
)
def test_connector_is_built_only_where_needed(teacher_shape, student_shape, connector, kind):
    hint = FitNetHint(connector=connector)
    hint.build(teacher_shape, student_shape)
    if kind is None:
        assert hint.connector is None and not hint.weights
    else:
        assert isinstance(hint.connector, kind)
        assert hint.connector.compute_dtype == "float32"
        assert hint.connector.kernel.shape[-1] == teacher_shape[-1]


def test_connector_shape_errors_name_the_fix():
    with pytest.raises(ValueError, match="same resolution.*conv2.*\\(None, 4, 4, 16\\)"):
        tfkd.Distiller(
            teacher=_cnn("teacher", 8, 0),
            student=_cnn("student", 4, 1),
            extra_losses=[FitNetHint(teacher_layer="conv2", student_layer="conv1")],
        )
    with pytest.raises(ValueError, match="`connector`.*Received: connector='never'"):
        FitNetHint(connector="never").build((None, 4, 4, 16), (None, 4, 4, 8))
    with pytest.raises(ValueError, match="same spatial size"):
        AttentionTransfer("t", "s").build((None, 4, 4, 16), (None, 8, 8, 8))
    with pytest.raises(ValueError, match="channels-last"):
        AttentionTransfer("t", "s").build((None, 16), (None, 16))


def test_connector_trains_with_the_student_and_the_teacher_does_not():
    x, y = _images()
    hint = FitNetHint(teacher_layer="conv2", student_layer="conv2", weight=10.0)
    distiller = tfkd.Distiller(
        teacher=_cnn("teacher", 8, 0), student=_cnn("student", 4, 1), extra_losses=[hint]
    )
    # Optimized: the student's weights, then the connector's; not the teacher's.
    assert len(distiller.trainable_weights) == len(distiller.student.trainable_weights) + 2
    distiller.compile(optimizer=keras.optimizers.Adam(0.01))
    connector_before = [w.copy() for w in hint.connector.get_weights()]
    teacher_before = [w.copy() for w in distiller.teacher.get_weights()]
    history = distiller.fit(x, y, batch_size=16, epochs=4, shuffle=False, verbose=0)
    hint_loss = history.history["fitnet_loss"]
    assert hint_loss[-1] < hint_loss[0], hint_loss
    for before, after in zip(connector_before, hint.connector.get_weights()):
        assert not np.allclose(before, after)
    for before, after in zip(teacher_before, distiller.teacher.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_exported_student_has_no_connector_weights(tmp_path):
    x, y = _images()
    student = _cnn("student", 4, 1)
    weights_before = len(student.weights)
    distiller = tfkd.Distiller(
        teacher=_cnn("teacher", 8, 0),
        student=student,
        extra_losses=[FitNetHint(teacher_layer="conv2", student_layer="conv2")],
    )
    distiller.compile(optimizer="adam")
    distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert distiller.student is student
    assert len(student.weights) == weights_before
    assert not any("connector" in w.path for w in student.weights)

    path = tmp_path / "student.keras"
    student.save(path)
    with zipfile.ZipFile(path) as archive:
        config = archive.read("config.json").decode()
    # Nothing of tfkd in the file: plain Keras loads it (test_distiller.py
    # checks that in a process without tfkd).
    assert "tfkd" not in config and "connector" not in config
    loaded = keras.saving.load_model(path)
    assert len(loaded.weights) == weights_before
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), student.predict(x, verbose=0), rtol=1e-6
    )


# -- serialization ------------------------------------------------------------


def _combined_terms():
    return [
        FitNetHint(teacher_layer="conv2", student_layer="conv2", weight=0.5),
        AttentionTransfer(teacher_layer="conv1", student_layer="conv1", weight=100.0, p=2.0),
        RKDDistance(teacher_layer="embedding", student_layer="embedding", weight=1.0),
        RKDAngle(teacher_layer="embedding", student_layer="embedding", weight=2.0),
        DecoupledKD(temperature=3.0, target_weight=1.0, non_target_weight=4.0, weight=0.5),
    ]


@pytest.mark.parametrize(
    "index", range(5), ids=["FitNetHint", "AttentionTransfer", "RKDDistance", "RKDAngle", "DecoupledKD"]
)
def test_get_config_is_exactly_the_init_arguments(index):
    term = _combined_terms()[index]
    config = term.get_config()
    assert set(config) == set(inspect.signature(type(term).__init__).parameters) - {"self"}
    clone = type(term).from_config(config)
    assert clone.get_config() == config


def test_combined_losses_round_trip_through_a_keras_file(tmp_path):
    x, y = _images()
    distiller = tfkd.Distiller(
        teacher=_cnn("teacher", 8, 0),
        student=_cnn("student", 4, 1),
        alpha=0.5,
        extra_losses=_combined_terms(),
    )
    distiller.compile(optimizer=keras.optimizers.Adam(0.01), metrics=["accuracy"])
    distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)
    path = tmp_path / "distiller.keras"
    distiller.save(path)
    restored = keras.saving.load_model(path)

    assert [t.get_config() for t in restored.extra_losses] == [
        t.get_config() for t in distiller.extra_losses
    ]
    for a, b in zip(restored.extra_losses[0].connector.get_weights(),
                    distiller.extra_losses[0].connector.get_weights()):
        np.testing.assert_array_equal(a, b)
    # Every loss term, the metrics and the predictions come back identical.
    before = distiller.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    after = restored.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    assert set(after) == set(before) >= {"fitnet_loss", "rkd_angle_loss", "dkd_loss"}
    for name in before:
        np.testing.assert_allclose(after[name], before[name], rtol=1e-5, err_msg=name)
    # The optimizer state (slots of student and connector) is restored too.
    for a, b in zip(restored.optimizer.variables, distiller.optimizer.variables):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


@pytest.mark.parametrize(
    "make, error, pattern",
    [
        (lambda: FitNetHint(weight=-1), ValueError,
         r"Invalid value for argument `weight`. Expected a float in \[0, 1e\+06\].* Received: weight=-1"),
        (lambda: FitNetHint(connector="sometimes"), ValueError,
         r"`connector`. Expected one of 'auto', 'always', 'never'"),
        (lambda: FitNetHint(teacher_layer=3), TypeError, r"`teacher_layer`"),
        (lambda: AttentionTransfer("conv1", student_layer=""), ValueError, r"`student_layer`"),
        (lambda: AttentionTransfer("conv1", "conv1", p=0), ValueError, r"`p`. Expected a float in \[1, 4\]"),
    ],
)
def test_bad_arguments_are_named(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make()


def test_terms_need_distinct_names():
    with pytest.raises(ValueError, match="distinct names.*attention_transfer_loss"):
        tfkd.Distiller(
            teacher=_cnn("teacher", 8, 0),
            student=_cnn("student", 4, 1),
            extra_losses=[
                AttentionTransfer("conv1", "conv1"),
                AttentionTransfer("conv2", "conv2"),
            ],
        )
    with pytest.raises(TypeError, match="`extra_losses`"):
        tfkd.Distiller(
            teacher=_cnn("teacher", 8, 0),
            student=_cnn("student", 4, 1),
            extra_losses=FitNetHint(),
        )


# -- distribution and precision -------------------------------------------------


def test_mixed_precision_feature_losses_are_float32_and_finite():
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    x, y = _images()
    hint = FitNetHint(teacher_layer="conv2", student_layer="conv2")
    distiller = tfkd.Distiller(
        teacher=_cnn("teacher", 8, 0),
        student=_cnn("student", 4, 1),
        extra_losses=[hint, AttentionTransfer("conv1", "conv1")],
    )
    assert distiller.student.get_layer("conv2").compute_dtype == "float16"
    assert hint.connector.kernel.dtype == "float32"
    distiller.compile(optimizer="adam")
    history = distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)
    for name in ("loss", "fitnet_loss", "attention_transfer_loss"):
        assert np.all(np.isfinite(history.history[name])), name
