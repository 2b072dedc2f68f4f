"""Turning whatever a teacher emits into logits the KD loss can use.

A teacher that ends in a softmax (the `keras.applications` default, every
AutoKeras export) hands out probabilities. Treating them as logits softens
them a second time: `softmax(p / T)` of values in [0, 1] is nearly uniform,
the soft targets carry no information, and with a small α the student
drifts towards predicting one class. The fix is exact and cheap: `log(p)`
are logits of the same distribution (softmax is shift-invariant), so the KD
loss stays `T² · KL(softmax(log p / T) ‖ softmax(s / T))`.
"""

import numpy as np
from keras import ops

#: The values `Distiller(teacher_outputs=...)` accepts.
TEACHER_OUTPUT_KINDS = ("auto", "logits", "probabilities")

# Rows summing to 1 within this and non-negative are probabilities. Loose
# enough for float16 softmax outputs over 1000 classes; real logits never
# pass the test (they are negative somewhere or do not sum to 1).
_SUM_TOLERANCE = 1e-2

# log(0) would make the KL NaN (0 · -inf); the smallest normal float32 keeps
# the log finite (about -87.3) and changes no probability that matters.
_TINY = float(np.finfo(np.float32).tiny)


def looks_like_probabilities(outputs):
    """Whether every row of `outputs` is a probability distribution.

    Args:
        outputs: Array-like of shape `(batch, classes)`.

    Returns:
        A Python bool (NumPy input) or a scalar bool tensor (tensor input,
        usable inside a traced step).

    Example:

    >>> import numpy as np
    >>> looks_like_probabilities(np.array([[0.2, 0.8]]))
    True
    >>> looks_like_probabilities(np.array([[2.0, -1.0]]))
    False
    """
    if isinstance(outputs, np.ndarray):
        outputs = outputs.astype(np.float64)
        return bool(
            np.all(outputs >= 0.0)
            and np.all(np.abs(outputs.sum(axis=-1) - 1.0) <= _SUM_TOLERANCE)
        )
    outputs = ops.cast(outputs, "float32")
    non_negative = ops.all(outputs >= 0.0)
    sums_to_one = ops.all(
        ops.abs(ops.sum(outputs, axis=-1) - 1.0) <= _SUM_TOLERANCE
    )
    return ops.logical_and(non_negative, sums_to_one)


def probabilities_to_logits(probabilities):
    """Log-probabilities, finite even where a probability underflowed to 0.

    Args:
        probabilities: Tensor of shape `(batch, classes)`.

    Returns:
        A float32 tensor of the same shape.
    """
    probabilities = ops.cast(probabilities, "float32")
    return ops.log(ops.maximum(probabilities, _TINY))


def to_logits(outputs, kind):
    """Converts teacher `outputs` of the given `kind` to float32 logits.

    Args:
        outputs: Tensor of shape `(batch, classes)`.
        kind: `"logits"`, `"probabilities"`, or `"auto"` to decide inside the
            step from the values themselves (used when no first batch could
            be inspected before training).

    Returns:
        A float32 tensor of shape `(batch, classes)`.
    """
    outputs = ops.cast(outputs, "float32")
    if kind == "logits":
        return outputs
    if kind == "probabilities":
        return probabilities_to_logits(outputs)
    return ops.where(
        looks_like_probabilities(outputs),
        probabilities_to_logits(outputs),
        outputs,
    )


def select_classes(logits, class_indices):
    """Keeps the teacher logits of `class_indices`, in the student's order.

    An ImageNet teacher distilled into a 10-class student keeps only the 10
    columns that correspond to the student's classes; `log_softmax` in the KD
    loss renormalizes over them.

    Args:
        logits: Tensor of shape `(batch, teacher_classes)`.
        class_indices: Tuple of ints or `None` (keep everything).

    Returns:
        A tensor of shape `(batch, len(class_indices))` (or `logits`).
    """
    if class_indices is None:
        return logits
    return ops.take(logits, np.asarray(class_indices, dtype="int32"), axis=-1)


#: Key of the labels when a batch carries precomputed teacher outputs.
LABELS_KEY = "labels"
#: Key of the precomputed teacher logits in such a batch.
TEACHER_LOGITS_KEY = "teacher_logits"
#: Optional key, `(batch,)` int: each example's index in the training set,
#: for terms with a per-example memory (`tfkd.CRD`).
INDEX_KEY = "index"
#: Optional key, `(batch,)`: the only temperature at which the cached
#: logits are exact (a teacher ensemble's mixture, `tfkd.ensembles`).
SOFT_TARGET_TEMPERATURE_KEY = "soft_target_temperature"


def attach_teacher_logits(labels, teacher_logits, soft_target_temperature=None):
    """Builds the `y` of a batch that carries precomputed teacher logits.

    The `Distiller` skips the teacher for batches shaped
    `(x, {"labels": y, "teacher_logits": t})`; `tfkd.TeacherCache` streams
    batches in this form.

    Args:
        labels: The batch's labels.
        teacher_logits: Tensor of shape `(batch, teacher_classes)`.
        soft_target_temperature: `None`, or the float T at which the
            logits are exact soft targets (a teacher ensemble's mixture):
            added per example under `"soft_target_temperature"`, which the
            `Distiller`'s pre-flight compares with its own T. Defaults to
            `None`.

    Returns:
        A dict with the keys `"labels"` and `"teacher_logits"` (and
        `"soft_target_temperature"` when given).
    """
    targets = {LABELS_KEY: labels, TEACHER_LOGITS_KEY: teacher_logits}
    if soft_target_temperature is not None:
        targets[SOFT_TARGET_TEMPERATURE_KEY] = ops.full_like(
            teacher_logits[:, 0], soft_target_temperature, dtype="float32"
        )  # (batch,)
    return targets


def split_targets(y):
    """Splits a batch's `y` into `(labels, teacher_logits or None)`.

    Args:
        y: Plain labels, or the dict built by `attach_teacher_logits`.

    Returns:
        A tuple `(labels, teacher_logits)`; `teacher_logits` is `None` when
        the batch does not carry any.

    Raises:
        ValueError: if `y` is a dict without the expected keys.
    """
    if isinstance(y, dict):
        keys = set(y) - {SOFT_TARGET_TEMPERATURE_KEY, INDEX_KEY}
        if keys not in ({LABELS_KEY, TEACHER_LOGITS_KEY}, {LABELS_KEY}) or (
            SOFT_TARGET_TEMPERATURE_KEY in y and TEACHER_LOGITS_KEY not in y
        ):
            raise ValueError(
                "Invalid batch targets. Expected plain labels or a dict "
                f"with the keys {LABELS_KEY!r} and {TEACHER_LOGITS_KEY!r} "
                f"(optionally {SOFT_TARGET_TEMPERATURE_KEY!r}), or "
                f"{LABELS_KEY!r} alone, each optionally with {INDEX_KEY!r}. "
                f"Received a dict with keys: {sorted(y)}"
            )
        return y[LABELS_KEY], y.get(TEACHER_LOGITS_KEY)
    return y, None


def example_indices(y):
    """The batch's example indices `(batch,)` (`"index"` key), or `None`.

    Args:
        y: A batch's targets (see `split_targets`).

    Returns:
        The int tensor/array under `"index"`, else `None`.

    Example:

    >>> example_indices({"labels": [2, 0], "index": [7, 8]})
    [7, 8]
    >>> example_indices([2, 0]) is None
    True
    """
    if isinstance(y, dict):
        return y.get(INDEX_KEY)
    return None


def soft_target_temperature(y):
    """The temperature a batch's cached logits are exact at, or `None`.

    Args:
        y: A batch's targets (see `split_targets`).

    Returns:
        The `"soft_target_temperature"` values `(batch,)` of an ensemble
        cache's batch, else `None`.

    Example:

    >>> soft_target_temperature({"labels": [0], "teacher_logits": [[1.0]],
    ...                          "soft_target_temperature": [4.0]})
    [4.0]
    """
    if isinstance(y, dict):
        return y.get(SOFT_TARGET_TEMPERATURE_KEY)
    return None
