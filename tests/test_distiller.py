"""tfkd.Distiller: behaviour on tiny real models and data."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tfkd import losses

FEATURES, CLASSES = 6, 4


def _data(n=128, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, FEATURES)).astype("float32")
    y = (x[:, :CLASSES].argmax(axis=-1)).astype("int32")
    return x, y


def _mlp(name, hidden=16, classes=CLASSES, softmax=False, seed=0):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((FEATURES,)), keras.layers.Dense(hidden, activation="relu")]
    layers.append(keras.layers.Dense(classes, activation="softmax" if softmax else None))
    return keras.Sequential(layers, name=name)


def _student(seed=1):
    return _mlp("student", hidden=8, seed=seed)


def _distiller(teacher=None, student=None, **kwargs):
    distiller = tfkd.Distiller(
        teacher=teacher if teacher is not None else _mlp("teacher"),
        student=student if student is not None else _student(),
        **kwargs,
    )
    distiller.compile(optimizer=keras.optimizers.Adam(0.01), metrics=["accuracy"])
    return distiller


def test_call_predict_and_evaluate_are_the_student():
    x, y = _data()
    distiller = _distiller()
    np.testing.assert_allclose(
        np.asarray(distiller(x)), np.asarray(distiller.student(x)), rtol=1e-6
    )
    np.testing.assert_allclose(
        distiller.predict(x, verbose=0),
        distiller.student.predict(x, verbose=0),
        rtol=1e-6,
    )
    # A teacher output would differ: the check catches swapped models.
    assert not np.allclose(np.asarray(distiller(x)), np.asarray(distiller.teacher(x)))


def test_fit_reports_losses_and_metrics_and_leaves_teacher_unchanged():
    x, y = _data()
    distiller = _distiller()
    teacher_before = [w.copy() for w in distiller.teacher.get_weights()]
    student_before = [w.copy() for w in distiller.student.get_weights()]
    history = distiller.fit(x, y, batch_size=32, epochs=2, verbose=0,
                            validation_data=(x, y))
    assert set(history.history) == {
        "loss", "student_loss", "distillation_loss", "accuracy",
        "val_loss", "val_student_loss", "val_distillation_loss", "val_accuracy",
    }
    for before, after in zip(teacher_before, distiller.teacher.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert any(
        not np.array_equal(b, a)
        for b, a in zip(student_before, distiller.student.get_weights())
    )
    assert distiller.teacher.trainable is False
    assert len(distiller.trainable_weights) == len(distiller.student.trainable_weights)


def test_reported_losses_match_the_formula():
    x, y = _data(64)
    distiller = _distiller(temperature=3.0, alpha=0.3)
    results = distiller.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    s = distiller.student(x)
    t = distiller.teacher(x)
    hard = float(np.mean(losses.hard_target_loss(y, s)))
    soft = float(np.mean(losses.soft_target_loss(t, s, 3.0)))
    np.testing.assert_allclose(results["student_loss"], hard, rtol=1e-5)
    np.testing.assert_allclose(results["distillation_loss"], soft, rtol=1e-5)
    np.testing.assert_allclose(results["loss"], 0.3 * hard + 0.7 * soft, rtol=1e-5)


def test_sample_weights_are_honoured():
    x, y = _data(64)
    weights = np.where(np.arange(64) % 2 == 0, 1.0, 0.0).astype("float32")
    distiller = _distiller(alpha=0.5)
    results = distiller.evaluate(
        x, y, sample_weight=weights, batch_size=64, verbose=0, return_dict=True
    )
    s, t = distiller.student(x), distiller.teacher(x)
    per_example = np.asarray(losses.knowledge_distillation_loss(y, s, t, 4.0, 0.5))
    # Keras's "sum_over_batch_size": weighted sum / batch size.
    np.testing.assert_allclose(
        results["loss"], np.sum(per_example * weights) / 64, rtol=1e-5
    )


def test_one_hot_labels_train_like_sparse_labels():
    x, y = _data()
    runs = []
    for labels in (y, np.eye(CLASSES, dtype="float32")[y]):
        distiller = _distiller(teacher=_mlp("teacher"), student=_student())
        distiller.fit(x, labels, batch_size=32, epochs=1, shuffle=False, verbose=0)
        runs.append(distiller.student.get_weights())
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("teacher_outputs", ["auto", "probabilities"])
def test_probability_teacher_trains_like_its_logit_twin(teacher_outputs):
    x, y = _data()
    logit_teacher = _mlp("teacher", seed=3)
    probability_teacher = keras.Sequential(
        [logit_teacher, keras.layers.Softmax()], name="probability_teacher"
    )
    runs = {}
    for name, teacher, kind in (
        ("logits", logit_teacher, "logits"),
        ("probabilities", probability_teacher, teacher_outputs),
    ):
        distiller = _distiller(teacher=teacher, student=_student(), teacher_outputs=kind)
        distiller.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
        runs[name] = distiller
    assert runs["probabilities"].resolved_teacher_outputs == "probabilities"
    for a, b in zip(
        runs["logits"].student.get_weights(),
        runs["probabilities"].student.get_weights(),
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_auto_resolves_logit_teachers_as_logits():
    x, y = _data()
    distiller = _distiller()
    distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert distiller.resolved_teacher_outputs == "logits"


def test_probabilities_are_detected_inside_the_step_without_preflight():
    """A generator cannot be peeked at; the step decides per batch."""
    x, y = _data()
    logit_teacher = _mlp("teacher", seed=3)
    probability_teacher = keras.Sequential([logit_teacher, keras.layers.Softmax()])
    weights = {}
    for name, teacher in (("logits", logit_teacher), ("probs", probability_teacher)):
        distiller = _distiller(teacher=teacher, student=_student())

        def batches():
            for start in range(0, len(x), 32):
                yield x[start:start + 32], y[start:start + 32]

        distiller.fit(batches(), epochs=1, verbose=0)
        assert distiller.resolved_teacher_outputs is None
        weights[name] = distiller.student.get_weights()
    for a, b in zip(weights["logits"], weights["probs"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_teacher_with_more_classes_uses_class_indices():
    x, y = _data()
    big_teacher = _mlp("teacher", classes=20)
    indices = [7, 3, 12, 0]
    distiller = _distiller(teacher=big_teacher, teacher_class_indices=indices)
    distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)
    t = distiller.teacher_logits(x[:8])
    np.testing.assert_allclose(
        np.asarray(t), np.asarray(big_teacher(x[:8]))[:, indices], rtol=1e-6
    )


def test_class_count_mismatch_is_an_error_before_training():
    with pytest.raises(ValueError, match="teacher_class_indices.*20 classes.*4"):
        tfkd.Distiller(teacher=_mlp("teacher", classes=20), student=_student())
    with pytest.raises(ValueError, match="teacher_class_indices"):
        tfkd.Distiller(
            teacher=_mlp("teacher", classes=20),
            student=_student(),
            teacher_class_indices=[1, 2, 3],
        )
    with pytest.raises(ValueError, match="below the teacher's 20 classes"):
        tfkd.Distiller(
            teacher=_mlp("teacher", classes=20),
            student=_student(),
            teacher_class_indices=[1, 2, 3, 25],
        )


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        ({"temperature": 0}, ValueError, r"`temperature`. Expected a float in \[0.01, 100\].* Received: temperature=0"),
        ({"temperature": -1.0}, ValueError, r"temperature=-1.0"),
        ({"temperature": float("nan")}, ValueError, r"`temperature`"),
        ({"alpha": 1.5}, ValueError, r"`alpha`. Expected a float in \[0, 1\]. Received: alpha=1.5"),
        ({"alpha": "0.1"}, TypeError, r"`alpha`"),
        ({"teacher_outputs": "softmax"}, ValueError, r"`teacher_outputs`.*'auto', 'logits', 'probabilities'.*softmax"),
        ({"teacher_class_indices": [1, 1, 2, 3]}, ValueError, r"distinct"),
        ({"augmentation": "flip"}, TypeError, r"`augmentation`"),
    ],
)
def test_bad_hyper_parameters_are_named(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        tfkd.Distiller(teacher=_mlp("teacher"), student=_student(), **kwargs)


def test_bad_models_are_named():
    student = _student()
    with pytest.raises(ValueError, match="`teacher`.*teacher is student"):
        tfkd.Distiller(teacher=student, student=student)
    with pytest.raises(TypeError, match="`student`.*keras.Model.*Received"):
        tfkd.Distiller(teacher=_mlp("teacher"), student=lambda x: x)
    with pytest.raises(TypeError, match="`teacher`"):
        tfkd.Distiller(teacher="resnet50", student=student)
    with pytest.raises(ValueError, match="`student`.*logits.*softmax"):
        tfkd.Distiller(teacher=_mlp("teacher"), student=_mlp("s", softmax=True))
    wide_teacher = keras.Sequential([keras.Input((FEATURES + 1,)), keras.layers.Dense(CLASSES)])
    with pytest.raises(ValueError, match=r"`teacher`.*\(None, 6\).*\(None, 7\)"):
        tfkd.Distiller(teacher=wide_teacher, student=student)
    with pytest.raises(TypeError):
        tfkd.Distiller(_mlp("teacher"), student)  # keyword-only


def test_compile_refuses_a_loss():
    distiller = tfkd.Distiller(teacher=_mlp("teacher"), student=_student())
    with pytest.raises(ValueError, match="`loss`.*alpha"):
        distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy")


def test_labels_out_of_range_fail_before_any_step():
    x, y = _data()
    distiller = _distiller()
    before = [w.copy() for w in distiller.student.get_weights()]
    with pytest.raises(ValueError, match=r"class ids in \[0, 3\].*Received: labels from 0 to 9"):
        distiller.fit(x, np.where(y == 1, 9, y), epochs=1, verbose=0)
    for b, a in zip(before, distiller.student.get_weights()):
        np.testing.assert_array_equal(b, a)


def test_data_the_teacher_cannot_take_fails_before_training():
    """A subclassed teacher (no symbolic shapes) is checked on the data."""

    class Picky(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(CLASSES)
            self.dense.build((None, FEATURES + 2))

        def call(self, x):
            return self.dense(x)

    x, y = _data()
    distiller = _distiller(teacher=Picky())
    with pytest.raises(ValueError, match="`teacher`.*failed on a batch of shape"):
        distiller.fit(x, y, epochs=1, verbose=0)


def test_cached_teacher_logits_replace_the_teacher():
    x, y = _data()
    teacher = _mlp("teacher", seed=3)
    logits = teacher.predict(x, verbose=0)
    dataset = tf.data.Dataset.from_tensor_slices(
        (x, tfkd.attach_teacher_logits(y, logits))
    ).batch(32)
    cached = tfkd.Distiller(teacher=None, student=_student())
    cached.compile(optimizer=keras.optimizers.Adam(0.01), metrics=["accuracy"])
    cached.fit(dataset, epochs=2, verbose=0)

    online = _distiller(teacher=teacher, student=_student())
    online.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(cached.student.get_weights(), online.student.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # Evaluating on plain labels without a teacher reports the hard loss.
    results = cached.evaluate(x, y, verbose=0, return_dict=True)
    np.testing.assert_allclose(results["loss"], results["student_loss"])


def test_no_teacher_signal_is_an_error():
    x, y = _data()
    distiller = tfkd.Distiller(teacher=None, student=_student())
    distiller.compile(optimizer="adam")
    with pytest.raises(ValueError, match="teacher=None.*teacher_logits"):
        distiller.fit(x, y, epochs=1, verbose=0)


def test_augmentation_is_shared_and_refused_on_cached_logits():
    # The first layer of each model stores the batch it received (see the
    # mixing tests below): both must hold the same augmented batch.
    x, y = _images()
    noise = keras.layers.GaussianNoise(0.1, seed=0)
    distiller = tfkd.Distiller(
        teacher=_image_model("teacher", 0),
        student=_image_model("student", 1),
        augmentation=noise,
    )
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))
    distiller.fit(x, y, batch_size=IMAGE_BATCH, epochs=1, shuffle=False, verbose=0)
    seen_by_teacher = distiller.teacher.layers[0].seen.numpy()
    seen_by_student = distiller.student.layers[0].seen.numpy()
    assert not np.allclose(seen_by_student, x, atol=1e-2)  # it was augmented
    np.testing.assert_array_equal(seen_by_teacher, seen_by_student)

    x, y = _data()
    cached = tfkd.Distiller(teacher=None, student=_student(), augmentation=noise)
    cached.compile(optimizer="adam")
    dataset = tf.data.Dataset.from_tensor_slices(
        (x, tfkd.attach_teacher_logits(y, np.zeros((len(x), CLASSES), "float32")))
    ).batch(32)
    with pytest.raises(ValueError, match="`augmentation`.*Beyer"):
        cached.fit(dataset, epochs=1, verbose=0)


def test_keras_file_round_trip(tmp_path):
    x, y = _data()
    distiller = _distiller(
        teacher=_mlp("teacher", classes=6),
        temperature=2.5,
        alpha=0.25,
        teacher_class_indices=[5, 4, 3, 2],
        augmentation=keras.layers.GaussianNoise(0.05),
    )
    distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)
    path = tmp_path / "distiller.keras"
    distiller.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, tfkd.Distiller)
    assert restored.temperature == 2.5 and restored.alpha == 0.25
    assert restored.teacher_class_indices == (5, 4, 3, 2)
    np.testing.assert_allclose(
        restored.predict(x, verbose=0), distiller.predict(x, verbose=0), rtol=1e-6
    )
    np.testing.assert_allclose(
        np.asarray(restored.teacher_logits(x)),
        np.asarray(distiller.teacher_logits(x)),
        rtol=1e-6,
    )
    restored.fit(x, y, batch_size=32, epochs=1, verbose=0)  # still trainable


def test_student_saved_alone_loads_without_tfkd(tmp_path):
    x, y = _data()
    distiller = _distiller()
    distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)
    path = tmp_path / "student.keras"
    distiller.student.save(path)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", distiller.student.predict(x, verbose=0))
    script = (
        "import sys, numpy as np, keras\n"
        "model = keras.saving.load_model(sys.argv[1])\n"
        "assert 'tfkd' not in sys.modules\n"
        "got = model.predict(np.load(sys.argv[2]), verbose=0)\n"
        "np.testing.assert_allclose(got, np.load(sys.argv[3]), rtol=1e-6)\n"
    )
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [sys.executable, "-c", script, str(path), str(tmp_path / "x.npy"),
         str(tmp_path / "expected.npy")],
        check=True, cwd=tmp_path, env=environment,
    )


def test_jit_compile_gives_the_same_training():
    x, y = _data()
    weights = []
    for jit in (False, True):
        distiller = tfkd.Distiller(teacher=_mlp("teacher"), student=_student())
        distiller.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=jit)
        distiller.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
        weights.append(distiller.student.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def _train_under_policy(policy):
    """3 epochs of 4 SGD steps, same seed and batches; (weights, losses)."""
    keras.mixed_precision.set_dtype_policy(policy)
    x, y = _data()
    teacher, student = _mlp("teacher"), _student()
    # Variables are float32 under every policy: the same initial weights.
    distiller = tfkd.Distiller(teacher=teacher, student=student)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    if policy == "mixed_float16":
        assert student.layers[-1].compute_dtype == "float16"
        assert isinstance(distiller.optimizer, keras.optimizers.LossScaleOptimizer)
    initial = [w.copy() for w in student.get_weights()]
    history = distiller.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0)
    keras.mixed_precision.set_dtype_policy("float32")
    return initial, student.get_weights(), np.asarray(history.history["loss"])


# Unit roundoff of each policy's compute dtype.
_ROUNDOFF = {"mixed_float16": 2.0**-11, "mixed_bfloat16": 2.0**-8}


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_trains_like_float32(policy):
    """Mixed precision follows the float32 run within its rounding.

    Only the forward and backward passes run in 16 bits (variables, the
    loss and the softmaxes stay float32), so each step's error is a few
    roundoffs of the compute dtype, not a different step. Tolerance: 8
    roundoffs, on the loss of each epoch (relative) and on the final
    weights (absolute; the weights move by about 0.17, SGD keeps the
    error proportional to the gradient's). Measured on 2 CPU cores:
    float16 1.1e-4 / 4e-5, bfloat16 8e-3 / 1e-3 (loss / weights).
    """
    start, reference, reference_losses = _train_under_policy("float32")
    initial, weights, losses_ = _train_under_policy(policy)
    tolerance = 8 * _ROUNDOFF[policy]
    for a, b in zip(start, initial):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(losses_, reference_losses, rtol=tolerance)
    for a, b in zip(weights, reference):
        np.testing.assert_allclose(a, b, rtol=0, atol=tolerance)
    moved = max(np.abs(a - b).max() for a, b in zip(start, reference))
    assert moved > 4 * tolerance  # the comparison is not vacuous


# -- unlabelled data -----------------------------------------------------------


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _reference_losses(labels, student_logits, teacher_logits, temperature,
                      alpha, sample_weight=None):
    """The Distiller docstring's formula in float64 NumPy.

    `labels` are class ids (-1 unlabelled) or float rows (mixed one-hot;
    a row of zeros is unlabelled). Returns `(total, hard, soft)`.
    """
    s = np.asarray(student_logits, np.float64)
    t = np.asarray(teacher_logits, np.float64)
    n = len(s)
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, np.float64)
    labels = np.asarray(labels)
    if labels.ndim == 2:  # target rows
        mask = labels.sum(axis=-1) > 0
        ce = -(labels * _log_softmax(s)).sum(axis=-1)
    else:
        mask = labels != -1
        ce = np.zeros(n)
        ce[mask] = -_log_softmax(s)[mask, labels[mask]]
    hard = np.sum(w * mask * ce) / max(mask.sum(), 1)
    log_pt, log_ps = _log_softmax(t / temperature), _log_softmax(s / temperature)
    kl = (np.exp(log_pt) * (log_pt - log_ps)).sum(axis=-1)
    soft = np.sum(w * temperature**2 * kl) / n
    return alpha * hard + (1 - alpha) * soft, hard, soft


def _some_unlabelled(y, every=3):
    labels = y.copy()
    labels[::every] = -1  # examples 0, 3, 6, ... are unlabelled
    return labels


def _frozen_distiller(**kwargs):
    """A Distiller whose steps report losses but leave the weights alone."""
    distiller = tfkd.Distiller(
        teacher=_mlp("teacher"), student=_student(), **kwargs
    )
    distiller.compile(optimizer=keras.optimizers.SGD(0.0), metrics=["accuracy"])
    return distiller


@pytest.mark.parametrize("weighted", [False, True])
def test_unlabelled_examples_leave_the_hard_term_only(weighted):
    x, y = _data(64)
    labels = _some_unlabelled(y)
    weights = np.linspace(0.5, 1.5, 64).astype("float32") if weighted else None
    distiller = _frozen_distiller(temperature=3.0, alpha=0.4)
    s, t = distiller.student(x), distiller.teacher(x)
    total, hard, soft = _reference_losses(labels, s, t, 3.0, 0.4, weights)
    # The training step (one batch, learning rate 0) and the test step.
    history = distiller.fit(
        x, labels, sample_weight=weights, batch_size=64, epochs=1, verbose=0
    ).history
    results = distiller.evaluate(
        x, labels, sample_weight=weights, batch_size=64, verbose=0,
        return_dict=True,
    )
    for logs in (
        {k: v[0] for k, v in history.items()},
        results,
    ):
        np.testing.assert_allclose(logs["loss"], total, rtol=1e-5)
        np.testing.assert_allclose(logs["student_loss"], hard, rtol=1e-5)
        np.testing.assert_allclose(logs["distillation_loss"], soft, rtol=1e-5)


def test_metrics_ignore_unlabelled_examples():
    x, y = _data(64)
    labels = _some_unlabelled(y)
    distiller = _frozen_distiller()
    predicted = np.asarray(distiller.student(x)).argmax(axis=-1)
    labelled = labels != -1
    expected = np.mean(predicted[labelled] == labels[labelled])
    # Counting the unlabelled examples (as class 0, or as wrong) differs.
    assert not np.isclose(expected, np.mean(predicted == np.maximum(labels, 0)))
    results = distiller.evaluate(x, labels, batch_size=16, verbose=0, return_dict=True)
    np.testing.assert_allclose(results["accuracy"], expected, rtol=1e-6)
    # One-hot labels: a row of zeros is unlabelled (a fresh Distiller, as
    # Keras picks the accuracy's form from the first labels it sees).
    one_hot = np.eye(CLASSES, dtype="float32")[y] * labelled[:, None]
    distiller = _frozen_distiller()
    results = distiller.evaluate(x, one_hot, batch_size=16, verbose=0, return_dict=True)
    np.testing.assert_allclose(results["accuracy"], expected, rtol=1e-6)


def test_an_all_unlabelled_batch_trains_on_the_soft_loss():
    x, _ = _data(64)
    labels = np.full(64, -1, "int32")
    distiller = _frozen_distiller(temperature=2.0, alpha=0.3)
    s, t = distiller.student(x), distiller.teacher(x)
    total, hard, soft = _reference_losses(labels, s, t, 2.0, 0.3)
    assert hard == 0.0
    history = distiller.fit(x, labels, batch_size=64, epochs=1, verbose=0).history
    np.testing.assert_allclose(history["loss"][0], 0.7 * soft, rtol=1e-5)
    assert np.isfinite(history["student_loss"][0])

    moving = _distiller(alpha=0.3)
    before = [w.copy() for w in moving.student.get_weights()]
    moving.fit(x, labels, batch_size=32, epochs=1, verbose=0)
    assert any(
        not np.array_equal(b, a) for b, a in zip(before, moving.student.get_weights())
    )


@pytest.mark.parametrize("source", ["arrays", "dataset"])
def test_inputs_without_labels_train_on_the_soft_loss(source):
    x, _ = _data(64)
    distiller = _frozen_distiller(temperature=2.0, alpha=0.3)
    s, t = distiller.student(x), distiller.teacher(x)
    _, _, soft = _reference_losses(np.full(64, -1), s, t, 2.0, 0.3)
    if source == "arrays":
        history = distiller.fit(x, batch_size=64, epochs=1, verbose=0)
    else:
        dataset = tf.data.Dataset.from_tensor_slices(x).batch(64)
        history = distiller.fit(dataset, epochs=1, verbose=0)
    np.testing.assert_allclose(history.history["loss"][0], 0.7 * soft, rtol=1e-5)
    # No labels: no label metrics, and a hard loss never updated.
    assert set(history.history) == {"loss", "distillation_loss", "student_loss"}
    assert history.history["student_loss"] == [0.0]


def test_no_labels_and_no_teacher_signal_is_refused():
    x, _ = _data(64)
    distiller = tfkd.Distiller(teacher=None, student=_student())
    distiller.compile(optimizer="adam")
    with pytest.raises(ValueError, match="teacher=None.*teacher_logits"):
        distiller.fit(x, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="Expected labels or a teacher signal"):
        distiller.evaluate(x, verbose=0)


def test_labels_below_minus_one_are_still_refused():
    x, y = _data()
    distiller = _distiller()
    with pytest.raises(ValueError, match=r"or -1 for an unlabelled example.*from -2 to 3"):
        distiller.fit(x, np.where(y == 1, -2, y), epochs=1, verbose=0)


# -- mixing (function matching) ------------------------------------------------

IMAGE_BATCH = 8


@keras.saving.register_keras_serializable(package="tfkd_tests")
class _InputRecorder(keras.layers.Layer):
    """Stores the batch it last received in a variable; passes it on."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen = self.add_weight(
            shape=(IMAGE_BATCH, 4, 4, 1), initializer="zeros",
            trainable=False, name="seen",
        )

    def call(self, inputs):
        self.seen.assign(keras.ops.cast(inputs, "float32"))
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


def _image_model(name, seed, record=True):
    """Flatten + Dense on (4, 4, 1) images; first layer records its input."""
    keras.utils.set_random_seed(seed)
    recorder = [_InputRecorder(name=f"{name}_recorder")] if record else []
    return keras.Sequential(
        [keras.Input((4, 4, 1)), *recorder, keras.layers.Flatten(),
         keras.layers.Dense(CLASSES)],
        name=name,
    )


def _images(n=IMAGE_BATCH, seed=0):
    """Image i is 1 at pixel i (see tests/test_mixing.py), plus noise."""
    rng = np.random.default_rng(seed)
    x = 0.01 * rng.random((n, 16)).astype("float32")
    x[np.arange(n), np.arange(n) % 16] += 1.0
    return x.reshape(n, 4, 4, 1), (np.arange(n) % CLASSES).astype("int32")


def test_mixing_shows_teacher_and_student_the_same_mixed_batch():
    x, y = _images()
    distiller = tfkd.Distiller(
        teacher=_image_model("teacher", 0),
        student=_image_model("student", 1),
        mixing=keras.layers.MixUp(alpha=1.0, seed=3),
        alpha=0.5,
    )
    distiller.compile(optimizer=keras.optimizers.SGD(0.0), metrics=["accuracy"])
    distiller.fit(x, y, batch_size=IMAGE_BATCH, epochs=1, shuffle=False, verbose=0)
    seen_by_teacher = distiller.teacher.layers[0].seen.numpy()
    seen_by_student = distiller.student.layers[0].seen.numpy()
    assert not np.allclose(seen_by_student, x, atol=1e-3)  # it was mixed
    np.testing.assert_array_equal(seen_by_teacher, seen_by_student)


def test_mixed_batch_loss_matches_the_reference():
    """Hard term on the mixed one-hot rows, -1 shares dropped, soft on all."""
    x, y = _images()
    y[[1, 4]] = -1
    distiller = tfkd.Distiller(
        teacher=_image_model("teacher", 0),
        student=_image_model("student", 1),
        mixing=keras.layers.MixUp(alpha=1.0, seed=5),
        temperature=2.0,
        alpha=0.5,
    )
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))
    history = distiller.fit(x, y, batch_size=IMAGE_BATCH, epochs=1, verbose=0)
    mixed = distiller.student.layers[0].seen.numpy()  # (8, 4, 4, 1)
    # The mixing weights over the batch, read off the identity pixels.
    weights = np.linalg.solve(
        x.reshape(IMAGE_BATCH, 16)[:, :IMAGE_BATCH].T.astype(np.float64),
        mixed.reshape(IMAGE_BATCH, 16)[:, :IMAGE_BATCH].T.astype(np.float64),
    ).T  # mixed = weights @ x, (batch, batch)
    labelled = (y != -1).astype(np.float64)
    rows = np.eye(CLASSES)[np.maximum(y, 0)] * labelled[:, None]
    complete = weights @ labelled >= 1.0 - 1e-2
    targets = (weights @ rows) * complete[:, None]
    assert 0 < complete.sum() < IMAGE_BATCH  # both cases occur
    total, hard, soft = _reference_losses(
        targets, distiller.student(mixed), distiller.teacher(mixed), 2.0, 0.5
    )
    np.testing.assert_allclose(history.history["loss"][0], total, rtol=1e-4)
    np.testing.assert_allclose(history.history["student_loss"][0], hard, rtol=1e-4)


def test_mixing_is_refused_on_cached_logits():
    x, y = _images()
    cached = tfkd.Distiller(
        teacher=None, student=_image_model("student", 1),
        mixing=keras.layers.MixUp(),
    )
    cached.compile(optimizer="adam")
    dataset = tf.data.Dataset.from_tensor_slices(
        (x, tfkd.attach_teacher_logits(y, np.zeros((len(x), CLASSES), "float32")))
    ).batch(IMAGE_BATCH)
    with pytest.raises(ValueError, match="`mixing`.*Beyer"):
        cached.fit(dataset, epochs=1, verbose=0)


def test_mixing_compiles_without_xla():
    distiller = tfkd.Distiller(
        teacher=_image_model("teacher", 0), student=_image_model("student", 1),
        mixing=keras.layers.CutMix(),
    )
    with pytest.raises(ValueError, match="`jit_compile`.*CutMix.*XLA"):
        distiller.compile(optimizer="adam", jit_compile=True)
    distiller.compile(optimizer="adam")  # "auto" -> False
    assert distiller.jit_compile is False
    x, y = _images()
    distiller.fit(x, y, batch_size=IMAGE_BATCH, epochs=1, verbose=0)


def test_mixing_needs_one_input_and_known_classes():
    with pytest.raises(TypeError, match="`mixing`"):
        tfkd.Distiller(student=_student(), teacher=_mlp("t"), mixing="mixup")

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(CLASSES)

        def call(self, x):
            return self.dense(x)

    with pytest.raises(ValueError, match="`mixing`.*number of classes"):
        tfkd.Distiller(student=Subclassed(), teacher=_mlp("t"), mixing=keras.layers.MixUp())


def test_keras_file_round_trip_with_mixing(tmp_path):
    x, y = _images()
    distiller = tfkd.Distiller(
        teacher=_image_model("teacher", 0),
        student=_image_model("student", 1),
        mixing=keras.layers.MixUp(alpha=0.4, seed=2),
        augmentation=keras.layers.GaussianNoise(0.01),
        alpha=0.0,
        temperature=1.0,
    )
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    distiller.fit(x, y, batch_size=IMAGE_BATCH, epochs=1, verbose=0)
    config = distiller.get_config()
    assert config["mixing"]["class_name"] == "MixUp"
    path = tmp_path / "distiller.keras"
    distiller.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored.mixing, keras.layers.MixUp)
    assert restored.mixing.alpha == 0.4 and restored.alpha == 0.0
    assert restored.jit_compile is False
    np.testing.assert_allclose(
        restored.predict(x, verbose=0), distiller.predict(x, verbose=0), rtol=1e-6
    )
    restored.fit(x, y, batch_size=IMAGE_BATCH, epochs=1, verbose=0)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_with_mixing_and_unlabelled_examples(policy):
    x, y = _images(32)
    y[::3] = -1
    keras.mixed_precision.set_dtype_policy(policy)
    distiller = tfkd.Distiller(
        teacher=_image_model("teacher", 0, record=False),
        student=_image_model("student", 1, record=False),
        mixing=keras.layers.MixUp(seed=0),
    )
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    history = distiller.fit(x, y, batch_size=IMAGE_BATCH, epochs=1, verbose=0)
    for name in ("loss", "student_loss", "distillation_loss", "accuracy"):
        assert np.all(np.isfinite(history.history[name])), name


def test_reported_student_loss_averages_over_labelled_examples():
    """Batches with few labelled examples weigh little in the epoch's value."""
    x, y = _data(64)
    labels = y.copy()
    labels[:15] = -1  # batch 1 of 16 has one labelled example, the rest 16
    distiller = _frozen_distiller()
    results = distiller.evaluate(x, labels, batch_size=16, verbose=0, return_dict=True)
    s = np.asarray(distiller.student(x), np.float64)
    labelled = labels != -1
    ce = -_log_softmax(s)[labelled, labels[labelled]]
    np.testing.assert_allclose(results["student_loss"], ce.mean(), rtol=1e-5)


@pytest.mark.parametrize("case", ["one_hot_zero_rows", "mixed_unlabelled"])
def test_unlabelled_examples_give_no_hard_gradient(case):
    """alpha=1 on unlabelled data: loss 0, so the student must not move."""
    if case == "one_hot_zero_rows":
        x, _ = _data(32)
        labels = np.zeros((32, CLASSES), "float32")
        teacher, student, mixing = _mlp("teacher"), _student(), None
    else:
        x, _ = _images()
        labels = np.full(len(x), -1, "int32")
        teacher, student = _image_model("teacher", 0), _image_model("student", 1)
        mixing = keras.layers.MixUp(seed=0)
    distiller = tfkd.Distiller(
        teacher=teacher, student=student, alpha=1.0, mixing=mixing
    )
    distiller.compile(optimizer=keras.optimizers.SGD(1.0))
    before = [w.numpy().copy() for w in distiller.student.trainable_weights]
    distiller.fit(x, labels, batch_size=8, epochs=1, verbose=0)
    for b, a in zip(before, distiller.student.trainable_weights):
        np.testing.assert_array_equal(b, a.numpy())


# -- logit standardization (Sun et al., 2024) ---------------------------------


def _np_standardize(z):
    """The authors' `normalize`: (z − mean) / (std + 1e-7), torch.std unbiased."""
    z = z.astype(np.float64)
    return (z - z.mean(-1, keepdims=True)) / (z.std(-1, ddof=1, keepdims=True) + 1e-7)


def _np_log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _np_standardized_kd(y, s, t, temperature, alpha):
    s, t = s.astype(np.float64), t.astype(np.float64)
    hard = -_np_log_softmax(s)[np.arange(len(y)), y].mean()
    log_p_t = _np_log_softmax(_np_standardize(t) / temperature)
    log_p_s = _np_log_softmax(_np_standardize(s) / temperature)
    soft = temperature**2 * (np.exp(log_p_t) * (log_p_t - log_p_s)).sum(1).mean()
    return alpha * hard + (1 - alpha) * soft, hard, soft


def test_logit_standardization_loss_matches_numpy():
    x, y = _data(32)
    distiller = _distiller(temperature=2.0, alpha=0.3, logit_standardization=True)
    results = distiller.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    total, hard, soft = _np_standardized_kd(
        y, np.asarray(distiller.student(x)), np.asarray(distiller.teacher(x)), 2.0, 0.3
    )
    np.testing.assert_allclose(results["loss"], total, rtol=1e-3)
    np.testing.assert_allclose(results["student_loss"], hard, rtol=1e-3)
    np.testing.assert_allclose(results["distillation_loss"], soft, rtol=1e-3)


def test_logit_standardization_ignores_the_teachers_logit_scale():
    """z-scoring makes the KL blind to a teacher's shift and scale."""
    x, y = _data(32)
    teacher = _mlp("teacher")
    scaled = _mlp("scaled")
    kernel, bias = teacher.layers[-1].get_weights()
    scaled.set_weights(teacher.get_weights()[:-2] + [5.0 * kernel, 5.0 * bias + 3.0])
    losses_ = [
        _distiller(teacher=t, student=_student(), logit_standardization=True)
        .evaluate(x, y, verbose=0, return_dict=True)["distillation_loss"]
        for t in (teacher, scaled)
    ]
    np.testing.assert_allclose(losses_[0], losses_[1], rtol=1e-4)


def test_cached_logits_are_standardized_like_the_teachers():
    x, y = _data(32)
    distiller = _distiller(logit_standardization=True)
    online = distiller.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    cached = tf.data.Dataset.from_tensor_slices(
        (x, tfkd.attach_teacher_logits(y, np.asarray(distiller.teacher(x))))
    ).batch(32)
    offline = distiller.evaluate(cached, verbose=0, return_dict=True)
    np.testing.assert_allclose(offline["loss"], online["loss"], rtol=1e-5)


def test_keras_file_round_trip_with_logit_standardization(tmp_path):
    x, y = _data(32)
    distiller = _distiller(logit_standardization=True)
    path = tmp_path / "standardized.keras"
    distiller.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.logit_standardization is True
    assert loaded.get_config()["logit_standardization"] is True
    np.testing.assert_allclose(
        loaded.evaluate(x, y, verbose=0, return_dict=True)["loss"],
        distiller.evaluate(x, y, verbose=0, return_dict=True)["loss"],
        rtol=1e-5,
    )
