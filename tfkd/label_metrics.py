"""The student's predictions and labels as the compiled metrics get them.

`compute_metrics` hands sample weights only to `weighted_metrics`; the
plain `metrics` (`"accuracy"`, ...) honour a Keras mask on the predictions
instead, so unlabelled examples (label -1, a one-hot row of zeros, a
mixed example with an unlabelled share) leave both through a mask.
"""

import keras
from keras import ops

from tfkd import losses


class LabelledMask(keras.layers.Layer):
    """Attaches "which examples are labelled" to the logits as a Keras mask.

    Keras's metrics built on `MeanMetricWrapper` (the accuracies and
    cross-entropies) then leave the masked examples out.

    Example:

    >>> import numpy as np
    >>> layer = LabelledMask()
    >>> mask = layer.compute_mask((np.zeros((2, 3)), np.array([1.0, 0.0])))
    >>> np.asarray(mask).tolist()
    [True, False]
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs):
        logits, _ = inputs
        return ops.copy(logits)  # a new tensor, so the mask is its own

    def compute_mask(self, inputs, previous_mask=None):
        _, mask = inputs
        return mask > 0.0  # (batch,) bool


def metric_targets(labels, logits, sparse_labels):
    """`(labels, logits)` for `compute_metrics`; unlabelled examples masked.

    Metrics get the labels in the form the data has (class ids for sparse
    data, also after mixing made them rows), with -1 replaced by a valid
    class id (some metrics fail on -1) that the mask then leaves out.

    Args:
        labels: Sparse or one-hot labels (possibly mixed rows).
        logits: The student's logits `(batch, classes)`.
        sparse_labels: Whether the data's labels are class ids.

    Returns:
        `(labels, masked logits)`.

    Example:

    >>> import numpy as np
    >>> ids, logits = metric_targets(np.array([2, -1]), np.zeros((2, 3)), True)
    >>> np.asarray(ids).tolist()
    [2, 0]
    """
    num_classes = logits.shape[-1]
    mask = losses.labelled_mask(labels, num_classes)  # (batch,)
    # Made per trace rather than held by the Distiller: it has no state,
    # and the Distiller's tracked layers are what `.keras` files save.
    logits = LabelledMask(name="labelled_mask")((logits, mask))
    if losses.is_one_hot(ops.convert_to_tensor(labels), num_classes):
        if not sparse_labels:
            return labels, logits
    ids = losses.class_ids(labels, num_classes)  # (batch,)
    return ops.where(mask > 0.0, ids, ops.zeros_like(ids)), logits
