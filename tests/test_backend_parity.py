"""One epoch on TensorFlow, JAX and PyTorch gives the same student (issue #23).

Listed in `conftest.BACKEND_INDEPENDENT_FILES`, so it runs on every backend
(`make test-latest`, `make test-jax`, `make test-torch`). The expected
weights are TensorFlow's, saved with the teacher cache TensorFlow built in
`tests/fixtures/backend_parity/` by `tests/fixtures/make_backend_parity.py`
(an explicit command; no test writes them). On TensorFlow the tests check
that TensorFlow still gives them, so the fixture cannot go stale unseen.

Every run starts from the same NumPy initial weights and sees the same
batches in the same order; SGD, so nothing but the arithmetic can differ.
Tolerance: 1e-4 off TensorFlow, 1e-6 on TensorFlow itself. The measured
differences are float32 rounding, each backend ordering its sums its own
way: at most 1.6e-6 on PyTorch 2.13 and 1.1e-6 on JAX 0.10.2 (Keras 3.15.1,
2026-12-03) on weights of order 1 after 4 steps, so 1e-4 leaves room for
other kernels and still catches a wrong gradient (a term's step moves the
weights by about 1e-2).
"""

import os

import keras
import numpy as np
import pytest

import tfkd

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "backend_parity")
EXPECTED = os.path.join(FIXTURE, "expected.npz")
CACHE = os.path.join(FIXTURE, "cache")

N, BATCH, CLASSES = 64, 16, 3
TEMPERATURE, ALPHA, LEARNING_RATE = 2.0, 0.3, 0.1
TOLERANCE = 1e-6 if keras.backend.backend() == "tensorflow" else 1e-4


def data():
    """`(x, y, sample_weight)`: 8-bit images in [0, 1], some unlabelled."""
    rng = np.random.default_rng(0)
    # uint8 / 255: stored bit-exactly in the cache.
    x = (rng.integers(0, 256, size=(N, 4, 4, 1)) / 255.0).astype("float32")
    y = rng.integers(0, CLASSES, size=N).astype("int32")
    y[::5] = tfkd.losses.UNLABELLED
    sample_weight = rng.uniform(0.5, 1.5, size=N).astype("float32")
    return x, y, sample_weight


def _set_numpy_weights(model, seed):
    """Every kernel and bias from NumPy: the same on each backend.

    `model` is a model or a term (FitNets connectors); BatchNorm keeps its
    deterministic initial values.
    """
    rng = np.random.default_rng(seed)
    layers = [model] if isinstance(model, tfkd.DistillationTerm) else model.layers
    for layer in layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            continue
        layer.set_weights([
            rng.normal(0.0, 0.5 if len(w.shape) > 1 else 0.1, size=w.shape)
            .astype("float32")
            for w in layer.get_weights()
        ])
    return model


def teacher():
    """A linear teacher over the flattened image (logits)."""
    model = keras.Sequential(
        [keras.Input((4, 4, 1)), keras.layers.Flatten(),
         keras.layers.Dense(CLASSES)],
        name="parity_teacher",
    )
    return _set_numpy_weights(model, seed=1)


def student():
    """Flatten, Dense(8, tanh), BatchNorm, Dense: weights and statistics."""
    inputs = keras.Input((4, 4, 1))
    h = keras.layers.Flatten()(inputs)
    h = keras.layers.Dense(8, activation="tanh", name="hidden")(h)
    h = keras.layers.BatchNormalization(name="bn")(h)
    outputs = keras.layers.Dense(CLASSES, name="head")(h)
    return _set_numpy_weights(keras.Model(inputs, outputs), seed=2)


def distiller(teacher_model, student_model):
    """The Distiller both runs train: T = 2, α = 0.3, plain SGD."""
    model = tfkd.Distiller(
        teacher=teacher_model, student=student_model, temperature=TEMPERATURE,
        alpha=ALPHA, teacher_outputs="logits",
        extra_losses=[tfkd.DIST(weight=0.5)],
    )
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE),
                  metrics=["accuracy"])
    return model


def train_online():
    """Student weights (BatchNorm statistics included) after one epoch."""
    x, y, sample_weight = data()
    student_model = student()
    distiller(teacher(), student_model).fit(
        x, y, sample_weight=sample_weight, batch_size=BATCH, epochs=1,
        shuffle=False, verbose=0,
    )
    return student_model.get_weights()


def _conv_model(filters, width, seed, name):
    """Conv2D(filters) -> pooling -> Dense(width, tanh) -> 3 logits."""
    inputs = keras.Input((4, 4, 1))
    h = keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                            name="conv")(inputs)
    h = keras.layers.GlobalAveragePooling2D()(h)
    h = keras.layers.Dense(width, activation="tanh", name="hidden")(h)
    outputs = keras.layers.Dense(CLASSES, name="head")(h)
    return _set_numpy_weights(keras.Model(inputs, outputs, name=name), seed)


def every_term():
    """Every deterministic term, on the conv maps, the hidden layer or the logits.

    CRD is left out: its negatives and initial memory come from each
    backend's own random generator (its updates are tested on every
    backend in `test_distiller_backends.py`).
    """
    return [
        tfkd.FitNetHint("conv", "conv", weight=0.5),
        tfkd.AttentionTransfer("conv", "conv", weight=10.0),
        tfkd.RKDDistance("hidden", "hidden", weight=1.0),
        tfkd.RKDAngle("hidden", "hidden", weight=1.0),
        tfkd.SP("hidden", "hidden", weight=10.0),
        tfkd.PKT("conv", "conv", weight=1.0),
        tfkd.DecoupledKD(weight=0.5),
        tfkd.DIST(weight=0.5),
        tfkd.WTTM(weight=0.5),
    ]


def train_with_every_term():
    """`(weights, losses)` after one epoch with `every_term`.

    The student's and the connector's weights, and `{name: epoch mean}` of
    every loss `fit` logs (each term's under its name).
    """
    x, y, sample_weight = data()
    student_model = _conv_model(4, 6, seed=4, name="terms_student")
    terms = every_term()
    model = tfkd.Distiller(
        teacher=_conv_model(6, 8, seed=3, name="terms_teacher"),
        student=student_model, temperature=TEMPERATURE, alpha=ALPHA,
        teacher_outputs="logits", extra_losses=terms,
    )
    _set_numpy_weights(terms[0], seed=5)  # the FitNets connector
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE))
    history = model.fit(x, y, sample_weight=sample_weight, batch_size=BATCH,
                        epochs=1, shuffle=False, verbose=0)
    losses = {name: values[0] for name, values in history.history.items()}
    return student_model.get_weights() + terms[0].get_weights(), losses


def train_from_cache(path=CACHE):
    """Student weights after one epoch on the cache's batches, in order."""
    cache = tfkd.TeacherCache.open(path, verbose=0)
    student_model = student()
    distiller(None, student_model).fit(
        cache.dataset(BATCH, shuffle=False), epochs=1, shuffle=False,
        verbose=0,
    )
    return student_model.get_weights()


def _expected(prefix):
    with np.load(EXPECTED) as saved:
        count = int(saved[f"{prefix}_count"])
        return [saved[f"{prefix}_{i}"] for i in range(count)]


def _assert_equal_weights(actual, expected):
    assert len(actual) == len(expected)
    for a, b in zip(actual, expected):
        np.testing.assert_allclose(a, b, rtol=0.0, atol=TOLERANCE)


def test_one_epoch_gives_tensorflows_weights():
    _assert_equal_weights(train_online(), _expected("online"))


def test_a_cache_built_under_tensorflow_trains_as_under_tensorflow():
    # The cache's batches are the online run's without sample weights; its
    # teacher logits are the teacher's, stored in float32.
    _assert_equal_weights(train_from_cache(), _expected("cached"))


def test_every_term_gives_tensorflows_weights_and_losses():
    weights, losses = train_with_every_term()

    _assert_equal_weights(weights, _expected("terms"))
    # A term's value may be off where its gradient hardly moves the
    # weights: the logged values must agree too.
    with np.load(EXPECTED) as saved:
        expected = dict(zip(saved["term_loss_names"], saved["term_losses"]))
    assert sorted(losses) == sorted(expected)
    assert len(expected) == len(every_term()) + 3  # loss, student, KL
    for name, value in losses.items():
        assert value == pytest.approx(expected[name], rel=1e-4), name


def test_the_expected_weights_moved_from_the_initial_ones():
    # A fixture of untrained weights would make the parity trivial.
    terms_student = _conv_model(4, 6, seed=4, name="terms_student")
    for prefix, initial in (
        ("online", student().get_weights()),
        ("cached", student().get_weights()),
        ("terms", terms_student.get_weights()),
    ):
        moved = [
            np.abs(a - b).max() for a, b in zip(_expected(prefix), initial)
        ]
        assert max(moved) > 1e-2, prefix
