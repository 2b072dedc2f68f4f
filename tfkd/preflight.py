"""Checks on the first batch, run by `Distiller.fit`/`evaluate` before training.

Everything here runs eagerly on a slice of one batch (at most
`PREFLIGHT_EXAMPLES` examples), so a mistake surfaces as a clear error in
the first second instead of as a collapsed student after an hour. It also
resolves `teacher_outputs="auto"` from the teacher's actual outputs.

Data that cannot be peeked at without consuming it (Python generators,
`PyDataset`s, distributed datasets) is not checked here; the training step
then tells probabilities from logits batch by batch.
"""

import numpy as np
import tensorflow as tf
import keras

from tfkd import losses
from tfkd import model_checks
from tfkd import teacher_outputs as teacher_outputs_lib

#: How many examples of the first batch the checks look at.
PREFLIGHT_EXAMPLES = 64


def no_teacher_signal_error():
    """The error for a training batch with no teacher and no cached logits."""
    return ValueError(
        "The Distiller has no teacher signal for this batch: teacher=None and "
        "the batch carries no teacher logits. Expected either a `teacher` "
        "model, or batches shaped (x, {'labels': y, 'teacher_logits': t}) "
        "such as `tfkd.TeacherCache.dataset()` streams. Received: "
        "teacher=None and plain labels"
    )


def refuse_augmentation_on_cached(distiller, cached_logits):
    """Raises if random augmentation would meet precomputed teacher logits.

    Cached logits were computed on other views of the images; training a
    student on a fresh random view against them teaches it the wrong
    targets (Beyer et al., 2022, "Knowledge distillation: A good teacher is
    patient and consistent"). Use online distillation with `augmentation`,
    or a cache of fixed augmented views.
    """
    if cached_logits is not None and distiller.augmentation is not None:
        raise ValueError(
            "Invalid value for argument `augmentation`. Expected None when "
            "batches carry precomputed teacher logits: those logits belong "
            "to the un-augmented (or cached) views, and a new random view "
            "would no longer match them (Beyer et al., 2022). Either "
            "distil online (teacher=..., augmentation=...) so both models "
            "see the same view, or cache K fixed augmented views. "
            f"Received: augmentation={distiller.augmentation.name!r} with "
            "cached teacher logits"
        )


def first_batch(x, y=None):
    """Returns a small `(x, y, sample_weight)` slice of the first batch.

    Args:
        x: What was passed to `fit`/`evaluate` as `x`: a `tf.data.Dataset`
            of batches, or arrays/tensors (then `y` holds the labels).
        y: The labels when `x` is an array.

    Returns:
        The tuple, or `None` when the data cannot be peeked at safely.
    """
    if isinstance(x, tf.data.Dataset):
        for batch in x.take(1):
            data = keras.utils.unpack_x_y_sample_weight(batch)
            return tuple(_head(part) for part in data)
        raise ValueError(
            "Invalid value for argument `x`. Expected a dataset with at "
            "least one batch. Received: an empty tf.data.Dataset"
        )
    if isinstance(x, (np.ndarray, tf.Tensor)) or (
        isinstance(x, dict)
        and all(isinstance(v, (np.ndarray, tf.Tensor)) for v in x.values())
    ):
        return _head(x), _head(y), None
    return None


def _head(structure):
    if structure is None:
        return None
    return tf.nest.map_structure(
        lambda a: a[:PREFLIGHT_EXAMPLES], structure
    )


def _call_model(model, role, x):
    try:
        return model(x, training=False)
    except Exception as error:  # the framework's error, re-worded
        shapes = tf.nest.map_structure(lambda a: tuple(a.shape), x)
        raise ValueError(
            f"Invalid value for argument `{role}`. Expected a model that "
            f"accepts the training batches. Received: {role} "
            f"{model.name!r} failed on a batch of shape {shapes}: {error}"
        ) from error


def _check_finite(name, values):
    array = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.isfinite(array).sum())
        raise ValueError(
            f"Invalid {name} in the first batch. Expected finite values. "
            f"Received: {bad} NaN/inf value(s) out of {array.size}"
        )


def _check_labels(labels, num_classes):
    labels = np.asarray(labels)
    if losses.is_one_hot(labels, num_classes):
        return
    if labels.ndim >= 2 and labels.shape[-1] != 1:
        raise ValueError(
            "Invalid labels in the first batch. Expected class ids of "
            f"shape (batch,) or one-hot rows of shape (batch, {num_classes}) "
            f"for a student with {num_classes} classes. Received: labels of "
            f"shape {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            raise ValueError(
                "Invalid labels in the first batch. Expected integer class "
                f"ids. Received: non-integer values such as "
                f"{labels.ravel()[:5].tolist()}"
            )
    low, high = labels.min(), labels.max()
    if low < 0 or high >= num_classes:
        raise ValueError(
            "Invalid labels in the first batch. Expected class ids in "
            f"[0, {num_classes - 1}] for a student with {num_classes} "
            f"classes. Received: labels from {low} to {high}"
        )


def check_first_batch(
    distiller, x, y=None, training=True, validation_data=None
):
    """Checks one batch against `distiller` and resolves "auto" outputs.

    Args:
        distiller: The `tfkd.Distiller`.
        x: As passed to `fit`/`evaluate`.
        y: As passed to `fit`/`evaluate`.
        training: Whether the data is for training (a teacher signal is
            then required).
        validation_data: The `validation_data` given to `fit`, if any.

    Raises:
        ValueError: for data that does not fit the models, labels out of
            range, non-finite inputs or teacher outputs, a class-count
            mismatch, or no teacher signal.
    """
    batch = first_batch(x, y)
    if batch is None:
        return
    inputs, targets, _ = batch
    labels, cached_logits = teacher_outputs_lib.split_targets(targets)
    if training:
        refuse_augmentation_on_cached(distiller, cached_logits)
        if cached_logits is None and distiller.teacher is None:
            raise no_teacher_signal_error()
    if isinstance(inputs, (np.ndarray, tf.Tensor)):
        _check_finite("inputs", inputs)

    student_logits = _call_model(distiller.student, "student", inputs)
    num_classes = student_logits.shape[-1]
    if labels is not None:
        _check_labels(labels, num_classes)

    if cached_logits is not None:
        outputs, kind = cached_logits, "logits"
    elif distiller.teacher is not None:
        outputs = _call_model(distiller.teacher, "teacher", inputs)
        kind = distiller.teacher_outputs
    else:
        return
    outputs = np.asarray(keras.ops.convert_to_numpy(outputs))
    _check_finite("teacher outputs", outputs)
    model_checks.check_class_counts(
        outputs.shape[-1], num_classes, distiller.teacher_class_indices
    )
    if cached_logits is None and kind == "auto":
        distiller.resolved_teacher_outputs = (
            "probabilities"
            if teacher_outputs_lib.looks_like_probabilities(outputs)
            else "logits"
        )
