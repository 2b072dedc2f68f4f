"""Born-again generations on tiny data."""

import keras
import numpy as np
import pytest

from tfkd.generations import born_again
from tfkd.terms.features import FitNetHint


def _data(n=64):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype("float32")
    return x, x[:, :4].argmax(axis=-1).astype("int32")


def _builder():
    seeds = iter(range(100))

    def build():
        keras.utils.set_random_seed(next(seeds))
        return keras.Sequential(
            [keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(4)]
        )

    return build


class RecordTeacher(keras.callbacks.Callback):
    """Remembers which teacher (and student) each generation's fit used."""

    def __init__(self):
        super().__init__()
        self.teachers, self.students, self.optimizers, self.terms = [], [], [], []

    def on_train_begin(self, logs=None):
        self.teachers.append(getattr(self.model, "teacher", None))
        self.students.append(getattr(self.model, "student", self.model))
        self.optimizers.append(self.model.optimizer)
        self.terms.append(list(getattr(self.model, "extra_losses", [])))


class SnapshotTeacher(keras.callbacks.Callback):
    """The weights of the current teacher when its student starts training."""

    def on_train_begin(self, logs=None):
        teacher = getattr(self.model, "teacher", None)
        self.before = None if teacher is None else [w.copy() for w in teacher.get_weights()]


def test_each_generation_is_taught_by_the_previous_one():
    x, y = _data()
    keras.utils.set_random_seed(99)
    teacher = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(4)]
    )
    hint = FitNetHint(weight=0.5, connector="always")
    record, snapshot = RecordTeacher(), SnapshotTeacher()
    students, histories = born_again(
        _builder(), teacher, (x, y), generations=2, temperature=2.0, alpha=0.5,
        extra_losses=[hint], epochs=1, batch_size=32, verbose=0,
        callbacks=[record, snapshot],
    )
    assert len(students) == len(histories) == 2
    assert students[0] is not students[1]
    assert record.teachers == [teacher, students[0]]
    assert record.students == students
    for history in histories:
        assert "distillation_loss" in history.history
        assert "fitnet_loss" in history.history
    # Generation 2 did not change its teacher, generation 1.
    for before, after in zip(snapshot.before, students[0].get_weights()):
        np.testing.assert_array_equal(before, after)
    # Teachers are frozen only while teaching; the one passed in stays so.
    assert all(student.trainable for student in students)
    assert teacher.trainable is False
    # Each generation gets its own copy of the terms (its own connector);
    # the template itself is never built.
    copies = [terms[0] for terms in record.terms]
    assert copies[0] is not copies[1] and hint not in copies
    assert copies[0].get_config() == hint.get_config()
    assert copies[0].connector is not copies[1].connector
    assert not hint.built


def test_without_teacher_the_first_generation_learns_from_labels():
    x, y = _data()
    record = RecordTeacher()
    students, histories = born_again(
        _builder(), None, (x, y), generations=2, optimizer=keras.optimizers.Adam(0.01),
        epochs=2, batch_size=32, verbose=0, callbacks=[record],
    )
    assert "distillation_loss" not in histories[0].history
    assert "distillation_loss" in histories[1].history
    assert record.teachers == [None, students[0]]
    # A fresh optimizer per generation, with the given settings.
    first, second = record.optimizers
    assert first is not second
    np.testing.assert_allclose(
        [float(first.learning_rate), float(second.learning_rate)], 0.01, rtol=1e-6
    )
    losses = histories[0].history["loss"]
    assert losses[-1] < losses[0]


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        ({"generations": 0}, ValueError, r"`generations`. Expected an int > 0"),
        ({"student_builder": "mlp"}, TypeError, r"`student_builder`"),
        ({"teacher": "resnet"}, TypeError, r"`teacher`"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, pattern):
    arguments = {"student_builder": _builder(), "teacher": None, "train_data": _data()}
    arguments.update(kwargs)
    with pytest.raises(error, match=pattern):
        born_again(**arguments)


def test_a_builder_returning_the_same_model_is_refused():
    x, y = _data()
    model = _builder()()
    with pytest.raises(ValueError, match=r"`student_builder`.*new model on every call"):
        born_again(lambda: model, None, (x, y), generations=2, epochs=1, verbose=0)
