"""Tests of tfkd/preflight.py: every bad input fails before training starts.

Each test builds tiny real Keras models and data that carry exactly one
mistake and checks the message the user sees.
"""

import warnings

import keras
import numpy as np
import pytest

import tfkd
from tfkd import preflight
from tfkd import teacher_outputs as teacher_outputs_lib

FEATURES = 4
CLASSES = 3


def make_data(n=96, seed=0):
    """Inputs whose label is the argmax of their first three features."""
    x = np.random.default_rng(seed).normal(size=(n, FEATURES))
    x = x.astype("float32")
    return x, np.argmax(x[:, :CLASSES], axis=-1).astype("int32")


def oracle_teacher(activation=None):
    """A teacher that is always right on `make_data`: it reads x[:, :3]."""
    kernel = np.eye(FEATURES, CLASSES, dtype="float32")
    return keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(
                CLASSES,
                use_bias=False,
                activation=activation,
                kernel_initializer=keras.initializers.Constant(kernel),
            ),
        ],
        name="oracle",
    )


def make_student(features=FEATURES, classes=CLASSES):
    return keras.Sequential(
        [keras.Input((features,)), keras.layers.Dense(classes)],
        name="student",
    )


def make_distiller(teacher=None, **kwargs):
    teacher = oracle_teacher() if teacher is None else teacher
    distiller = tfkd.Distiller(
        teacher=teacher, student=make_student(), **kwargs
    )
    distiller.compile(optimizer="sgd")
    return distiller


class TwoLayerTeacher(keras.Model):
    """Subclassed: no symbolic input shape, so only data can reveal it."""

    def __init__(self, features, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(CLASSES)
        self.build((None, features))

    def build(self, input_shape):
        self.dense.build(input_shape)
        self.built = True

    def call(self, x):
        return self.dense(x)


# -- labels ------------------------------------------------------------------


def test_labels_out_of_range():
    x, y = make_data()
    y[5] = CLASSES  # one label past the last class
    with pytest.raises(ValueError, match=r"Expected class ids in \[0, 2\]"):
        make_distiller().fit(x, y, epochs=1, verbose=0)


def test_negative_labels():
    """-1 marks an unlabelled example (issue 13); other negatives are wrong."""
    x, y = make_data()
    y[0] = -2
    y[1] = -1
    with pytest.raises(ValueError, match=r"or -1 for an unlabelled example. Received: labels from -2 to"):
        make_distiller().fit(x, y, epochs=1, verbose=0)


def test_minus_one_marks_unlabelled_examples():
    x, y = make_data()
    y[::2] = -1
    preflight.check_first_batch(make_distiller(), x, y)
    y[:] = -1  # a batch with no labelled example is fine too
    preflight.check_first_batch(make_distiller(), x, y)


def test_non_integer_labels():
    x, y = make_data()
    with pytest.raises(ValueError, match="Expected integer class ids"):
        make_distiller().fit(x, y + 0.5, epochs=1, verbose=0)


def test_labels_of_wrong_shape():
    x, y = make_data()
    wrong = np.stack([y, y], axis=-1)  # (batch, 2): neither ids nor one-hot
    with pytest.raises(ValueError, match=r"labels of shape \(64, 2\)"):
        make_distiller().fit(x, wrong, epochs=1, verbose=0)


def test_one_hot_labels_pass():
    x, y = make_data()
    one_hot = np.eye(CLASSES, dtype="float32")[y]
    history = make_distiller().fit(x, one_hot, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


# -- non-finite values ---------------------------------------------------------


def test_nan_inputs_in_arrays():
    x, y = make_data()
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="Invalid inputs in the first batch"):
        make_distiller().fit(x, y, epochs=1, verbose=0)


def test_non_finite_teacher_outputs():
    x, y = make_data()
    teacher = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(
                CLASSES, kernel_initializer=keras.initializers.Constant(np.nan)
            ),
        ]
    )
    with pytest.raises(ValueError, match="Invalid teacher outputs"):
        make_distiller(teacher).fit(x, y, epochs=1, verbose=0)


# -- shapes ------------------------------------------------------------------


def test_declared_input_shapes_that_differ():
    teacher = keras.Sequential([keras.Input((5,)), keras.layers.Dense(CLASSES)])
    with pytest.raises(ValueError, match="takes the same input batches"):
        tfkd.Distiller(teacher=teacher, student=make_student())


def test_teacher_that_cannot_take_the_data():
    # The subclassed teacher declares no input shape; it was built for 5
    # features and the data has 4, which only the first batch reveals.
    x, y = make_data()
    distiller = make_distiller(TwoLayerTeacher(features=5, name="wide"))
    with pytest.raises(ValueError) as error:
        distiller.fit(x, y, epochs=1, verbose=0)
    message = str(error.value)
    assert "Invalid value for argument `teacher`" in message
    assert "'wide' failed on a batch of shape (64, 4)" in message


def test_student_that_cannot_take_the_data():
    x, y = make_data()
    distiller = make_distiller()
    images = np.zeros((8, 2, 2), "float32")  # (batch, 2, 2), not (batch, 4)
    with pytest.raises(ValueError, match="argument `student`"):
        distiller.fit(images, y[:8], epochs=1, verbose=0)


# -- cached teacher logits -----------------------------------------------------


def test_no_teacher_and_plain_labels():
    x, y = make_data()
    distiller = tfkd.Distiller(student=make_student())
    distiller.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="no teacher signal"):
        distiller.fit(x, y, epochs=1, verbose=0)


# -- teacher outputs -----------------------------------------------------------


def test_auto_resolves_a_softmax_teacher_to_probabilities():
    x, y = make_data()
    distiller = make_distiller(oracle_teacher(activation="softmax"))
    distiller.fit(x, y, epochs=1, verbose=0)
    assert distiller.resolved_teacher_outputs == "probabilities"


def test_auto_resolves_a_logits_teacher_to_logits():
    x, y = make_data()
    distiller = make_distiller()
    distiller.fit(x, y, epochs=1, verbose=0)
    assert distiller.resolved_teacher_outputs == "logits"


def test_softmax_teacher_declared_as_logits_warns():
    x, y = make_data()
    distiller = make_distiller(
        oracle_teacher(activation="softmax"), teacher_outputs="logits"
    )
    with pytest.warns(preflight.DistillationWarning, match="'probabilities'"):
        distiller.fit(x, y, epochs=1, verbose=0)


# -- validation data -----------------------------------------------------------


def test_teacher_near_chance_on_validation_tuple_warns():
    x, y = make_data()
    shifted = (y + 1) % CLASSES  # labels in another class order
    with pytest.warns(preflight.DistillationWarning) as record:
        make_distiller().fit(
            x, y, validation_data=(x, shifted), epochs=1, verbose=0
        )
    # `pytest.warns` records every warning: on PyTorch, NumPy 2's DeprecationWarning
    # from Keras's `convert_to_numpy` (torch's `__array__` takes no `copy`) comes first.
    [message] = [str(w.message) for w in record
                 if issubclass(w.category, preflight.DistillationWarning)]
    assert "accuracy on the first 64 validation examples is 0.0%" in message
    assert "teacher_class_indices" in message


def test_accurate_teacher_does_not_warn():
    x, y = make_data()
    with warnings.catch_warnings():
        warnings.simplefilter("error", preflight.DistillationWarning)
        preflight.check_first_batch(
            make_distiller(), x, y, validation_data=(x, y)
        )


def test_too_few_validation_examples_do_not_warn():
    x, y = make_data()
    few = (x[:16], (y[:16] + 1) % CLASSES)
    with warnings.catch_warnings():
        warnings.simplefilter("error", preflight.DistillationWarning)
        preflight.check_first_batch(make_distiller(), x, y, validation_data=few)


def test_validation_labels_out_of_range():
    x, y = make_data()
    bad = y.copy()
    bad[0] = 7
    with pytest.raises(ValueError, match="labels in the first validation"):
        make_distiller().fit(
            x, y, validation_data=(x, bad), epochs=1, verbose=0
        )


def test_validation_inputs_non_finite():
    x, y = make_data()
    bad = x.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="inputs in the first validation"):
        make_distiller().fit(
            x, y, validation_data=(bad, y), epochs=1, verbose=0
        )


# -- helpers -------------------------------------------------------------------


def test_near_chance_accuracy_limits():
    assert preflight.near_chance_accuracy(10, 64) == pytest.approx(0.15)
    # Two classes: bounded by two binomial standard deviations, not 75%.
    assert preflight.near_chance_accuracy(2, 64) == pytest.approx(0.625)
    assert preflight.near_chance_accuracy(1000, 64) == pytest.approx(0.0015)


def test_teacher_accuracy_uses_class_indices():
    # A 5-class teacher whose classes 4, 0, 2 are the student's 0, 1, 2.
    x, y = make_data()
    kernel = np.zeros((FEATURES, 5), "float32")
    for student_class, teacher_class in enumerate((4, 0, 2)):
        kernel[student_class, teacher_class] = 1.0
    teacher = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(
                5,
                use_bias=False,
                kernel_initializer=keras.initializers.Constant(kernel),
            ),
        ]
    )
    distiller = make_distiller(teacher, teacher_class_indices=[4, 0, 2])
    assert preflight.teacher_accuracy(distiller, x, y) == 1.0
    one_hot = np.eye(CLASSES)[y]
    assert preflight.teacher_accuracy(distiller, x, one_hot) == 1.0


def test_split_targets_names_the_expected_keys():
    with pytest.raises(ValueError, match="'labels' and 'teacher_logits'"):
        teacher_outputs_lib.split_targets({"labels": 1, "logits": 2})


def test_teacher_accuracy_counts_labelled_examples_only():
    x, y = make_data(64)
    labels = y.copy()
    labels[::2] = -1
    # The oracle is right on every labelled example; -1 counted as a
    # class would make it wrong on those.
    assert preflight.teacher_accuracy(make_distiller(), x, labels) == 1.0
    assert preflight.teacher_accuracy(make_distiller(), x, np.full(64, -1)) is None


def test_evaluation_without_labels_needs_a_teacher_signal():
    x, _ = make_data()
    distiller = tfkd.Distiller(teacher=None, student=make_student())
    with pytest.raises(ValueError, match="Expected labels or a teacher signal"):
        preflight.check_first_batch(distiller, x, None, training=False)
    with pytest.raises(ValueError, match="teacher=None"):
        preflight.check_first_batch(distiller, x, None, training=True)
    # With a teacher, inputs alone are enough (soft loss only).
    preflight.check_first_batch(make_distiller(), x, None, training=True)


def test_mixing_that_cannot_mix_the_inputs_is_named():
    x, y = make_data()  # (batch, 4) features, not images
    distiller = make_distiller(mixing=keras.layers.CutMix())
    with pytest.raises(ValueError, match=r"`mixing`.*\(batch, height, width, channels\).*failed on a batch of shape \(64, 4\)"):
        preflight.check_first_batch(distiller, x, y)


def test_check_first_batch_returns_what_it_resolved_and_writes_nothing():
    x, y = make_data()
    distiller = make_distiller(oracle_teacher(activation="softmax"))
    before = dict(vars(distiller))
    resolved = preflight.check_first_batch(distiller, x, y, training=True)
    assert resolved == preflight.Resolved(teacher_outputs="probabilities")
    assert distiller.resolved_teacher_outputs is None  # the Distiller keeps it
    assert vars(distiller).keys() == before.keys()
    logits = preflight.check_first_batch(make_distiller(), x, y, training=True)
    assert logits.teacher_outputs == "logits"


# -- a keras.utils.PyDataset's first batch (every backend) ----------------------


class ArrayBatches(keras.utils.PyDataset):
    """A user's own PyDataset: fixed batches of arrays, its reads recorded.

    `targets` is the labels array, or a dict of arrays (cached logits);
    `reads` lists the batch indices read, `epochs_ended` counts
    `on_epoch_end` calls (when the order would change).
    """

    def __init__(self, x, targets, batch_size=16, sizes=None):
        super().__init__()
        self.x, self.targets, self.batch_size = x, targets, batch_size
        self.sizes = sizes or {}  # part -> other rows per batch (a mistake)
        self.reads, self.epochs_ended = [], 0

    def __len__(self):
        return len(self.x) // self.batch_size

    def _rows(self, part, index):
        size = self.sizes.get(part, self.batch_size)
        return slice(index * size, (index + 1) * size)

    def __getitem__(self, index):
        self.reads.append(index)
        x = self.x[self._rows("inputs", index)]
        if isinstance(self.targets, dict):
            return x, {k: v[self._rows(k, index)] for k, v in self.targets.items()}
        return x, self.targets[self._rows("labels", index)]

    def on_epoch_end(self):
        self.epochs_ended += 1


def _refused_before_training(distiller, dataset, match, **fit_kwargs):
    """fit raises `match` having read batch 0 only; no weight moved."""
    before = [np.array(w) for w in distiller.student.get_weights()]
    with pytest.raises(ValueError, match=match):
        distiller.fit(dataset, epochs=1, verbose=0, **fit_kwargs)
    assert dataset.reads == [0] and dataset.epochs_ended == 0
    for a, b in zip(before, distiller.student.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("mistake, match", [
    ("out of range", r"labels in the first batch. Expected class ids in \[0, 2\].*"
                     r"Received: labels from 0 to 3"),
    ("shape", r"Invalid labels in the first batch.*Received: labels of shape \(16, 2\)"),
    ("not integers", r"Invalid labels in the first batch. Expected integer class ids"),
    ("nan input", r"Invalid inputs in the first batch. Expected finite values. "
                  r"Received: 1 NaN/inf value\(s\) out of 64"),
])
def test_a_py_datasets_first_batch_is_checked_before_training(mistake, match):
    x, y = make_data()
    y = y.astype("float32") if mistake == "not integers" else y
    if mistake == "out of range":
        y[5] = CLASSES
    elif mistake == "shape":
        y = np.stack([y, y], axis=-1)
    elif mistake == "not integers":
        y = y + 0.5
    else:
        x[3, 1] = np.nan
    _refused_before_training(make_distiller(), ArrayBatches(x, y), match)


def test_a_py_datasets_cached_logits_are_checked_before_training():
    x, y = make_data(n=48)
    student_only = tfkd.Distiller(student=make_student())
    student_only.compile(optimizer="sgd")
    logits = np.zeros((48, CLASSES), "float32")
    misaligned = ArrayBatches(x, {"labels": y, "teacher_logits": logits},
                              sizes={"teacher_logits": 12})
    _refused_before_training(student_only, misaligned,
                             "inputs=16, labels=16, teacher_logits=12")
    probabilities = np.full((48, CLASSES), 1.0 / CLASSES, "float32")
    _refused_before_training(
        student_only, ArrayBatches(x, {"labels": y, "teacher_logits": probabilities}),
        "Expected logits.*Received: rows that are non-negative and sum to 1",
    )
    wider = np.zeros((48, CLASSES + 1), "float32")
    _refused_before_training(
        student_only, ArrayBatches(x, {"labels": y, "teacher_logits": wider}),
        "teacher predicts 4 classes",
    )


def test_an_empty_py_dataset_is_named():
    x, y = make_data(n=8)  # fewer rows than one batch of 16: len 0
    with pytest.raises(ValueError, match=r"`x`. Expected a dataset with at least "
                                         r"one batch. Received: an empty PyDataset"):
        make_distiller().fit(ArrayBatches(x, y), epochs=1, verbose=0)


def test_a_good_py_dataset_is_read_once_by_index_and_trains_untouched():
    x, y = make_data()
    dataset = ArrayBatches(x, y)
    distiller = make_distiller(oracle_teacher(activation="softmax"),
                               teacher_outputs="auto")
    inputs, labels, weights = preflight.first_batch(dataset)
    np.testing.assert_array_equal(inputs, x[:16])
    np.testing.assert_array_equal(labels, y[:16])
    assert weights is None and dataset.reads == [0] and dataset.epochs_ended == 0
    resolved = preflight.check_first_batch(distiller, dataset)
    assert resolved.teacher_outputs == "probabilities"  # resolved from the batch
    assert dataset.reads == [0, 0] and dataset.epochs_ended == 0
    dataset.reads.clear()
    history = distiller.fit(dataset, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    # Keras's own two epochs still read every batch (how often Keras's
    # adapter reads batch 0 for itself differs by backend).
    assert all(dataset.reads.count(i) >= 2 for i in range(len(dataset)))
    assert len(history.history["loss"]) == 2
    assert distiller.resolved_teacher_outputs == "probabilities"


def test_a_py_dataset_as_validation_data_is_checked():
    x, y = make_data()
    wrong = ArrayBatches(x, (y + 1) % CLASSES, batch_size=8)
    with pytest.warns(preflight.DistillationWarning, match="near chance"):
        make_distiller().fit(x, y, epochs=1, verbose=0, validation_data=wrong)
    # Pre-flight reads batches of 8 until 64 examples (8 of the 12), then
    # Keras's validation starts again from batch 0.
    assert wrong.reads[:9] == list(range(8)) + [0]
    bad = y.copy()
    bad[0] = 7
    with pytest.raises(ValueError, match="Invalid labels in the first validation batch"):
        make_distiller().fit(x, y, epochs=1, verbose=0,
                             validation_data=ArrayBatches(x, bad))


def test_a_cache_streamed_as_a_py_dataset_is_checked_and_left_as_it_was(tmp_path):
    x, y = make_data(n=48)
    wide_teacher = keras.Sequential(
        [keras.Input((FEATURES,)), keras.layers.Dense(CLASSES + 1)], name="wide"
    )
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 48, 16)]
    cache = tfkd.TeacherCache.build(wide_teacher, batches, str(tmp_path / "cache"),
                                    verbose=0)
    stream = cache.dataset(16, shuffle=True, seed=0, stream="py_dataset")
    order = [np.array(stream[i][1]["labels"]) for i in range(len(stream))]
    distiller = tfkd.Distiller(student=make_student())
    distiller.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="teacher predicts 4 classes"):
        distiller.fit(stream, epochs=1, verbose=0)
    # Same epoch, same order: pre-flight read batch 0 and nothing else.
    for i, labels in enumerate(order):
        np.testing.assert_array_equal(np.array(stream[i][1]["labels"]), labels)
