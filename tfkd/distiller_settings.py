"""`DistillerSettings`: a `Distiller`'s arguments, declared and checked once.

Every setting of `tfkd.Distiller` is one field here, with its default.
The dataclass validates (and normalises) them all when it is made, before
any model is touched; the `Distiller` reads them from it, and its
`get_config` is this object's `get_config`, with the keys `.keras` files
have always had.
"""

import dataclasses
import difflib

import keras

from tfkd import ensembles
from tfkd import hyperparameters
from tfkd import mixing as mixing_lib
from tfkd import model_checks
from tfkd import step_guard
from tfkd import teacher_outputs as teacher_outputs_lib
from tfkd.terms import base as terms_base
from tfkd.utils import validation

#: The settings that are Keras objects the `Distiller` tracks itself (as
#: attributes, so `.keras` files and `trainable_weights` see them).
TRACKED_FIELDS = (
    "student", "teacher", "augmentation", "mixing", "extra_losses", "views"
)


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class DistillerSettings:
    """The settings of a `tfkd.Distiller`, validated when made.

    The fields are the `Distiller`'s keyword arguments, documented there;
    after validation `temperature` and `alpha` are floats,
    `teacher_class_indices` a tuple or `None`, `extra_losses` a list,
    `teacher` a model, `None`, or a list of two or more models (a list of
    one is that model), `teacher_weights` normalised to sum 1 for an
    ensemble (else `None`) and `views` a dict.

    Raises:
        TypeError: for a wrong type (see `tfkd.Distiller`).
        ValueError: for a wrong value (see `tfkd.Distiller`).

    Example:

    >>> import keras
    >>> def dense(): return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> settings = DistillerSettings(student=dense(), teacher=dense(), alpha=0)
    >>> settings.alpha, settings.temperature
    (0.0, 4.0)
    """

    student: keras.Model
    teacher: object = None
    temperature: float = 4.0
    alpha: float = 0.1
    teacher_outputs: object = "auto"
    teacher_class_indices: object = None
    augmentation: object = None
    mixing: object = None
    extra_losses: object = None
    teacher_weights: object = None
    logit_standardization: bool = False
    on_nonfinite: str = "raise"
    views: object = None

    def __post_init__(self):
        validation.check_choice(
            "on_nonfinite", self.on_nonfinite, step_guard.ON_NONFINITE_CHOICES
        )
        validation.check_keras_model("student", self.student)
        validation.check_bool("logit_standardization", self.logit_standardization)
        teacher, weights = _check_teacher_or_ensemble(
            self.teacher, self.teacher_weights
        )
        members = teacher if isinstance(teacher, list) else [teacher]
        if any(member is self.student for member in members):
            raise ValueError(
                "Invalid value for argument `teacher`. Expected a model "
                "other than the student (distilling a model into itself "
                "trains the teacher too). Received: teacher is student "
                f"(model {self.student.name!r})"
            )
        checked = {
            "teacher": teacher,
            "teacher_weights": weights,
            "temperature": hyperparameters.check_temperature(self.temperature),
            "alpha": validation.check_alpha(self.alpha),
        }
        if isinstance(teacher, list):
            ensembles.check_member_outputs(self.teacher_outputs, len(teacher))
        else:
            validation.check_choice(
                "teacher_outputs",
                self.teacher_outputs,
                teacher_outputs_lib.TEACHER_OUTPUT_KINDS,
            )
        checked["teacher_class_indices"] = validation.check_class_indices(
            "teacher_class_indices", self.teacher_class_indices
        )
        _check_layer_or_none("augmentation", self.augmentation)
        if mixing_lib.check_mixing(self.mixing) is not None:
            _check_student_for_mixing(self.student, self.mixing)
        terms = terms_base.check_terms(self.extra_losses)
        checked["extra_losses"] = terms
        checked["views"] = _check_views(self.views, terms, teacher, self.mixing)
        model_checks.check_student_outputs_logits(self.student)
        for member in members:
            if member is not None:
                model_checks.check_compatible_inputs(member, self.student)
                model_checks.check_compatible_classes(
                    member, self.student, checked["teacher_class_indices"]
                )
        _refuse_teacher_features_without_teacher(terms, teacher)
        _refuse_teacher_features_of_an_ensemble(terms, teacher)
        for name, value in checked.items():
            object.__setattr__(self, name, value)  # frozen: set once, here

    @property
    def is_ensemble(self):
        """Whether `teacher` is a list of models (an ensemble)."""
        return isinstance(self.teacher, list)

    def get_config(self):
        """The settings as a `Distiller` config (models serialized).

        Returns:
            A dict with one key per field; `views` only when there are
            some, so files of Distillers without views read as before.
        """
        serialize = keras.saving.serialize_keras_object

        def optional(value):
            return None if value is None else serialize(value)

        def optional_list(value):
            return None if value is None else list(value)

        config = {
            "student": serialize(self.student),
            "teacher": (
                [serialize(member) for member in self.teacher]
                if self.is_ensemble
                else optional(self.teacher)
            ),
            "teacher_weights": optional_list(self.teacher_weights),
            "logit_standardization": self.logit_standardization,
            "on_nonfinite": self.on_nonfinite,
            "temperature": self.temperature,
            "alpha": self.alpha,
            "teacher_outputs": (
                self.teacher_outputs
                if isinstance(self.teacher_outputs, str)
                else list(self.teacher_outputs)
            ),
            "teacher_class_indices": optional_list(self.teacher_class_indices),
            "augmentation": optional(self.augmentation),
            "mixing": optional(self.mixing),
            "extra_losses": [serialize(term) for term in self.extra_losses],
        }
        if self.views:
            config["views"] = {
                name: serialize(layer) for name, layer in self.views.items()
            }
        return config

    @classmethod
    def split_config(cls, config):
        """`(settings arguments, other arguments)` of a `Distiller` config.

        Args:
            config: What `Distiller.get_config` returned (models serialized,
                plus Keras's own keys such as `name`).

        Returns:
            Two dicts: this class's fields with their Keras objects
            deserialized, and the remaining keys (for `keras.Model`).
        """
        deserialize = keras.saving.deserialize_keras_object
        fields = {field.name for field in dataclasses.fields(cls)}
        arguments = {k: v for k, v in config.items() if k in fields}
        rest = {k: v for k, v in config.items() if k not in fields}
        for key in ("student", "augmentation", "mixing"):
            if arguments.get(key) is not None:
                arguments[key] = deserialize(arguments[key])
        teacher = arguments.get("teacher")
        if isinstance(teacher, list):
            arguments["teacher"] = [deserialize(member) for member in teacher]
        elif teacher is not None:
            arguments["teacher"] = deserialize(teacher)
        if arguments.get("extra_losses"):
            arguments["extra_losses"] = [
                deserialize(term) for term in arguments["extra_losses"]
            ]
        if arguments.get("views"):
            arguments["views"] = {
                name: deserialize(layer)
                for name, layer in arguments["views"].items()
            }
        return arguments, rest

    @classmethod
    def pop_arguments(cls, kwargs):
        """Removes this class's fields from `kwargs`; returns the settings.

        Args:
            kwargs: A dict of keyword arguments, changed in place: what
                remains is for `keras.Model`.

        Returns:
            A validated `DistillerSettings`.
        """
        names = [field.name for field in dataclasses.fields(cls)]
        if "student" not in kwargs:
            raise TypeError(
                "Missing required argument `student`. Expected a "
                "`keras.Model` to train. Received: no student"
            )
        settings = cls(**{name: kwargs.pop(name) for name in names if name in kwargs})
        _refuse_misspelled_settings(kwargs, names)
        return settings


#: Keyword arguments `keras.Model` itself takes: never a misspelling.
_KERAS_MODEL_ARGUMENTS = frozenset(
    {"trainable", "dtype", "autocast", "input_shape", "input_dim", "batch_size",
     "input_dtype"}
)


def _refuse_misspelled_settings(kwargs, names):
    """A `ValueError` for a leftover argument that looks like a setting.

    Keras's own message (`Unrecognized keyword arguments passed to
    Distiller`) names the argument but not what was meant; a close
    misspelling of a setting (`temprature`) is named with its fix, in
    the same type of error as Keras's.
    """
    for key in kwargs:
        if key in _KERAS_MODEL_ARGUMENTS:
            continue
        close = difflib.get_close_matches(key, names, n=1, cutoff=0.75)
        if close:
            raise ValueError(
                f"Invalid keyword argument `{key}` for `Distiller`. Expected "
                f"one of its settings, here probably `{close[0]}`. Received: "
                f"{key}={kwargs[key]!r}"
            )


def _check_layer_or_none(argument, value):
    if value is not None and not isinstance(value, keras.layers.Layer):
        raise validation.invalid_type(
            argument, "a `keras.layers.Layer` or None", value
        )


def _check_views(views, terms, teacher, mixing):
    """`views` as a dict `name -> layer`; each read by a term, and readable.

    A view is a fresh augmentation of the batch: the teacher must run on
    it (cached logits belong to the batch itself), it keeps the batch's
    labels (so no `mixing`), and a view no term reads would cost two
    forward passes for nothing.
    """
    views = {} if views is None else views
    if not isinstance(views, dict):
        raise validation.invalid_type(
            "views", "a dict of view name -> `keras.layers.Layer`, or None",
            views,
        )
    for name, layer in views.items():
        if not isinstance(name, str) or not name:
            raise validation.invalid_value(
                "views", "non-empty str view names", sorted(map(repr, views))
            )
        if not isinstance(layer, keras.layers.Layer):
            raise validation.invalid_type(
                f"views[{name!r}]", "a `keras.layers.Layer`", layer
            )
    read = {term.view for term in terms if term.view is not None}
    missing = sorted(read - set(views))
    if missing:
        readers = [term.name for term in terms if term.view in missing]
        raise validation.invalid_value(
            "views",
            f"a view named {missing[0]!r}: the extra losses {readers} read "
            f"the views {missing} of the batch (each term's `view`)",
            sorted(views),
        )
    unread = sorted(set(views) - read)
    if unread:
        raise validation.invalid_value(
            "views",
            "views that an extra loss reads (a term's `view`); no term "
            f"reads {unread}",
            sorted(views),
        )
    if views and teacher is None:
        raise validation.invalid_value(
            "teacher",
            f"a teacher model with views {sorted(views)}: the teacher runs "
            "on each view, and cached logits belong to the batch itself",
            None,
        )
    if views and mixing is not None:
        raise validation.invalid_value(
            "mixing",
            f"None with views {sorted(views)}: a view keeps the batch's "
            "labels, which mixing would change",
            mixing.name,
        )
    return dict(views)


def _refuse_teacher_features_without_teacher(terms, teacher):
    """Raises if a term reads teacher layers but there is no teacher model."""
    readers = [term.name for term in terms if term.teacher_layer is not None]
    if teacher is None and readers:
        raise ValueError(
            "Invalid value for argument `teacher`. Expected a teacher model: "
            f"the extra losses {readers} read teacher layers, and "
            "precomputed teacher logits carry no features. Received: "
            "teacher=None. Pass the teacher, or use terms on the logits "
            "only (teacher_layer=None, e.g. tfkd.DecoupledKD)."
        )


def _check_teacher_or_ensemble(teacher, teacher_weights):
    """`(teacher, weights)`: a model or `None`, or a list of >= 2 models.

    A list of one teacher is that teacher (after its weight is checked):
    an ensemble of one behaves, saves and caches exactly like it. The
    weights are normalised for an ensemble, `None` otherwise.
    """
    if isinstance(teacher, (list, tuple)):
        teachers = ensembles.check_teachers(teacher)
        weights = ensembles.check_teacher_weights(teacher_weights, len(teachers))
        if len(teachers) == 1:
            return teachers[0], None
        return teachers, weights
    validation.check_keras_model("teacher", teacher, allow_none=True)
    if teacher_weights is not None:
        raise validation.invalid_value(
            "teacher_weights",
            "None unless `teacher` is a list of models (an ensemble)",
            teacher_weights,
        )
    return teacher, None


def _refuse_teacher_features_of_an_ensemble(terms, teacher):
    """Raises if a term reads teacher layers and the teacher is an ensemble.

    Several teachers have several (differently shaped) layers of one name,
    and no single feature to regress to; only their logits mix.
    """
    readers = [term.name for term in terms if term.teacher_layer is not None]
    if isinstance(teacher, list) and readers:
        raise ValueError(
            "Invalid value for argument `extra_losses`. Expected terms on "
            "the teacher's logits only (teacher_layer=None) with a teacher "
            f"ensemble: the extra losses {readers} read teacher layers, and "
            f"an ensemble of {len(teacher)} teachers has no single feature "
            "tensor (only their probabilities are averaged). Received: "
            f"teacher_layer={[t.teacher_layer for t in terms if t.teacher_layer]}"
        )


def _check_student_for_mixing(student, mixing):
    """Raises unless `mixing` can mix the student's inputs and labels.

    Mixing layers take one image tensor, and mixing the labels needs the
    number of classes before the first step.
    """
    inputs = getattr(student, "inputs", None)
    if inputs is not None and len(inputs) != 1:
        raise validation.invalid_value(
            "mixing",
            "None for a student with several inputs (mixing layers mix "
            f"one image tensor; the student has {len(inputs)} inputs)",
            mixing.name,
        )
    if model_checks.output_classes(student) is None:
        raise validation.invalid_value(
            "mixing",
            "None for a student whose number of classes is unknown before "
            "training (mixing one-hot labels needs it): build the student "
            "as a functional or `keras.Input`-started Sequential model",
            mixing.name,
        )
