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
#: Optional key, with `"teacher_logits"`: `{layer name: (batch, ...)}`, the
#: teacher's outputs at the layers the terms read (`Distiller.
#: precompute_targets`); the teacher then does not run for that batch.
TEACHER_FEATURES_KEY = "teacher_features"
#: Optional key, `(batch,)` int: each example's index in the training set,
#: for terms with a per-example memory (`tfkd.CRD`).
INDEX_KEY = "index"
#: Optional key, `(batch,)`: the only temperature at which the cached
#: logits are exact (a teacher ensemble's mixture, `tfkd.ensembles`).
SOFT_TARGET_TEMPERATURE_KEY = "soft_target_temperature"


def attach_teacher_logits(
    labels, teacher_logits, soft_target_temperature=None, teacher_features=None
):
    """Builds the `y` of a batch that carries precomputed teacher logits.

    The `Distiller` skips the teacher for batches shaped
    `(x, {"labels": y, "teacher_logits": t})`; `tfkd.TeacherCache` streams
    batches in this form. With `teacher_features` as well, terms that read
    teacher layers (CRD, FitNets, ...) need no teacher pass either.

    Args:
        labels: The batch's labels.
        teacher_logits: Tensor of shape `(batch, teacher_classes)`.
        soft_target_temperature: `None`, or the float T at which the
            logits are exact soft targets (a teacher ensemble's mixture):
            added per example under `"soft_target_temperature"`, which the
            `Distiller`'s pre-flight compares with its own T. Defaults to
            `None`.
        teacher_features: `None`, or a dict from teacher layer name to that
            layer's output on the batch, `(batch, ...)`: every layer the
            `Distiller`'s terms read, as `Distiller.precompute_targets`
            returns them. Defaults to `None`.

    Returns:
        A dict with the keys `"labels"` and `"teacher_logits"` (and
        `"soft_target_temperature"`, `"teacher_features"` when given).

    Raises:
        TypeError: if `teacher_features` is not a dict of layer names.
    """
    targets = {LABELS_KEY: labels, TEACHER_LOGITS_KEY: teacher_logits}
    if soft_target_temperature is not None:
        targets[SOFT_TARGET_TEMPERATURE_KEY] = ops.full_like(
            teacher_logits[:, 0], soft_target_temperature, dtype="float32"
        )  # (batch,)
    if teacher_features is not None:
        if not isinstance(teacher_features, dict) or not all(
            isinstance(name, str) for name in teacher_features
        ):
            raise TypeError(
                "Invalid type for argument `teacher_features`. Expected a "
                "dict from teacher layer name (str) to that layer's outputs. "
                f"Received: {type(teacher_features).__name__}"
            )
        targets[TEACHER_FEATURES_KEY] = dict(teacher_features)
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
        with_logits = {LABELS_KEY, TEACHER_LOGITS_KEY}
        if keys not in (
            with_logits, with_logits | {TEACHER_FEATURES_KEY}, {LABELS_KEY}
        ) or (SOFT_TARGET_TEMPERATURE_KEY in y and TEACHER_LOGITS_KEY not in y):
            raise ValueError(
                "Invalid batch targets. Expected plain labels or a dict "
                f"with the keys {LABELS_KEY!r} and {TEACHER_LOGITS_KEY!r} "
                f"(optionally {SOFT_TARGET_TEMPERATURE_KEY!r} and "
                f"{TEACHER_FEATURES_KEY!r}), or {LABELS_KEY!r} alone, each "
                f"optionally with {INDEX_KEY!r}. "
                f"Received a dict with keys: {sorted(y)}"
            )
        return y[LABELS_KEY], y.get(TEACHER_LOGITS_KEY)
    return y, None


def cached_teacher_features(y):
    """The batch's precomputed teacher features, or `None`.

    Args:
        y: A batch's targets (see `split_targets`).

    Returns:
        The dict under `"teacher_features"` (teacher layer name to that
        layer's outputs on the batch), else `None`.

    Example:

    >>> cached_teacher_features({"labels": [0], "teacher_logits": [[1.0]],
    ...                          "teacher_features": {"dense": [[0.5]]}})
    {'dense': [[0.5]]}
    >>> cached_teacher_features([0]) is None
    True
    """
    if isinstance(y, dict):
        return y.get(TEACHER_FEATURES_KEY)
    return None


def check_cached_features(features, expected_shapes):
    """Checks a batch's `"teacher_features"` against the layers terms read.

    Args:
        features: The batch's dict, teacher layer name -> `(batch, ...)`.
        expected_shapes: `{layer name: shape (None, ...)}` of the teacher
            layers the terms read (`Distiller.teacher_feature_shapes`).

    Returns:
        `features`, restricted to and ordered as `expected_shapes`.

    Raises:
        ValueError: when no term reads a teacher layer, a layer is missing
            or unknown, or a layer's per-example shape differs.

    Example:

    >>> import numpy as np
    >>> features = {"hidden": np.zeros((2, 16))}
    >>> sorted(check_cached_features(features, {"hidden": (None, 16)}))
    ['hidden']
    """
    names, expected = sorted(features), sorted(expected_shapes)
    if names != expected:
        missing = [name for name in expected if name not in features]
        unknown = [name for name in names if name not in expected_shapes]
        raise ValueError(
            f"Invalid batch targets. Expected {TEACHER_FEATURES_KEY!r} with "
            f"exactly the teacher layers the terms read, {expected} (what "
            "`Distiller.precompute_targets` stores for these terms). "
            f"Received: layers {names}"
            + (f"; missing {missing}" if missing else "")
            + (f"; read by no term {unknown}" if unknown else "")
        )
    for name, shape in expected_shapes.items():
        received = tuple(features[name].shape)[1:]
        wanted = tuple(shape)[1:]
        if len(received) != len(wanted) or any(
            w is not None and r is not None and int(r) != int(w)
            for r, w in zip(received, wanted)
        ):
            raise ValueError(
                f"Invalid batch targets. Expected {TEACHER_FEATURES_KEY!r} "
                f"of layer {name!r} with shape (batch, *{wanted}), the "
                "teacher layer's output shape. Received: shape "
                f"{tuple(features[name].shape)}"
            )
    return {name: features[name] for name in expected_shapes}


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
