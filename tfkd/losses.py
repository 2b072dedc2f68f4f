"""Knowledge-distillation losses.

The soft-target loss of Hinton, Vinyals & Dean (2015), "Distilling the
Knowledge in a Neural Network" (arXiv:1503.02531):

    soft(t, s) = T² · KL(softmax(t / T) ‖ softmax(s / T))

and the usual combination with the hard-label loss:

    total = α · CE(labels, s) + (1 − α) · soft(t, s)

Both are computed from `log_softmax` in float32, whatever the dtype of the
logits (mixed precision students emit float16/bfloat16 logits), and never
from clipped probabilities: the KL stays exact for confident teachers and its
gradient with respect to the student logits is exactly
`T · (softmax(s / T) − softmax(t / T))` per example.

The pure functions return one value per example, shape `(batch,)`, so a
caller can apply sample weights and its own reduction. `KnowledgeDistillation`
wraps them in a serializable `keras.losses.Loss` for plain
`model.compile(loss=...)` training from cached teacher logits.
"""

import keras
from keras import ops

from tfkd import hyperparameters
from tfkd.utils import validation


def _as_float32(x):
    x = ops.convert_to_tensor(x)
    return ops.cast(x, "float32") if x.dtype != "float32" else x


def soft_target_loss(teacher_logits, student_logits, temperature=4.0):
    """Per-example soft-target loss `T² · KL(softmax(t/T) ‖ softmax(s/T))`.

    The T² factor keeps the gradient magnitude of the soft targets roughly
    independent of T, as Hinton et al. (2015, section 2) recommend, so that
    α keeps its meaning when T changes.

    Args:
        teacher_logits: Tensor of shape `(batch, classes)`: the teacher's
            logits (or log-probabilities, which are logits too).
        student_logits: Tensor of shape `(batch, classes)`.
        temperature: Float in [0.01, 100], the softmax temperature T. Defaults to `4.0`.

    Returns:
        A float32 tensor of shape `(batch,)`.

    Example:

    >>> import numpy as np
    >>> t = np.array([[2.0, 0.0, -1.0]])
    >>> float(soft_target_loss(t, t, temperature=2.0)[0])
    0.0
    """
    temperature = hyperparameters.check_temperature(temperature)
    teacher_log_probs = ops.log_softmax(
        _as_float32(teacher_logits) / temperature, axis=-1
    )  # (batch, classes)
    student_log_probs = ops.log_softmax(
        _as_float32(student_logits) / temperature, axis=-1
    )  # (batch, classes)
    kl = ops.sum(
        ops.exp(teacher_log_probs) * (teacher_log_probs - student_log_probs),
        axis=-1,
    )  # (batch,)
    return (temperature**2) * kl


#: ε of logit standardization, as in the authors' code (Sun et al., 2024).
STANDARDIZATION_EPSILON = 1e-7


def standardize_logits(logits):
    """Z-scores each example's logits over the classes.

    Logit standardization (Sun, Ren, Li, Wang & Cao, 2024, "Logit
    Standardization in Knowledge Distillation", CVPR 2024): a student need
    not match the teacher's logit *range*, only their relations, so both
    models' logits are standardized before the temperature and the KL:

        z̃ = (z − mean(z)) / (std(z) + ε),   std with ddof = 1, ε = 1e-7

    exactly as the authors' code (`torch.std` is unbiased). The result is
    shift- and scale-invariant per example.

    Args:
        logits: Tensor of shape `(batch, classes)`, classes >= 2.

    Returns:
        A float32 tensor of the same shape.

    Example:

    >>> import numpy as np
    >>> z = standardize_logits(np.array([[1.0, 2.0, 3.0]]))
    >>> np.round(np.asarray(z), 4).tolist()
    [[-1.0, 0.0, 1.0]]
    """
    logits = _as_float32(ops.convert_to_tensor(logits))
    classes = ops.cast(ops.shape(logits)[-1], "float32")
    mean = ops.mean(logits, axis=-1, keepdims=True)  # (batch, 1)
    centred = logits - mean  # (batch, classes)
    variance = ops.sum(ops.square(centred), axis=-1, keepdims=True) / (
        classes - 1.0
    )  # (batch, 1), ddof = 1
    return centred / (ops.sqrt(variance) + STANDARDIZATION_EPSILON)


#: The sparse label that marks an unlabelled example (semi-supervised data).
UNLABELLED = -1


def hard_target_loss(labels, student_logits):
    """Per-example cross-entropy of the student logits against the labels.

    Sparse labels (integers, shape `(batch,)` or `(batch, 1)`) and one-hot
    labels (shape `(batch, classes)`, also mixed or smoothed rows) are both
    accepted; the form is read from the static shapes. An unlabelled
    example (sparse label `UNLABELLED`, i.e. -1, or a one-hot row of
    zeros, which is what `keras.ops.one_hot(-1, classes)` gives) has a loss
    of exactly 0 and no gradient; `labelled_mask` tells which they are.

    Args:
        labels: Integer class ids or one-hot rows.
        student_logits: Tensor of shape `(batch, classes)`.

    Returns:
        A float32 tensor of shape `(batch,)`.

    Example:

    >>> import numpy as np
    >>> loss = hard_target_loss(np.array([0, -1]), np.zeros((2, 2)))
    >>> [round(float(v), 4) for v in loss]  # log(2), then unlabelled
    [0.6931, 0.0]
    """
    student_logits = _as_float32(student_logits)
    labels = ops.convert_to_tensor(labels)
    num_classes = student_logits.shape[-1]
    if is_one_hot(labels, num_classes):
        rows = _as_float32(labels)  # (batch, classes)
        loss = keras.losses.categorical_crossentropy(
            rows, student_logits, from_logits=True
        )  # (batch,)
        # A row of zeros has loss 0, but TensorFlow's fused softmax
        # cross-entropy assumes rows summing to 1: its gradient would be
        # softmax(s) - 0, not 0. The mask zeroes that gradient.
        mass = ops.sum(ops.abs(rows), axis=-1)  # (batch,)
        return loss * ops.cast(mass > 0.0, "float32")
    ids = _sparse_ids(labels)  # (batch,)
    labelled = ops.not_equal(ids, UNLABELLED)  # (batch,)
    # Class 0 stands in for -1, which the sparse cross-entropy kernel
    # refuses (CPU) or turns into NaN (GPU); the mask then zeroes it, and
    # its gradient with it. Other out-of-range labels still fail there.
    safe_ids = ops.where(labelled, ids, ops.zeros_like(ids))
    loss = keras.losses.sparse_categorical_crossentropy(
        safe_ids, student_logits, from_logits=True
    )  # (batch,)
    return loss * ops.cast(labelled, "float32")


def _sparse_ids(labels):
    """int32 ids `(batch,)` from sparse labels `(batch,)` or `(batch, 1)`."""
    if len(labels.shape) >= 2:
        labels = ops.reshape(labels, (-1,))  # (batch, 1) -> (batch,)
    return ops.cast(labels, "int32")


def labelled_mask(labels, num_classes):
    """1.0 for each labelled example of a batch, 0.0 for each unlabelled one.

    Unlabelled means a sparse label of `UNLABELLED` (-1) or a one-hot row
    that is all zeros.

    Args:
        labels: Integer class ids `(batch,)`/`(batch, 1)` or one-hot rows
            `(batch, classes)`.
        num_classes: The student's number of classes.

    Returns:
        A float32 tensor of shape `(batch,)`.

    Example:

    >>> import numpy as np
    >>> labelled_mask(np.array([2, -1, 0]), 3).numpy().tolist()
    [1.0, 0.0, 1.0]
    """
    labels = ops.convert_to_tensor(labels)
    if is_one_hot(labels, num_classes):
        mass = ops.sum(ops.abs(_as_float32(labels)), axis=-1)  # (batch,)
        return ops.cast(mass > 0.0, "float32")
    return ops.cast(ops.not_equal(_sparse_ids(labels), UNLABELLED), "float32")


def class_ids(labels, num_classes):
    """Sparse int32 class ids `(batch,)` from sparse or one-hot `labels`.

    The one conversion tfkd uses everywhere labels become class ids: one-hot
    (or mixed) rows give their largest entry, sparse labels are flattened.
    Unlabelled examples stay -1 (sparse) or give 0 (a row of zeros): mask
    them with `labelled_mask`.

    Args:
        labels: Integer class ids `(batch,)`/`(batch, 1)` or one-hot rows
            `(batch, classes)`; arrays or tensors.
        num_classes: The student's number of classes.

    Returns:
        An int32 tensor of shape `(batch,)`.

    Example:

    >>> import numpy as np
    >>> class_ids(np.eye(3)[[2, 0]], 3).numpy().tolist()
    [2, 0]
    >>> class_ids(np.array([[1], [-1]]), 3).numpy().tolist()
    [1, -1]
    """
    labels = ops.convert_to_tensor(labels)
    if is_one_hot(labels, num_classes):
        return ops.cast(ops.argmax(labels, axis=-1), "int32")
    return _sparse_ids(labels)


def is_one_hot(labels, num_classes):
    """Whether `labels` are one-hot rows for `num_classes` classes (static)."""
    return (
        len(labels.shape) >= 2
        and labels.shape[-1] == num_classes
        and num_classes is not None
        and num_classes > 1
    )


def knowledge_distillation_loss(
    labels, student_logits, teacher_logits, temperature=4.0, alpha=0.1
):
    """Per-example `α · CE(labels, s) + (1 − α) · T² · KL(t/T ‖ s/T)`.

    Args:
        labels: Integer class ids `(batch,)`/`(batch, 1)` or one-hot rows
            `(batch, classes)`.
        student_logits: Tensor of shape `(batch, classes)`.
        teacher_logits: Tensor of shape `(batch, classes)`.
        temperature: Float in [0.01, 100]. Defaults to `4.0`.
        alpha: Float in [0, 1], the weight of the hard-label loss.
            Defaults to `0.1`.

    Returns:
        A float32 tensor of shape `(batch,)`.

    Example:

    >>> import numpy as np
    >>> s = np.array([[1.0, 0.0]]); t = np.array([[3.0, -1.0]])
    >>> loss = knowledge_distillation_loss(np.array([0]), s, t, 4.0, 0.5)
    >>> loss.shape
    TensorShape([1])
    """
    alpha = validation.check_alpha(alpha)
    hard = hard_target_loss(labels, student_logits)
    soft = soft_target_loss(teacher_logits, student_logits, temperature)
    return alpha * hard + (1.0 - alpha) * soft


def pack_targets(labels, teacher_logits):
    """Packs labels and teacher logits into one `y` for `KnowledgeDistillation`.

    Keras hands a loss a single `y_true`; this puts the class id in column 0
    and the teacher logits after it, shape `(batch, 1 + classes)`. One-hot
    labels are reduced to their class id.

    Args:
        labels: Integer class ids or one-hot rows.
        teacher_logits: Array of shape `(batch, classes)`.

    Returns:
        A float32 tensor of shape `(batch, 1 + classes)`.

    Example:

    >>> import numpy as np
    >>> pack_targets(np.array([2]), np.zeros((1, 3))).shape
    TensorShape([1, 4])
    """
    teacher_logits = _as_float32(teacher_logits)
    labels = class_ids(labels, teacher_logits.shape[-1])  # (batch,)
    labels = ops.reshape(_as_float32(labels), (-1, 1))
    return ops.concatenate([labels, teacher_logits], axis=-1)


def unpack_targets(packed):
    """Splits the output of `pack_targets` into `(labels, teacher_logits)`."""
    packed = _as_float32(packed)
    return ops.cast(packed[:, 0], "int32"), packed[:, 1:]


@keras.saving.register_keras_serializable(package="tfkd")
class KnowledgeDistillation(keras.losses.Loss):
    """Serializable KD loss for `model.compile` with cached teacher logits.

    Trains a student with plain `model.fit` when the teacher's logits were
    computed beforehand: pack them with the labels using `pack_targets`, so
    that `y_true` has shape `(batch, 1 + classes)`. The loss is
    `α · CE + (1 − α) · T² · KL` (Hinton et al., 2015), computed in float32.
    Being a `keras.losses.Loss`, it is scaled correctly under
    `tf.distribute` and honours sample weights.

    Args:
        temperature: Float in [0.01, 100]. Defaults to `4.0`.
        alpha: Float in [0, 1], the weight of the hard-label loss.
            Defaults to `0.1`.
        reduction: As for any Keras loss. Defaults to `"sum_over_batch_size"`.
        name: Defaults to `"knowledge_distillation"`.

    Example:

    >>> import numpy as np, keras
    >>> x = np.random.rand(8, 4).astype("float32")
    >>> y = pack_targets(np.arange(8) % 3, np.random.randn(8, 3))
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> model.compile("adam", loss=KnowledgeDistillation(temperature=2.0))
    >>> _ = model.fit(x, y, epochs=1, verbose=0)
    """

    def __init__(
        self,
        temperature=4.0,
        alpha=0.1,
        reduction="sum_over_batch_size",
        name="knowledge_distillation",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = hyperparameters.check_temperature(temperature)
        self.alpha = validation.check_alpha(alpha)

    def call(self, y_true, y_pred):
        labels, teacher_logits = unpack_targets(y_true)
        return knowledge_distillation_loss(
            labels, y_pred, teacher_logits, self.temperature, self.alpha
        )

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature, "alpha": self.alpha})
        return config
