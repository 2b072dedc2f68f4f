"""Function matching: one mixed batch for teacher and student.

Beyer et al. (2022), "Knowledge distillation: A good teacher is patient and
consistent" (arXiv:2106.05237), distil best when teacher and student see
exactly the same, aggressively augmented image, mixup included: the student
then matches the teacher's *function* on points between the training
images, not only on the images themselves. The `Distiller(mixing=...)`
argument does this with Keras's own batch-mixing layers,
`keras.layers.MixUp` and `keras.layers.CutMix` (Keras >= 3.8; tested on
3.12 and 3.15), applied once per training batch *before* either model
runs.

The labels are mixed with the same transformation (the layers' own
`{"images", "labels"}` API), so the hard-label loss stays correct: its
targets are the mixed one-hot rows `λ · y_i + (1 − λ) · y_j`. An unlabelled
example (label -1) contributes a row of zeros, so a mixed example is
labelled only when labelled examples make up all of it (its row sums to 1:
both partners labelled, or the unlabelled partner's share is 0); otherwise
it leaves the hard loss and the label metrics, and stays in the soft loss.

Keras's MixUp and CutMix draw their mixing weights from a Beta
distribution (`StatelessRandomGammaV3`), which XLA cannot compile on
TensorFlow 2.21 although the layers declare `supports_jit`; the `Distiller`
therefore compiles without XLA when it mixes (see `check_jit_compile`).
"""

import keras
from keras import ops

from tfkd import _keras_compat
from tfkd import losses
from tfkd.utils import validation

# A mixed row counts as labelled when its label mass is 1 within the
# rounding of λ + (1 − λ) in the layer's dtype (bfloat16 keeps 8 bits), so
# an unlabelled share below 1% is ignored.
_FULL_MASS_TOLERANCE = 1e-2

#: Keras's batch-mixing layers, whose Beta sampling XLA cannot compile.
KERAS_MIXING_LAYERS = tuple(
    getattr(keras.layers, name)
    for name in ("MixUp", "CutMix")
    if hasattr(keras.layers, name)
)


def check_mixing(mixing):
    """Returns `mixing` after checking it is a Keras layer (or `None`).

    Args:
        mixing: The `Distiller`'s `mixing` argument.

    Returns:
        `mixing`.

    Raises:
        TypeError: if `mixing` is neither `None` nor a `keras.layers.Layer`.
    """
    if mixing is not None and not isinstance(mixing, keras.layers.Layer):
        raise validation.invalid_type(
            "mixing",
            "a batch-mixing `keras.layers.Layer` such as "
            "keras.layers.MixUp(alpha=1.0), or None",
            mixing,
        )
    return mixing


def check_jit_compile(mixing, jit_compile):
    """The `jit_compile` to compile with when `mixing` is used.

    Args:
        mixing: The `Distiller`'s mixing layer, or `None`.
        jit_compile: The value given to `compile`.

    Returns:
        `jit_compile`, with `"auto"` turned into `False` when mixing.

    Raises:
        ValueError: for `jit_compile=True` with Keras's MixUp or CutMix.
    """
    if mixing is None:
        return jit_compile
    if jit_compile is True and isinstance(mixing, KERAS_MIXING_LAYERS):
        raise validation.invalid_value(
            "jit_compile",
            f"False or 'auto' with mixing={type(mixing).__name__}: it draws "
            "its mixing weights from a Beta distribution "
            "(StatelessRandomGammaV3), which XLA cannot compile",
            jit_compile,
        )
    return False if jit_compile == "auto" else jit_compile


def mix_batch(mixing, inputs, labels, num_classes):
    """Mixes a batch and its labels with one random transformation.

    Args:
        mixing: A batch-mixing layer (`keras.layers.MixUp`, `CutMix`, or a
            layer with the same `{"images", "labels"}` call API).
        inputs: The batch of images, `(batch, height, width, channels)`.
        labels: Sparse ids `(batch,)`/`(batch, 1)` (-1 for unlabelled) or
            one-hot rows `(batch, classes)`, or `None` (no labels).
        num_classes: The student's number of classes.

    Returns:
        A tuple `(mixed_inputs, mixed_targets)`: `mixed_targets` is float32
        `(batch, classes)`, the mixed one-hot rows, with a row of zeros for
        each example that is not made of labelled examples only; `None`
        when `labels` is `None`.
    """
    if labels is None:
        return mixing(inputs, training=True), None
    labels = ops.convert_to_tensor(labels)
    mask = losses.labelled_mask(labels, num_classes)  # (batch,)
    if losses.is_one_hot(labels, num_classes):
        rows = ops.cast(labels, "float32")  # (batch, classes)
    else:
        ids = losses.class_ids(labels, num_classes)  # (batch,), -1 allowed
        rows = ops.one_hot(ops.maximum(ids, 0), num_classes)
    rows = rows * mask[:, None]  # unlabelled -> zeros, (batch, classes)
    images, targets = _keras_compat.mix_images_and_labels(mixing, inputs, rows)
    targets = ops.cast(targets, "float32")  # (batch, classes)
    mass = ops.sum(targets, axis=-1, keepdims=True)  # (batch, 1)
    complete = ops.cast(mass >= 1.0 - _FULL_MASS_TOLERANCE, "float32")
    return images, complete * targets
