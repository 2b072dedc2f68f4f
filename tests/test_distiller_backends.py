"""The `Distiller` trains the same way on every Keras backend (issue #23).

Listed in `conftest.BACKEND_INDEPENDENT_FILES`: the normal suite runs it on
TensorFlow (the reference `train_step`), `make test-jax` on JAX (the
stateless step of `tfkd.jax_step`, the guard of `tfkd.jax_step_guard`) and
`make test-torch` on PyTorch (`tfkd.torch_step`, `tfkd.torch_step_guard`).
Every expected value is NumPy's or the other backend-neutral path's; the
three backends against each other: `test_backend_parity.py`.
"""

import numpy as np
import pytest

import keras

import tfkd

TEMPERATURE = 2.0
ALPHA = 0.3
LEARNING_RATE = 0.1


def _data(n=16, features=4, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    y = rng.integers(0, classes, size=n).astype("int32")
    return x, y


def _dense(features=4, classes=3, seed=0, name=None):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((features,)), keras.layers.Dense(classes)], name=name
    )


def _distiller(teacher, student, temperature=TEMPERATURE, alpha=ALPHA,
               teacher_outputs="logits", **kwargs):
    distiller = tfkd.Distiller(
        teacher=teacher, student=student, temperature=temperature,
        alpha=alpha, teacher_outputs=teacher_outputs, **kwargs
    )
    distiller.compile(
        optimizer=keras.optimizers.SGD(LEARNING_RATE), metrics=["accuracy"]
    )
    return distiller


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _numpy_step(kernel, bias, x, y, teacher_logits, sample_weight=None,
                temperature=TEMPERATURE, alpha=ALPHA):
    """One SGD step of `α · hard + (1 − α) · T² · KL` for a Dense student.

    For logits s = x W + b, dKL/ds_i = T · (softmax(s_i/T) − p_i) / N per
    example (with the T² factor of Hinton et al., 2015) and dCE/ds_i =
    (softmax(s_i) − y_i) / L over the L labelled examples.
    """
    n, classes = len(x), kernel.shape[1]
    w = np.ones(n) if sample_weight is None else sample_weight
    labelled = (y >= 0).astype("float64")
    onehot = np.eye(classes)[np.where(y >= 0, y, 0)] * labelled[:, None]
    s = x.astype("float64") @ kernel + bias
    hard = (_softmax(s) - onehot) * labelled[:, None] / max(labelled.sum(), 1)
    soft = temperature * (
        _softmax(s / temperature) - _softmax(teacher_logits / temperature)
    ) / n
    g = (alpha * hard + (1 - alpha) * soft) * w[:, None]  # (batch, classes)
    return kernel - LEARNING_RATE * x.T @ g, bias - LEARNING_RATE * g.sum(0)


@pytest.mark.parametrize("case", ["labelled", "unlabelled", "weighted"])
def test_one_step_equals_a_numpy_computation(case):
    x, y = _data()
    weights = None
    if case == "unlabelled":
        y[::3] = tfkd.losses.UNLABELLED
    if case == "weighted":
        weights = np.linspace(0.2, 2.0, len(x)).astype("float32")
    teacher, student = _dense(seed=1), _dense(seed=2)
    distiller = _distiller(teacher, student)
    kernel, bias = (np.asarray(v, "float64") for v in student.get_weights())
    teacher_logits = np.asarray(teacher.predict(x, verbose=0), "float64")

    distiller.fit(x, y, sample_weight=weights, batch_size=len(x), epochs=1,
                  shuffle=False, verbose=0)

    expected = _numpy_step(kernel, bias, x, y, teacher_logits, weights)
    for actual, wanted in zip(student.get_weights(), expected):
        np.testing.assert_allclose(actual, wanted, atol=1e-5)


def test_the_logged_losses_are_the_numpy_losses_and_unlabelled_are_masked():
    x, y = _data()
    y[::4] = tfkd.losses.UNLABELLED
    teacher, student = _dense(seed=1), _dense(seed=2)
    distiller = _distiller(teacher, student)
    s = np.asarray(student.predict(x, verbose=0), "float64")
    t = np.asarray(teacher.predict(x, verbose=0), "float64")
    kept = y >= 0
    ce = -np.log(_softmax(s)[np.arange(len(y)), np.where(kept, y, 0)])
    p, q = _softmax(t / TEMPERATURE), _softmax(s / TEMPERATURE)
    kl = TEMPERATURE**2 * (p * (np.log(p) - np.log(q))).sum(-1).mean()

    logs = distiller.evaluate(x, y, batch_size=len(x), verbose=0,
                              return_dict=True)
    logs = {name: float(value) for name, value in logs.items()}

    assert logs["student_loss"] == pytest.approx(ce[kept].mean(), abs=1e-5)
    assert logs["distillation_loss"] == pytest.approx(kl, abs=1e-5)
    assert logs["loss"] == pytest.approx(
        ALPHA * ce[kept].mean() + (1 - ALPHA) * kl, abs=1e-5
    )
    # The unlabelled examples count for nothing in the accuracy.
    accuracy = (s.argmax(-1) == y)[kept].mean()
    assert logs["accuracy"] == pytest.approx(accuracy, abs=1e-6)


def _numpy_losses(student_logits, teacher_logits, y, temperature, alpha):
    """`(CE over labelled, T² · KL, α · CE + (1 − α) · T² · KL)` in NumPy."""
    s = np.asarray(student_logits, "float64")
    t = np.asarray(teacher_logits, "float64")
    kept = y >= 0
    ce = -np.log(_softmax(s)[np.arange(len(y)), np.where(kept, y, 0)])[kept]
    p, q = _softmax(t / temperature), _softmax(s / temperature)
    kl = temperature**2 * (p * (np.log(p) - np.log(q))).sum(-1).mean()
    return ce.mean(), kl, alpha * ce.mean() + (1 - alpha) * kl


@pytest.mark.parametrize(
    "temperature, alpha", [(1.0, 0.5), (4.0, 0.1), (8.0, 0.9), (0.5, 0.0)]
)
def test_the_loss_and_its_step_equal_numpy_for_each_temperature_and_alpha(
    temperature, alpha
):
    x, y = _data()
    y[::5] = tfkd.losses.UNLABELLED
    teacher, student = _dense(seed=1), _dense(seed=2)
    distiller = _distiller(teacher, student, temperature, alpha)
    kernel, bias = (np.asarray(v, "float64") for v in student.get_weights())
    t = teacher.predict(x, verbose=0)
    ce, kl, total = _numpy_losses(student.predict(x, verbose=0), t, y,
                                  temperature, alpha)

    logs = distiller.evaluate(x, y, batch_size=len(x), verbose=0,
                              return_dict=True)
    distiller.fit(x, y, batch_size=len(x), epochs=1, shuffle=False,
                  verbose=0)

    assert float(logs["student_loss"]) == pytest.approx(ce, abs=1e-5)
    assert float(logs["distillation_loss"]) == pytest.approx(kl, rel=1e-5,
                                                             abs=1e-5)
    assert float(logs["loss"]) == pytest.approx(total, rel=1e-5, abs=1e-5)
    expected = _numpy_step(kernel, bias, x, y, np.asarray(t, "float64"),
                           temperature=temperature, alpha=alpha)
    for actual, wanted in zip(student.get_weights(), expected):
        np.testing.assert_allclose(actual, wanted, atol=1e-5)


@pytest.mark.parametrize("teacher_outputs", ["probabilities", "auto"])
def test_a_probability_teacher_trains_as_its_logit_twin(teacher_outputs):
    x, y = _data(n=32)
    logit_teacher = _dense(seed=1)
    probability_teacher = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3),
         keras.layers.Softmax()]
    )
    probability_teacher.layers[0].set_weights(logit_teacher.get_weights())
    twins = [
        _distiller(logit_teacher, _dense(seed=2)),
        _distiller(probability_teacher, _dense(seed=2),
                   teacher_outputs=teacher_outputs),
    ]

    for distiller in twins:
        distiller.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)

    assert twins[1].resolved_teacher_outputs == "probabilities"
    for a, b in zip(*(d.student.get_weights() for d in twins)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_fit_lowers_the_loss_and_reports_every_metric_by_name():
    x, y = _data(n=64)
    teacher = _dense(seed=1)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(6, activation="tanh", name="hidden")(inputs)
    student = keras.Model(inputs, keras.layers.Dense(3, name="head")(hidden))
    distiller = _distiller(teacher, student, extra_losses=[tfkd.DIST(weight=0.5)])

    history = distiller.fit(x, y, batch_size=16, epochs=8, verbose=0)

    assert sorted(history.history) == [
        "accuracy", "dist_loss", "distillation_loss", "loss", "student_loss",
    ]
    assert all(value > 0.0 for value in history.history["dist_loss"])
    losses = history.history["loss"]
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(
        distiller.predict(x, verbose=0), student.predict(x, verbose=0),
        atol=1e-6,
    )


def test_cached_teacher_logits_train_as_the_teacher_does():
    x, y = _data()
    teacher = _dense(seed=1)
    cached = teacher.predict(x, verbose=0)
    online = _distiller(teacher, _dense(seed=2))
    offline = _distiller(None, _dense(seed=2))

    online.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    offline.fit(x, {"labels": y, "teacher_logits": cached}, batch_size=8,
                epochs=2, shuffle=False, verbose=0)

    for a, b in zip(online.student.get_weights(), offline.student.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


def _functional(width, seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(width, name="hidden")(inputs)
    normed = keras.layers.BatchNormalization(name="bn")(hidden)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(normed))


def test_a_feature_term_trains_its_connector_and_batchnorm_statistics_move():
    x, y = _data(n=32)
    teacher, student = _functional(8, seed=1), _functional(5, seed=2)
    hint = tfkd.FitNetHint("hidden", "hidden", weight=1.0)
    distiller = _distiller(teacher, student, extra_losses=[hint])
    connector = [w.copy() for w in hint.get_weights()]
    moving_mean = student.get_layer("bn").moving_mean.numpy().copy()

    history = distiller.fit(x, y, batch_size=8, epochs=2, verbose=0)

    assert "fitnet_loss" in history.history
    assert np.all(np.isfinite(history.history["fitnet_loss"]))
    assert any(
        not np.allclose(a, b) for a, b in zip(connector, hint.get_weights())
    )
    assert not np.allclose(moving_mean, student.get_layer("bn").moving_mean)


def test_an_ensemble_and_an_augmentation_train():
    x, y = _data(n=32)
    augmentation = keras.layers.GaussianNoise(0.1, seed=3)
    distiller = _distiller(
        [_dense(seed=1), _dense(seed=3)], _dense(seed=2),
        augmentation=augmentation,
    )
    before = [np.asarray(v) for v in augmentation.non_trainable_variables]

    history = distiller.fit(x, y, batch_size=8, epochs=2, verbose=0)

    assert np.all(np.isfinite(history.history["loss"]))
    # The noise's seed moved on: each step drew a new view.
    after = [np.asarray(v) for v in augmentation.non_trainable_variables]
    assert before and any(not np.array_equal(a, b) for a, b in zip(before, after))


def _conv(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x))


def test_crd_updates_its_memory_and_mixup_trains():
    rng = np.random.default_rng(0)
    x = rng.random((32, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, size=32)
    crd = tfkd.CRD("pool", "pool", num_data=32, feat_dim=4, num_negatives=8)
    distiller = _distiller(_conv(1), _conv(2), extra_losses=[crd],
                           mixing=keras.layers.MixUp(seed=1))
    memory = [np.asarray(v).copy() for v in crd.non_trainable_variables]

    history = distiller.fit(x, {"labels": y, "index": np.arange(32)},
                            batch_size=8, verbose=0)

    assert np.all(np.isfinite(history.history["crd_loss"]))
    moved = [np.asarray(v) for v in crd.non_trainable_variables]
    assert any(not np.allclose(a, b) for a, b in zip(memory, moved))


def test_crd_on_a_bank_too_large_for_dense_scores_gathers_its_rows():
    # 64 rows > 8 x (1 + 2) drawn rows: the gather path, not the dense one
    # (`tfkd.terms.contrastive.DENSE_SCORES_MAX_ROWS_PER_SAMPLE`).
    rng = np.random.default_rng(0)
    x = rng.random((64, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, size=64)
    crd = tfkd.CRD("pool", "pool", num_data=64, feat_dim=4, num_negatives=2)
    distiller = _distiller(_conv(1), _conv(2), extra_losses=[crd])
    memory = [keras.ops.convert_to_numpy(v).copy()
              for v in (crd.student_memory, crd.teacher_memory)]

    history = distiller.fit(x, {"labels": y, "index": np.arange(64)},
                            batch_size=8, verbose=0)

    assert np.all(np.isfinite(history.history["crd_loss"]))
    for before, bank in zip(memory, (crd.student_memory, crd.teacher_memory)):
        assert not np.allclose(before, keras.ops.convert_to_numpy(bank))


def test_a_saved_distiller_loads_and_trains_on(tmp_path):
    x, y = _data()
    distiller = _distiller(_dense(seed=1), _dense(seed=2),
                           extra_losses=[tfkd.DIST(weight=0.5)])
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = str(tmp_path / "distiller.keras")

    distiller.save(path)
    loaded = keras.saving.load_model(path)

    assert loaded.get_config()["temperature"] == TEMPERATURE
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), distiller.predict(x, verbose=0),
        atol=1e-6,
    )
    history = loaded.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


#: The pre-flight checks read the first 64 examples (`tfkd.preflight`);
#: the guard sees every batch after them: batch 9 of 8 examples.
BAD_INDEX = 66


def _with_nan_in_ninth_batch(x):
    x = x.copy()
    x[BAD_INDEX] = np.nan
    return x


def test_a_non_finite_batch_raises_naming_it_and_updates_nothing():
    x, y = _data(n=80)
    reference = _distiller(_dense(seed=1), _dense(seed=2))
    reference.fit(x[:64], y[:64], batch_size=8, shuffle=False, verbose=0)
    distiller = _distiller(_dense(seed=1), _dense(seed=2))

    with pytest.raises(tfkd.NonFiniteLossError, match="epoch 1, batch 9 "):
        distiller.fit(_with_nan_in_ninth_batch(x), y, batch_size=8,
                      shuffle=False, verbose=0)

    # The weights are those after batch 8.
    for a, b in zip(distiller.student.get_weights(),
                    reference.student.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_skip_leaves_out_a_non_finite_batch_and_counts_it():
    x, y = _data(n=80)
    x = _with_nan_in_ninth_batch(x)
    student = _functional(5, seed=2)
    distiller = _distiller(_dense(seed=1), student, on_nonfinite="skip")

    history = distiller.fit(x, y, batch_size=8, epochs=2, shuffle=False,
                            verbose=0)

    assert history.history["nonfinite_batches"] == [1.0, 1.0]  # per epoch
    assert distiller.metrics_names == [
        "loss", "compile_metrics", "student_loss", "distillation_loss"
    ]
    assert np.all(np.isfinite(history.history["loss"]))
    # The NaN batch changed nothing, BatchNorm statistics included: a run
    # on the other batches agrees.
    reference_student = _functional(5, seed=2)
    reference = _distiller(_dense(seed=1), reference_student)
    keep = np.r_[0:64, 72:80]
    reference.fit(x[keep], y[keep], batch_size=8, epochs=2, shuffle=False,
                  verbose=0)
    for a, b in zip(student.get_weights(), reference_student.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_a_label_out_of_range_after_the_first_batch_raises():
    x, y = _data(n=80)
    y[BAD_INDEX] = 7  # the student has 3 classes
    distiller = _distiller(_dense(seed=1), _dense(seed=2))

    with pytest.raises(tfkd.InvalidLabelsError, match="batch 9 .*label of 7"):
        distiller.fit(x, y, batch_size=8, shuffle=False, verbose=0)
    with pytest.raises(tfkd.InvalidLabelsError, match="evaluation data, batch 9 "):
        distiller.evaluate(x, y, batch_size=8, verbose=0)


_DATA_PARALLEL_RUN = """
import json, sys
import jax, keras, numpy as np
sys.path.insert(0, "tests")
import test_distiller_backends as T

x, y = T._data(n=64)
weights = []
for devices in (jax.devices()[:1], jax.devices()):
    keras.backend.clear_session()
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=devices)
    )
    student = T._functional(5, seed=2)
    distiller = T._distiller(T._dense(seed=1), student)
    distiller.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    weights.append(student.get_weights())
print(json.dumps({
    "devices": len(jax.devices()),
    "difference": max(
        float(np.abs(a - b).max()) for a, b in zip(*weights)
    ),
}))
"""


def test_data_parallel_on_two_devices_equals_one_device():
    # keras.distribution's DataParallel shards each batch over the devices
    # and runs the step of `tfkd.jax_step` as one program: BatchNorm and
    # the loss see the global batch, so the weights equal one device's.
    if keras.backend.backend() != "jax":
        pytest.skip("keras.distribution.DataParallel is tested on JAX")
    import json
    import os
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[1]
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        PYTHONPATH=str(root),
    )
    result = subprocess.run(
        [sys.executable, "-c", _DATA_PARALLEL_RUN], cwd=root, env=env,
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["devices"] == 2
    assert report["difference"] < 1e-5


def test_a_backend_without_a_training_step_is_refused_by_name():
    from tfkd import distiller as distiller_module

    for backend in ("tensorflow", "jax", "torch"):
        distiller_module.check_training_backend(backend)
    with pytest.raises(ValueError, match=r"backend='numpy'"):
        distiller_module.check_training_backend("numpy")
