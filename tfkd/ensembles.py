"""Teacher ensembles: several teachers, one soft target.

Hinton, Vinyals & Dean (2015, section 2) distil an ensemble by matching the
*arithmetic mean of the teachers' tempered probabilities*:

    p_ens = Σ_i w_i · softmax(z_i / T),   Σ_i w_i = 1

`TeacherEnsemble` is a `keras.Model` that runs each teacher once on a batch
and returns logits of that mixture at the temperature T,

    ensemble_logits = T · log p_ens,

chosen so that `softmax(ensemble_logits / T) = p_ens` exactly: the
`Distiller`'s KL `T² · KL(softmax(t / T) ‖ softmax(s / T))` is then
`T² · KL(p_ens ‖ p_s)` with no change to the loss, and `tfkd.TeacherCache`
can store the mixture like any teacher's logits. The mixture is a property
of T: at another temperature T', `softmax(ensemble_logits / T')` is
`p_ens^(T / T')` renormalised, not the mixture of the teachers at T'. So a
cache of an ensemble is exact only at the temperature it was built at (the
`Distiller` refuses it at another one, see `tfkd.cache`).

Each teacher's outputs go through `teacher_outputs` (softmax teachers give
log-probabilities, never softened twice) and `teacher_class_indices`
before they are mixed, and, with `logit_standardization`, through
`tfkd.losses.standardize_logits` (Sun et al., 2024) before the
temperature.
"""

import math
import numbers

import keras
from keras import ops

from tfkd import hyperparameters
from tfkd import losses
from tfkd import model_checks
from tfkd import teacher_outputs as teacher_outputs_lib
from tfkd.utils import validation


def check_teachers(teachers):
    """Returns `teachers` as a list after checking it is a list of models.

    Raises:
        TypeError: if `teachers` is not a list/tuple of `keras.Model`s.
        ValueError: if it is empty, holds one model twice, or the models
            declare different class counts.

    Example:

    >>> import keras
    >>> def dense(): return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> len(check_teachers([dense(), dense()]))
    2
    """
    if not isinstance(teachers, (list, tuple)):
        raise validation.invalid_type(
            "teacher", "a `keras.Model` or a list of them", teachers
        )
    teachers = list(teachers)
    if not teachers:
        raise validation.invalid_value(
            "teacher", "a non-empty list of `keras.Model`s", teachers
        )
    for teacher in teachers:
        if not isinstance(teacher, keras.Model):
            raise validation.invalid_type(
                "teacher", "a list of `keras.Model`s", teachers
            )
    if len({id(teacher) for teacher in teachers}) != len(teachers):
        raise validation.invalid_value(
            "teacher",
            "a list of distinct models (to weight a teacher more, use "
            "`teacher_weights`)",
            [teacher.name for teacher in teachers],
        )
    classes = {
        teacher.name: model_checks.output_classes(teacher) for teacher in teachers
    }
    known = {count for count in classes.values() if count is not None}
    if len(known) > 1:
        raise validation.invalid_value(
            "teacher",
            "teachers with the same number of output classes (their "
            "probabilities are averaged class by class)",
            classes,
        )
    return teachers


def check_teacher_weights(teacher_weights, num_teachers):
    """Returns the weights normalised to sum 1 (equal for `None`).

    Raises:
        TypeError: if `teacher_weights` is not a sequence of numbers.
        ValueError: for a length other than `num_teachers`, or a weight
            that is not finite and > 0.

    Example:

    >>> check_teacher_weights([1, 3], 2)
    (0.25, 0.75)
    >>> check_teacher_weights(None, 4)
    (0.25, 0.25, 0.25, 0.25)
    """
    if teacher_weights is None:
        return tuple([1.0 / num_teachers] * num_teachers)
    if not isinstance(teacher_weights, (list, tuple)):
        raise validation.invalid_type(
            "teacher_weights", "a list of floats > 0 or None", teacher_weights
        )
    if len(teacher_weights) != num_teachers:
        raise validation.invalid_value(
            "teacher_weights",
            f"one weight per teacher ({num_teachers})",
            teacher_weights,
        )
    for weight in teacher_weights:
        if not isinstance(weight, numbers.Real) or isinstance(weight, bool):
            raise validation.invalid_type(
                "teacher_weights", "a list of floats > 0", teacher_weights
            )
        if not math.isfinite(weight) or weight <= 0:
            raise validation.invalid_value(
                "teacher_weights", "finite floats > 0", teacher_weights
            )
    total = float(sum(teacher_weights))
    if not math.isfinite(total):  # e.g. two weights of 1e308
        raise validation.invalid_value(
            "teacher_weights",
            "finite floats > 0 whose sum is finite (they are normalised "
            "to sum 1)",
            teacher_weights,
        )
    return tuple(float(weight) / total for weight in teacher_weights)


def check_member_outputs(teacher_outputs, num_teachers):
    """`teacher_outputs` as one kind per teacher (a str applies to all).

    Example:

    >>> check_member_outputs("auto", 2)
    ('auto', 'auto')
    """
    kinds = teacher_outputs_lib.TEACHER_OUTPUT_KINDS
    if isinstance(teacher_outputs, str):
        validation.check_choice("teacher_outputs", teacher_outputs, kinds)
        return tuple([teacher_outputs] * num_teachers)
    if (
        not isinstance(teacher_outputs, (list, tuple))
        or len(teacher_outputs) != num_teachers
    ):
        raise validation.invalid_value(
            "teacher_outputs",
            f"one of {kinds}, or a list of {num_teachers} of them (one per "
            "teacher)",
            teacher_outputs,
        )
    for kind in teacher_outputs:
        validation.check_choice("teacher_outputs", kind, kinds)
    return tuple(teacher_outputs)


def mixture_logits(member_logits, weights, temperature):
    """`T · log Σ_i w_i softmax(z_i / T)`, the logits of the mixture.

    Args:
        member_logits: List of tensors `(batch, classes)`, one per teacher.
        weights: Sequence of floats summing to 1, one per teacher.
        temperature: Float in [0.01, 100], T.

    Returns:
        A float32 tensor `(batch, classes)` whose `softmax(· / T)` is the
        weighted mean of the teachers' tempered probabilities. Computed
        with `logsumexp` over log-probabilities: no probability is
        clipped.

    Example:

    >>> import numpy as np
    >>> z = np.array([[2.0, 0.0, -1.0]])
    >>> mixed = mixture_logits([z, z], [0.5, 0.5], temperature=2.0)
    >>> np.allclose(np.asarray(ops.softmax(mixed / 2.0)),
    ...             np.asarray(ops.softmax(z / 2.0)))
    True
    """
    log_probabilities = ops.stack(
        [
            ops.log_softmax(ops.cast(logits, "float32") / temperature, axis=-1)
            + math.log(weight)
            for logits, weight in zip(member_logits, weights)
        ],
        axis=0,
    )  # (teachers, batch, classes)
    return temperature * ops.logsumexp(log_probabilities, axis=0)


@keras.saving.register_keras_serializable(package="tfkd")
class TeacherEnsemble(keras.Model):
    """Several teachers as one: the logits of their tempered mixture.

    Hinton et al. (2015), section 2: the soft target of an ensemble is the
    weighted mean of its members' tempered probabilities. This model runs
    every teacher once (`training=False`) and returns
    `T · log Σ_i w_i softmax(z_i / T)` (see `mixture_logits`), logits
    whose softmax at T is that mean. `tfkd.Distiller(teacher=[...])` builds
    one; `tfkd.TeacherCache.build(teacher=[...], temperature=T)` stores its
    outputs. The teachers are frozen.

    Args:
        teachers: List of at least two trained `keras.Model`s on the same
            inputs and classes.
        temperature: Float in [0.01, 100], the T of the mixture.
        teacher_weights: Floats > 0, one per teacher, normalised to sum 1,
            or `None` for equal weights. Defaults to `None`.
        teacher_outputs: `"logits"`, `"probabilities"` or `"auto"` (one for
            all teachers) or a list of them, one per teacher; as
            `tfkd.Distiller`'s (`"auto"` is decided per batch, from the
            values). Defaults to `"auto"`.
        teacher_class_indices: The teachers' class index of each student
            class, applied to each teacher before mixing, or `None`.
            Defaults to `None`.
        logit_standardization: Whether each teacher's logits are z-scored
            (`tfkd.losses.standardize_logits`) before the temperature.
            Defaults to `False`.
        name: Defaults to `"teacher_ensemble"`.

    Example:

    >>> import numpy as np, keras
    >>> def dense(): return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> ensemble = TeacherEnsemble([dense(), dense()], temperature=2.0,
    ...                            teacher_weights=[1.0, 3.0])
    >>> ensemble.teacher_weights
    (0.25, 0.75)
    >>> ensemble(np.ones((2, 4), "float32")).shape
    TensorShape([2, 3])
    """

    def __init__(
        self,
        teachers,
        temperature,
        teacher_weights=None,
        teacher_outputs="auto",
        teacher_class_indices=None,
        logit_standardization=False,
        name="teacher_ensemble",
        **kwargs,
    ):
        teachers = check_teachers(teachers)
        temperature = hyperparameters.check_temperature(temperature)
        teacher_weights = check_teacher_weights(teacher_weights, len(teachers))
        teacher_outputs = check_member_outputs(teacher_outputs, len(teachers))
        teacher_class_indices = validation.check_class_indices(
            "teacher_class_indices", teacher_class_indices
        )
        validation.check_bool("logit_standardization", logit_standardization)
        super().__init__(name=name, **kwargs)
        self.temperature = temperature
        self.teacher_weights = teacher_weights
        self.teacher_outputs = teacher_outputs
        self.teacher_class_indices = teacher_class_indices
        self.logit_standardization = logit_standardization
        for teacher in teachers:
            teacher.trainable = False
        self.teachers = teachers
        self.trainable = False

    def member_logits(self, inputs):
        """Each teacher's float32 logits over the student's classes.

        Each teacher runs once; probabilities become log-probabilities,
        `teacher_class_indices` select the student's classes, and with
        `logit_standardization` each row is z-scored.
        """
        logits = []
        for teacher, kind in zip(self.teachers, self.teacher_outputs):
            outputs = teacher(inputs, training=False)
            member = teacher_outputs_lib.select_classes(
                teacher_outputs_lib.to_logits(outputs, kind),
                self.teacher_class_indices,
            )  # (batch, classes)
            if self.logit_standardization:
                member = losses.standardize_logits(member)
            logits.append(member)
        return logits

    def call(self, inputs, training=None):
        del training  # the teachers only ever run in inference
        return mixture_logits(
            self.member_logits(inputs), self.teacher_weights, self.temperature
        )

    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        return {
            "teachers": [serialize(teacher) for teacher in self.teachers],
            "temperature": self.temperature,
            "teacher_weights": list(self.teacher_weights),
            "teacher_outputs": list(self.teacher_outputs),
            "teacher_class_indices": (
                None
                if self.teacher_class_indices is None
                else list(self.teacher_class_indices)
            ),
            "logit_standardization": self.logit_standardization,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["teachers"] = [
            keras.saving.deserialize_keras_object(teacher)
            for teacher in config["teachers"]
        ]
        return cls(**config)
