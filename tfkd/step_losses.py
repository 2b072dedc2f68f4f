"""The Distiller's loss of one step, in `keras.ops` only (any backend).

    total = α · hard + Σ_k weight_k · term_k
    hard  = Σ_i w_i · m_i · CE(y_i, s_i) / max(L, 1),   L = Σ_i m_i

m_i is 1 for a labelled example and 0 for an unlabelled one (label -1, or
a one-hot row of zeros), w_i its sample weight. The terms are
`tfkd.DistillationTerm`s, the soft-target KL (`tfkd.terms.soft_targets`,
weight 1 − α) first. Nothing here imports TensorFlow, so every backend's
training step (tape, scaling, replica division) can share this module.
"""

import collections

from keras import ops

from tfkd import losses


class LossValues(collections.namedtuple(
    "LossValues", ["total", "hard", "soft", "terms", "labelled"]
)):
    """One replica's losses of a step.

    Fields: `total` (float32 scalar), `hard` (mean cross-entropy over the
    labelled examples, `None` without labels), `soft` (the value of the
    term named `"distillation_loss"`, the T²-scaled KL, `None` without a
    teacher signal; also in `terms`), `terms` (dict of each term's
    unweighted value by name) and `labelled` (float32 count of labelled
    examples).
    """


class ModelOutputs(collections.namedtuple("ModelOutputs", ["logits", "features"])):
    """One model's outputs on one view: logits and `{layer name: tensor}`."""


#: The name of the `Distiller`'s soft-target KL term, and of its metric.
SOFT_TERM_NAME = "distillation_loss"


def no_labels_and_no_teacher_error():
    """The error for data with neither labels nor a teacher signal."""
    return ValueError(
        "Invalid batch. Expected labels or a teacher signal (a `teacher` "
        "model or cached teacher logits): the Distiller has nothing to "
        "compute a loss from. Received: a batch without labels, with "
        "teacher=None and no teacher logits"
    )


def hard_loss(labels, student_logits, sample_weight=None):
    """`(hard, labelled)`: mean CE over labelled examples, and their count.

    A batch (or a replica's shard) without labelled examples gives 0,
    never 0 / 0.

    Args:
        labels: Sparse or one-hot labels, or `None`.
        student_logits: Tensor of shape `(batch, classes)`.
        sample_weight: Optional tensor `(batch,)` or `(batch, 1)`.
            Defaults to `None`.

    Returns:
        `(hard, labelled)`: a float32 scalar (`None` without labels) and
        the float32 count of labelled examples.

    Example:

    >>> import numpy as np
    >>> hard, labelled = hard_loss(np.array([0, -1]), np.zeros((2, 2)))
    >>> round(float(hard), 4), float(labelled)
    (0.6931, 1.0)
    """
    if labels is None:
        return None, ops.zeros((), "float32")
    num_classes = student_logits.shape[-1]
    mask = losses.labelled_mask(labels, num_classes)  # (batch,)
    per_example = losses.hard_target_loss(labels, student_logits)  # (batch,)
    if sample_weight is not None:
        per_example = per_example * ops.reshape(
            ops.cast(sample_weight, "float32"), (-1,)
        )
    labelled = ops.sum(mask)
    return ops.sum(per_example) / ops.maximum(labelled, 1.0), labelled


def term_value(term, teacher, student, labels, sample_weight, step_values):
    """One term's unweighted value on `ModelOutputs` of teacher and student.

    The term reads the layers it names (`None`: the logits) and the
    per-step values it asks for in `term.step_arguments`.
    """
    extra = {name: step_values.get(name) for name in term.step_arguments}
    return term(
        teacher.features.get(term.teacher_layer, teacher.logits),
        student.features.get(term.student_layer, student.logits),
        labels=labels,
        sample_weight=sample_weight,
        **extra,
    )  # float32 scalar over this replica's batch


def compute_losses(
    terms, alpha, outputs, labels, sample_weight=None, step_values=None
):
    """This replica's `LossValues`: `α · hard + Σ_k weight_k · term_k`.

    Args:
        terms: The `DistillationTerm`s, each with its `weight`.
        alpha: Float in [0, 1], the weight of the hard loss.
        outputs: Dict `view -> (teacher ModelOutputs, student
            ModelOutputs)`, `None` the batch itself; a term reads the pair
            of its `view`. The teacher's logits are `None` without a
            teacher signal (evaluation without teacher): then only the
            hard loss counts.
        labels: Sparse or one-hot labels, or `None`.
        sample_weight: Optional tensor `(batch,)`. Defaults to `None`.
        step_values: Dict of the per-step values terms may ask for
            (`indices`, `training`, `teacher_is_mixture`). Defaults to
            `None` (none).

    Returns:
        A `LossValues`.

    Raises:
        ValueError: with neither labels nor a teacher signal.

    Example:

    >>> import numpy as np
    >>> from tfkd.terms.soft_targets import SoftTargetKL
    >>> z = np.array([[2.0, 0.0, -1.0]])
    >>> both = ModelOutputs(z, {})
    >>> values = compute_losses([SoftTargetKL(weight=0.9)], 0.1,
    ...                         {None: (both, both)}, np.array([0]))
    >>> round(float(values.total), 4), float(values.soft)
    (0.017, 0.0)
    """
    teacher, student = outputs[None]
    hard, labelled = hard_loss(labels, student.logits, sample_weight)
    if teacher.logits is None:
        if hard is None:
            raise no_labels_and_no_teacher_error()
        return LossValues(hard, hard, None, {}, labelled)
    total = ops.zeros((), "float32") if hard is None else alpha * hard
    values = {}
    for term in terms:
        teacher, student = outputs[term.view]
        values[term.name] = term_value(
            term, teacher, student, labels, sample_weight, step_values or {}
        )
        total = total + term.weight * values[term.name]
    return LossValues(total, hard, values.get(SOFT_TERM_NAME), values, labelled)
