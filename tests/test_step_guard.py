"""The training step's guard (`tfkd.step_guard`): later batches are checked.

The first-batch checks of `tfkd.preflight` pass in every test here: the
NaN input or the bad label sits in a later batch, which the guard must
catch inside the compiled step — eagerly, in `tf.function`, with XLA,
with `steps_per_execution > 1`, under `MirroredStrategy` and under mixed
precision — before it updates a weight.
"""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tfkd import step_guard
import conftest

BATCH = 16
STEPS = 8  # batches per epoch
CLASSES = 3


def _dense(seed, inputs=8, name=None):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((inputs,)), keras.layers.Dense(CLASSES)], name=name
    )


def _bn_student(seed=1):
    """A student with BatchNorm: its moving statistics must stay finite."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(4),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(CLASSES),
        ]
    )


def _data(epochs=1, bad_epoch=None, bad_batch=None, row=3, value=np.nan):
    """`epochs` epochs of STEPS batches; one bad input at (epoch, batch)."""
    rng = np.random.default_rng(0)
    n = epochs * STEPS * BATCH
    x = rng.random((n, 8)).astype("float32")
    y = (np.arange(n) % CLASSES).astype("int64")
    if bad_epoch is not None:
        x[(bad_epoch * STEPS + bad_batch) * BATCH + row, 2] = value
    return x, y


def _dataset(x, y):
    # Unshuffled, so the bad batch is where the test put it.
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)


def _distiller(student=None, **kwargs):
    return tfkd.Distiller(
        teacher=_dense(0, name="teacher"),
        student=student or _dense(1, name="student"),
        **kwargs,
    )


def _all_finite(model):
    return all(np.all(np.isfinite(v.numpy())) for v in model.variables)


def _weights(model):
    return [v.numpy().copy() for v in model.variables]


def _fit(distiller, x, y, epochs=1, **compile_kwargs):
    distiller.compile(optimizer=keras.optimizers.Adam(0.01), **compile_kwargs)
    return distiller.fit(
        _dataset(x, y), epochs=epochs, steps_per_epoch=STEPS, verbose=0
    )


# -- non-finite loss ----------------------------------------------------------


@pytest.mark.parametrize(
    "compile_kwargs",
    [
        {"run_eagerly": True},
        {},
        {"jit_compile": True},
        {"steps_per_execution": 4},  # divides STEPS
    ],
    ids=["eager", "tf.function", "jit", "steps_per_execution"],
)
def test_nan_input_in_a_later_batch_raises_and_updates_nothing(compile_kwargs):
    # Batch 5 (index 4) of epoch 2: the weights must be those after batch 4.
    x, y = _data(epochs=2, bad_epoch=1, bad_batch=4)
    distiller = _distiller(student=_bn_student())
    with pytest.raises(
        step_guard.NonFiniteLossError,
        match=r"Non-finite loss in epoch 2, batch 5 \(counting from 1\)",
    ):
        _fit(distiller, x, y, epochs=2, **compile_kwargs)
    assert _all_finite(distiller.student)

    # The same training stopped by hand after batch 4 of epoch 2.
    reference = _distiller(student=_bn_student())
    reference.compile(optimizer=keras.optimizers.Adam(0.01), **compile_kwargs)
    clean = _dataset(x, y).take(STEPS + 4)
    reference.fit(clean, epochs=1, verbose=0)
    for got, want in zip(_weights(distiller.student), _weights(reference.student)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_skip_counts_the_batch_and_trains_on():
    x, y = _data(epochs=2, bad_epoch=0, bad_batch=6, value=np.inf)
    distiller = _distiller(student=_bn_student(), on_nonfinite="skip")
    history = _fit(distiller, x, y, epochs=2)
    assert history.history["nonfinite_batches"] == [1.0, 0.0]
    assert np.all(np.isfinite(history.history["loss"]))
    assert _all_finite(distiller.student)
    config = distiller.get_config()
    assert config["on_nonfinite"] == "skip"
    assert tfkd.Distiller.from_config(config).on_nonfinite == "skip"


def test_on_nonfinite_is_validated_and_defaults_to_raise():
    assert _distiller().get_config()["on_nonfinite"] == "raise"
    with pytest.raises(
        ValueError,
        match=r"Invalid value for argument `on_nonfinite`. Expected one of "
        r"'raise', 'skip', 'ignore'. Received: on_nonfinite='warn'",
    ):
        _distiller(on_nonfinite="warn")


def test_a_nan_teacher_logit_in_a_cached_batch_raises():
    x, y = _data()
    logits = np.random.default_rng(1).normal(size=(len(x), CLASSES))
    logits[5 * BATCH + 2, 1] = np.nan
    targets = {"labels": y, "teacher_logits": logits.astype("float32")}
    distiller = tfkd.Distiller(student=_dense(1))
    distiller.compile(optimizer="adam")
    with pytest.raises(step_guard.NonFiniteLossError, match="batch 6"):
        distiller.fit(
            tf.data.Dataset.from_tensor_slices((x, targets)).batch(BATCH),
            verbose=0,
        )
    assert _all_finite(distiller.student)


@keras.saving.register_keras_serializable(package="test_step_guard")
class _NaNGradient(tfkd.DistillationTerm):
    """A term whose value is 0 but whose gradient is NaN: sqrt at 0."""

    default_name = "nan_gradient"

    def per_example_loss(self, teacher, student, labels):
        return keras.ops.sqrt(keras.ops.sum(keras.ops.square(student - student), axis=-1))


def test_a_finite_loss_with_a_nan_gradient_raises():
    x, y = _data()
    distiller = _distiller(extra_losses=[_NaNGradient()])
    with pytest.raises(
        step_guard.NonFiniteLossError, match="Non-finite gradient in epoch 1, batch 1"
    ):
        _fit(distiller, x, y)
    assert _all_finite(distiller.student)


def test_mixed_precision_leaves_gradient_overflow_to_the_loss_scale():
    # Large inputs overflow the float16 gradients scaled by 2^15: the
    # LossScaleOptimizer lowers its scale and skips those steps itself,
    # which the guard must not turn into an error.
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    x, y = _data()
    distiller = _distiller()
    distiller.compile(optimizer="adam")
    distiller.fit(_dataset(x * 1000.0, y), verbose=0)
    assert isinstance(distiller.optimizer, keras.optimizers.LossScaleOptimizer)
    assert float(distiller.optimizer.dynamic_scale.numpy()) < 2.0**15
    assert _all_finite(distiller.student)

    # A NaN input still stops training.
    x, y = _data(bad_epoch=0, bad_batch=3)
    distiller = _distiller()
    distiller.compile(optimizer="adam")
    with pytest.raises(step_guard.NonFiniteLossError, match="batch 4"):
        distiller.fit(_dataset(x, y), verbose=0)
    assert _all_finite(distiller.student)


@pytest.mark.parametrize("mode", ["raise", "skip"])
def test_mirrored_replicas_agree_to_skip(mode):
    strategy = conftest.two_replica_strategy()
    # Row 12 of a global batch of 16 lands on the second replica only.
    x, y = _data(bad_epoch=0, bad_batch=2, row=12)
    with strategy.scope():
        distiller = _distiller(student=_bn_student(), on_nonfinite=mode)
        distiller.compile(optimizer="adam")
    if mode == "raise":
        with pytest.raises(step_guard.NonFiniteLossError, match="batch 3"):
            distiller.fit(_dataset(x, y), verbose=0)
    else:
        history = distiller.fit(_dataset(x, y), verbose=0)
        assert history.history["nonfinite_batches"] == [1.0]
    assert _all_finite(distiller.student)


def test_evaluate_reports_a_nan_loss_instead_of_averaging_it_away():
    x, y = _data(bad_epoch=0, bad_batch=5)
    distiller = _distiller()
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    logs = distiller.evaluate(_dataset(x, y), verbose=0, return_dict=True)
    assert np.isnan(logs["loss"])


def test_ignore_is_the_unguarded_step():
    x, y = _data(bad_epoch=0, bad_batch=5)
    distiller = _distiller(on_nonfinite="ignore")
    _fit(distiller, x, y)
    assert not _all_finite(distiller.student)


# -- labels -------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_label, shown",
    [(1.5, "1.5"), (3, "3"), (-2, "-2"), (np.nan, "nan")],
    ids=["fractional", "out of range", "below -1", "nan"],
)
def test_a_bad_label_in_a_later_batch_raises_naming_the_batch(bad_label, shown):
    x, y = _data(epochs=2)
    y = y.astype("float32")
    y[(STEPS + 2) * BATCH + 7] = bad_label
    distiller = _distiller()
    with pytest.raises(
        step_guard.InvalidLabelsError,
        match=r"Invalid labels in epoch 2, batch 3 \(counting from 1\). "
        r"Expected class ids in \[0, 2\] for a student with 3 classes, or -1"
        rf".*Received: a label of {shown}",
    ):
        _fit(distiller, x, y, epochs=2)
    assert _all_finite(distiller.student)


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "jit"])
def test_out_of_range_integer_labels_raise_before_tensorflow_does(jit_compile):
    # Without the guard, TensorFlow's sparse cross-entropy kernel fails on
    # the label (InvalidArgumentError); XLA returns NaN instead.
    x, y = _data()
    y[4 * BATCH] = 7
    distiller = _distiller()
    with pytest.raises(step_guard.InvalidLabelsError, match="batch 5"):
        _fit(distiller, x, y.astype("uint8"), jit_compile=jit_compile)


def test_bad_labels_in_dict_targets_and_crd_batches():
    x, y = _data()
    y[6 * BATCH + 1] = 3
    logits = np.random.default_rng(1).normal(size=(len(x), CLASSES))
    targets = {"labels": y, "teacher_logits": logits.astype("float32")}
    distiller = tfkd.Distiller(student=_dense(1))
    distiller.compile(optimizer="adam")
    data = tf.data.Dataset.from_tensor_slices((x, targets)).batch(BATCH)
    with pytest.raises(step_guard.InvalidLabelsError, match="batch 7"):
        distiller.fit(data, verbose=0)

    crd = tfkd.CRD(num_data=len(x), feat_dim=4, num_negatives=8)
    distiller = _distiller(extra_losses=[crd])
    distiller.compile(optimizer="adam")
    targets = {"labels": y, "index": np.arange(len(x))}
    data = tf.data.Dataset.from_tensor_slices((x, targets)).batch(BATCH)
    with pytest.raises(step_guard.InvalidLabelsError, match="batch 7"):
        distiller.fit(data, verbose=0)
    assert np.all(np.isfinite(crd.student_memory.numpy()))


def test_unlabelled_rows_one_hot_rows_and_sample_weights_still_train():
    x, y = _data()
    y[::5] = -1  # unlabelled, in every batch
    weights = np.linspace(0.0, 1.0, len(x)).astype("float32")
    distiller = _distiller()
    distiller.compile(optimizer="adam")
    data = tf.data.Dataset.from_tensor_slices((x, y, weights)).batch(BATCH)
    history = distiller.fit(data, verbose=0)
    assert np.isfinite(history.history["loss"][0])

    soft = np.full((len(x), CLASSES), 1.0 / CLASSES, "float32")
    soft[3 * BATCH] = 0.0  # an unlabelled one-hot row
    distiller = _distiller()
    distiller.compile(optimizer="adam")
    history = _fit(distiller, x, soft)
    assert np.isfinite(history.history["loss"][0])


def test_skip_also_skips_bad_labels():
    x, y = _data()
    y[2 * BATCH] = 5
    distiller = _distiller(on_nonfinite="skip")
    history = _fit(distiller, x, y)
    assert history.history["nonfinite_batches"] == [1.0]


def test_evaluate_and_validation_raise_for_bad_labels():
    x, y = _data()
    y[4 * BATCH + 4] = 9  # after the 64 examples validation preflight reads
    distiller = _distiller()
    distiller.compile(optimizer="adam")
    with pytest.raises(
        step_guard.InvalidLabelsError,
        match=r"Invalid labels in the evaluation data, batch 5",
    ):
        distiller.evaluate(_dataset(x, y), verbose=0)
    clean_x, clean_y = _data()
    with pytest.raises(
        step_guard.InvalidLabelsError,
        match=r"in the validation data after epoch 1, batch 5",
    ):
        distiller.fit(
            _dataset(clean_x, clean_y),
            validation_data=_dataset(x, y),
            verbose=0,
        )


def test_train_on_batch_raises_too():
    x, y = _data()
    distiller = _distiller()
    distiller.compile(optimizer="adam")
    distiller.train_on_batch(x[:BATCH], y[:BATCH])
    before = _weights(distiller.student)
    x[0, 0] = np.nan
    with pytest.raises(step_guard.NonFiniteLossError, match="train_on_batch"):
        distiller.train_on_batch(x[:BATCH], y[:BATCH])
    for got, want in zip(_weights(distiller.student), before):
        np.testing.assert_array_equal(got, want)
    distiller.train_on_batch(x[BATCH : 2 * BATCH], y[BATCH : 2 * BATCH])
    assert _all_finite(distiller.student)


def test_guard_state_is_not_saved(tmp_path):
    distiller = _distiller()
    names = [v.path for v in distiller.variables]
    assert not any(re.search("step_guard", name) for name in names)
