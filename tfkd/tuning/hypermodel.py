"""`DistillationHyperModel`: a fresh student and `Distiller` per trial."""

import math

import keras
import keras_tuner

from tfkd.utils import validation
from tfkd.distiller import Distiller

#: Names of the tuned hyper-parameters, as keras-tuner records them.
TEMPERATURE = "temperature"
ALPHA = "alpha"
LEARNING_RATE = "learning_rate"


def check_range(argument, value, low_limit, high_limit, log=False):
    """Returns `value` as a `(low, high)` float pair inside the limits.

    Args:
        argument: The argument's name, for the error message.
        value: A pair `(low, high)` with `low < high`.
        low_limit: Smallest allowed `low` (exclusive when `log`).
        high_limit: Largest allowed `high`, or `None` for no limit.
        log: Whether the range is searched on a log scale (then `low` must
            be > `low_limit`, as log(0) is undefined). Defaults to `False`.

    Returns:
        The tuple `(float(low), float(high))`.

    Raises:
        TypeError: if `value` is not a pair of numbers.
        ValueError: if the pair is out of the limits or not increasing.
    """
    expected = (
        f"a pair (low, high) with {low_limit} {'<' if log else '<='} low "
        f"< high" + ("" if high_limit is None else f" <= {high_limit}")
    )
    try:
        low, high = value
        low, high = float(low), float(high)
    except (TypeError, ValueError):
        raise validation.invalid_type(argument, expected, value) from None
    too_low = low <= low_limit if log else low < low_limit
    too_high = high_limit is not None and high > high_limit
    if (
        not (math.isfinite(low) and math.isfinite(high))
        or too_low
        or too_high
        or not low < high
    ):
        raise validation.invalid_value(argument, expected, value)
    return low, high



def check_student_builder(student_builder):
    """Raises `TypeError` unless `student_builder` makes new students.

    Args:
        student_builder: What the caller passed: it must be callable and not
            itself a `keras.Model` (every trial needs a fresh student).
    """
    if not callable(student_builder) or isinstance(
        student_builder, keras.Model
    ):
        raise validation.invalid_type(
            "student_builder",
            "a function returning a new student `keras.Model` (not a "
            "model: every trial needs a fresh one)",
            student_builder,
        )

class DistillationHyperModel(keras_tuner.HyperModel):
    """Builds one compiled `tfkd.Distiller` per keras-tuner trial.

    Each `build(hp)` calls `student_builder()` for a fresh student, resets
    it to `initial_weights` when given (so every trial starts from the
    same point and differs only by its hyper-parameters), and wraps it in a
    `tfkd.Distiller` with the trial's temperature T (log scale), α and,
    when `learning_rate_range` is given, Adam learning rate (log scale).
    The Distiller is compiled with `metrics=["accuracy"]`, so `fit`
    reports `val_accuracy`, the student's validation accuracy, which is the
    search objective.

    The teacher is shared by every trial and never trained (the
    `Distiller` freezes it). With `teacher=None` the training batches must
    carry the teacher's logits (`(x, {"labels": y, "teacher_logits": t})`,
    as `tfkd.tuning.search` streams them by default).

    Args:
        student_builder: A callable with no arguments returning a new,
            uncompiled student `keras.Model` that outputs logits.
        teacher: The trained teacher `keras.Model`, or `None` when every
            training batch carries precomputed teacher logits. Defaults to
            `None`.
        temperature_range: `(low, high)` of T, searched on a log scale.
            Defaults to `(1.0, 20.0)`.
        alpha_range: `(low, high)` of α within [0, 1], the weight of the
            hard-label loss. Defaults to `(0.0, 1.0)`.
        learning_rate: The Adam learning rate when it is not tuned.
            Defaults to `1e-3`.
        learning_rate_range: `(low, high)` to tune the learning rate on a
            log scale, or `None` to keep `learning_rate`. Defaults to
            `None`.
        initial_weights: Weights (`model.get_weights()`) every trial's
            student starts from, or `None` for a new random init per trial.
            Defaults to `None`.

    Raises:
        TypeError: if `student_builder` is not callable, `teacher` is not
            a Keras model, or a range is not a pair of numbers.
        ValueError: for an empty or out-of-range range, or a
            `learning_rate` that is not a finite float > 0 (any type).

    Example:

    >>> import keras, keras_tuner
    >>> def student():
    ...     return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> hypermodel = DistillationHyperModel(student, teacher)
    >>> distiller = hypermodel.build(keras_tuner.HyperParameters())
    >>> round(distiller.temperature, 3), distiller.alpha
    (1.0, 0.0)
    """

    def __init__(
        self,
        student_builder,
        teacher=None,
        *,
        temperature_range=(1.0, 20.0),
        alpha_range=(0.0, 1.0),
        learning_rate=1e-3,
        learning_rate_range=None,
        initial_weights=None,
    ):
        check_student_builder(student_builder)
        validation.check_keras_model("teacher", teacher, allow_none=True)
        super().__init__(name="distillation")
        self.student_builder = student_builder
        self.teacher = teacher
        self.temperature_range = check_range(
            "temperature_range", temperature_range, 0.0, None, log=True
        )
        self.alpha_range = check_range("alpha_range", alpha_range, 0.0, 1.0)
        if (
            not isinstance(learning_rate, (int, float))
            or isinstance(learning_rate, bool)
            or not math.isfinite(learning_rate)
            or learning_rate <= 0
        ):
            raise validation.invalid_value(
                "learning_rate", "a float > 0", learning_rate
            )
        self.learning_rate = float(learning_rate)
        self.learning_rate_range = (
            None
            if learning_rate_range is None
            else check_range(
                "learning_rate_range", learning_rate_range, 0.0, None, log=True
            )
        )
        self.initial_weights = initial_weights

    def build(self, hp):
        """A compiled `Distiller` with the trial's T, α (and learning rate)."""
        temperature = hp.Float(
            TEMPERATURE, *self.temperature_range, sampling="log"
        )
        alpha = hp.Float(ALPHA, *self.alpha_range)
        learning_rate = self.learning_rate
        if self.learning_rate_range is not None:
            learning_rate = hp.Float(
                LEARNING_RATE, *self.learning_rate_range, sampling="log"
            )
        student = self.student_builder()
        validation.check_keras_model("student_builder()", student)
        if self.initial_weights is not None:
            student.set_weights(self.initial_weights)
        distiller = Distiller(
            teacher=self.teacher,
            student=student,
            temperature=temperature,
            alpha=alpha,
        )
        distiller.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            metrics=["accuracy"],
        )
        return distiller

