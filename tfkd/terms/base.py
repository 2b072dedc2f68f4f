"""`DistillationTerm`: the base of the loss terms a `Distiller` adds to KD.

Logit KD (Hinton et al., 2015) is a term too (`tfkd.terms.soft_targets`),
the one the `Distiller` builds from its own settings. Stronger
methods compare what the two networks compute *inside* (FitNets, attention
transfer), how they arrange a batch (relational KD), or split the KD term
itself (decoupled KD). Each is a `DistillationTerm`, and the `Distiller`
adds them, weighted, to its loss:

    total = α · CE + Σ_k weight_k · term_k

(the first term the soft-target KL, weight 1 − α).

A term reads one teacher tensor and one student tensor, chosen by layer
name (`None` is the model's logits). The `Distiller` builds one
multi-output view of each model (`tfkd.feature_views`), so asking for
features never adds a forward pass.

Terms are `keras.layers.Layer`s: a term that learns (the connector of
`FitNetHint`) owns its weights, the `Distiller` tracks and trains them with
the student and saves them in its `.keras` file, and `distiller.student`
never sees them. Every term computes in float32, also under mixed
precision: its inputs are cast on the way in.
"""


import keras
from keras import ops

from tfkd import hyperparameters
from tfkd.utils import validation


def check_layer_name(argument, name):
    """Returns `name` after checking it is a non-empty str or None."""
    if name is None:
        return None
    if not isinstance(name, str):
        raise validation.invalid_type(
            argument, "a layer name (str) or None for the logits", name
        )
    if not name:
        raise validation.invalid_value(
            argument, "a non-empty layer name or None for the logits", name
        )
    return name


def weighted_batch_mean(per_example, sample_weight=None):
    """Keras's "sum_over_batch_size" of per-example losses.

    Args:
        per_example: Float32 tensor of shape `(batch,)`.
        sample_weight: Optional tensor of shape `(batch,)` or `(batch, 1)`.

    Returns:
        A float32 scalar: `Σ_i w_i · l_i / batch` (the plain mean without
        weights), the reduction the `Distiller` uses for its own losses.
    """
    if sample_weight is not None:
        weights = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
        per_example = per_example * weights
    batch_size = ops.cast(ops.shape(per_example)[0], "float32")
    return ops.sum(per_example) / batch_size


def sqrt_zero_gradient_at_zero(squares):
    """`sqrt(squares)` (values >= 0) whose gradient is 0 where `squares` is 0.

    A norm of an all-zero row (features behind dead ReLUs, a student whose
    logits are all equal) sits where sqrt's derivative is infinite. JAX
    then returns NaN gradients, while TensorFlow's `SqrtGrad` gives 0 when
    the incoming gradient is 0; this gives 0 on every backend. The values
    are sqrt's; the inner `where` keeps the branch not taken finite.

    Args:
        squares: A float tensor of sums of squares.

    Returns:
        A tensor of the same shape.

    Example:

    >>> import numpy as np
    >>> values = sqrt_zero_gradient_at_zero(np.array([0.0, 4.0]))
    >>> keras.ops.convert_to_numpy(values).tolist()
    [0.0, 2.0]
    """
    positive = squares > 0.0
    return ops.where(
        positive, ops.sqrt(ops.where(positive, squares, 1.0)), 0.0
    )


def flatten_examples(features):
    """`(batch, ...)` -> `(batch, features)` float32."""
    features = ops.cast(features, "float32")
    return ops.reshape(features, (ops.shape(features)[0], -1))


@keras.saving.register_keras_serializable(package="tfkd")
class DistillationTerm(keras.layers.Layer):
    """Base class of the weighted loss terms a `tfkd.Distiller` adds.

    A subclass implements `per_example_loss(teacher_features,
    student_features, labels)` returning one float32 value per example,
    shape `(batch,)`; the base class applies sample weights and reduces as
    Keras does ("sum_over_batch_size"). A term that relates examples to each
    other (RKD) overrides `call` instead and returns the batch's scalar.
    A term with weights creates them in `build(teacher_features_shape,
    student_features_shape)`, which the `Distiller` calls with the static
    shapes of the chosen layers before training, so shape mismatches are
    errors at construction.

    The `Distiller` calls a term once per step as
    `term(teacher_features, student_features, labels=labels,
    sample_weight=sample_weight)` (plus the keyword arguments named in
    `step_arguments`) and adds `term.weight` times the result
    to its loss. It reports the unweighted value under `term.name`. A term
    object belongs to one `Distiller` (its weights are built for that
    pair of models); for another, make a copy with
    `type(term).from_config(term.get_config())`.

    Args:
        teacher_layer: Name of the teacher layer whose output the term
            reads, or `None` for the teacher's logits (after
            `teacher_outputs` conversion and `teacher_class_indices`).
            Defaults to `None`.
        student_layer: Name of the student layer, or `None` for the
            student's logits. Defaults to `None`.
        weight: Float in [0, 1e6], the term's weight in the total loss. Defaults
            to `1.0`.
        name: The term's name, also the name of its metric in `fit`'s
            history; must be unique within one `Distiller`. Defaults to
            `None` (the subclass's default).

    Raises:
        TypeError: for an argument of the wrong type.
        ValueError: for a negative `weight` or an empty layer name.

    Example (a custom term, the cosine distance of two embeddings):

    >>> import keras, numpy as np
    >>> @keras.saving.register_keras_serializable(package="example")
    ... class CosineHint(DistillationTerm):
    ...     default_name = "cosine_loss"
    ...     def per_example_loss(self, teacher, student, labels):
    ...         t = keras.ops.normalize(flatten_examples(teacher))
    ...         s = keras.ops.normalize(flatten_examples(student))
    ...         return 1.0 - keras.ops.sum(t * s, axis=-1)  # (batch,)
    >>> term = CosineHint(teacher_layer="embedding", student_layer="embedding")
    >>> float(term(np.ones((2, 4)), np.ones((2, 4))))
    0.0
    """

    #: The name a term of this class gets when `name=None`.
    default_name = "distillation_term"
    #: The augmented view of the batch the term reads: `None` for the batch
    #: itself, or a name among the `Distiller`'s `views` (both models then
    #: run once more, on that view, for every term that reads it).
    view = None

    @property
    def step_arguments(self):
        """Names of the per-step values the `Distiller` passes the term.

        Besides its two tensors, `labels` and `sample_weight`, a term may
        read `"indices"` (each example's row in the training set),
        `"training"` (whether the step trains) and `"teacher_is_mixture"`
        (whether the teacher's logits are an ensemble's mixture) as
        keyword arguments of `call`. Terms with a per-example memory
        (`needs_example_indices`, CRD) read the first two.

        Returns:
            A tuple of str, empty by default.
        """
        if getattr(self, "needs_example_indices", False):
            return ("indices", "training")
        return ()

    def __init__(
        self, teacher_layer=None, student_layer=None, weight=1.0, name=None
    ):
        # float32 whatever the global policy: feature norms and pairwise
        # distances overflow or lose all precision in float16.
        super().__init__(name=name or self.default_name, dtype="float32")
        self.weight = hyperparameters.check_weight("weight", weight)
        self.teacher_layer = check_layer_name("teacher_layer", teacher_layer)
        self.student_layer = check_layer_name("student_layer", student_layer)

    def build(self, teacher_features_shape, student_features_shape):
        """Checks the shapes (and creates any weights); override as needed.

        Args:
            teacher_features_shape: Static shape of the teacher tensor,
                batch dimension included (`None`).
            student_features_shape: Static shape of the student tensor.
        """
        del teacher_features_shape, student_features_shape

    def per_example_loss(self, teacher_features, student_features, labels):
        """The term's value for each example, float32 `(batch,)`."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement `per_example_loss` or "
            "override `call`."
        )

    def call(
        self, teacher_features, student_features, labels=None, sample_weight=None
    ):
        per_example = self.per_example_loss(
            ops.cast(teacher_features, "float32"),
            ops.cast(student_features, "float32"),
            labels,
        )  # (batch,)
        return weighted_batch_mean(per_example, sample_weight)

    def compute_output_shape(self, *args, **kwargs):
        return ()

    @classmethod
    def from_config(cls, config):
        # Keras's default turns every error into a TypeError; a term's own
        # ValueError (a range, a memory limit) says more as it is, also
        # from `keras.saving.load_model`.
        return cls(**config)

    def get_config(self):
        return {
            "weight": self.weight,
            "teacher_layer": self.teacher_layer,
            "student_layer": self.student_layer,
            "name": self.name,
        }


class LogitTerm(DistillationTerm):
    """A term on the two models' logits (DKD, DIST, WTTM).

    It reads no layer (`teacher_layer` and `student_layer` are `None`),
    and `build` refuses logits of different shapes before training.
    """

    def build(self, teacher_features_shape, student_features_shape):
        teacher_shape = tuple(teacher_features_shape)
        student_shape = tuple(student_features_shape)
        if len(student_shape) != 2 or teacher_shape[-1] != student_shape[-1]:
            raise ValueError(
                f"Invalid inputs for `{self.name}`. Expected teacher and "
                "student logits of one shape (batch, classes). Received: "
                f"teacher {teacher_shape}, student {student_shape}"
            )


class BatchScalarTerm(DistillationTerm):
    """A term over the whole batch (relations, similarities): one scalar.

    A subclass sets `_loss_function(teacher, student, sample_weight)`, a
    function of the float32 features returning the batch's scalar; labels
    are not read.
    """

    _loss_function = None

    def call(
        self, teacher_features, student_features, labels=None, sample_weight=None
    ):
        del labels
        return type(self)._loss_function(
            ops.cast(teacher_features, "float32"),
            ops.cast(student_features, "float32"),
            sample_weight,
        )


def check_terms(extra_losses):
    """Returns `extra_losses` as a list after checking types and names.

    Raises:
        TypeError: if an element is not a `DistillationTerm`.
        ValueError: if two terms share a name (their metrics would clash).
    """
    if extra_losses is None:
        return []
    if isinstance(extra_losses, DistillationTerm) or not isinstance(
        extra_losses, (list, tuple)
    ):
        raise validation.invalid_type(
            "extra_losses",
            "a list of tfkd distillation terms (FitNetHint, "
            "AttentionTransfer, RKDDistance, RKDAngle, SP, PKT, CRD, "
            "DecoupledKD, DIST, WTTM)",
            extra_losses,
        )
    terms = list(extra_losses)
    for term in terms:
        if not isinstance(term, DistillationTerm):
            raise validation.invalid_type(
                "extra_losses",
                "a list of `tfkd.DistillationTerm` objects",
                extra_losses,
            )
    names = [term.name for term in terms]
    reserved = {"loss", "student_loss", "distillation_loss"}
    duplicates = sorted(
        {n for n in names if names.count(n) > 1} | (set(names) & reserved)
    )
    if duplicates:
        raise validation.invalid_value(
            "extra_losses",
            "terms with distinct names, other than 'loss', 'student_loss' "
            "and 'distillation_loss' (each name is a metric); pass "
            f"name=... to tell them apart (clashing: {duplicates})",
            names,
        )
    return terms
