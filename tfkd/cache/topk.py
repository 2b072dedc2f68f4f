"""Top-k storage of teacher logits, and how good the reconstruction is.

With many classes most of a row of logits carries almost no probability.
Top-k storage keeps, per example, the k largest logits, their class
indices and one *fill* logit given to each of the other C - k classes:

    fill = T · (logsumexp_{j ∉ top-k}(z_j / T) − log(C − k))

With that fill, at temperature T the reconstructed logits z' have the same
partition function as z, so softmax(z' / T) gives every top-k class its
exact probability q_i and spreads the exact tail mass m = Σ_{j ∉ top-k} q_j
evenly over the other classes. T is `top_k_temperature` at build time; use
the temperature you distil with (at another temperature the top-k
probabilities shift slightly too).

Error of the KD loss. With q = softmax(z / T), s = softmax(student / T) and
L(q) = T² · KL(q ‖ s), only the tail changes, and it keeps its mass, so

    |L(q') − L(q)| ≤ T² · m · (log(C − k) + range_tail(student) / T)

where range_tail is max − min of the student's logits over the tail
classes: the entropy part of the KL moves by at most m · log(C − k) (a
uniform tail has the most entropy a mass m can have over C − k classes) and
the cross-entropy part by at most m · range_tail(log s), because the tail
differences sum to zero. The gradient with respect to the student logits,
T · (s − q), moves by at most 2 · T · m in L1 norm. Both bounds are linear
in the tail mass m, which the build records (`tail_mass_mean`,
`tail_mass_max` in the metadata) so you can see what k costs you.

This is the "marginal smoothing" of Shen & Xing (2022), "A Fast Knowledge
Distillation Framework for Visual Recognition" (FKD), generalised to any T.

Sizes. float16 values + int16 indices + one float16 fill take 4k + 2 bytes
per example: ImageNet (1.28 M examples, 1000 classes) is 2.6 GB of float16
logits, 54 MB at k = 10 and 28 MB at k = 5.

Measured error. Mean relative error of the KD loss, top-k (float16 storage,
fill exact at the distillation T) against the full float64 logits, on
synthetic 1000-class teachers, 4096 examples, student logits ~ N(0, 1)
(`tests/test_cache_topk.py` re-checks the confident k = 10, T = 1 cell):

    confident teacher: z ~ N(0, 1), true class + 12 (tail mass 1.6 % at T=1)
        k     T = 1     T = 2     T = 4
        5     0.11 %    6.7 %     29 %
        10    0.10 %    6.3 %     28 %
        20    0.08 %    5.7 %     26 %
    unsure teacher: z ~ N(0, 2²), true class + 8 (tail mass 41 % at T=1, k=10)
        5     23 %      55 %      70 %
        10    18 %      49 %      65 %
        20    13 %      42 %      59 %

Dense float16 storage, for comparison, is within 0.03 % everywhere. The
bound held on every example (10-300x loose). What it means in practice:
top-k suits a confident teacher distilled at T ≈ 1 (as FKD does on
ImageNet); a high T over many classes moves most of the mass into the tail
(97 % at T = 4 above), where a uniform fill cannot carry the teacher's
"dark knowledge". Check `tail_mass_mean` in the metadata before relying on
it, and store dense logits (2 bytes per class) when classes are few.
"""

import numpy as np

from tfkd import backend_support

tf = backend_support.lazy_tensorflow(
    "top-k decoding inside a tf.data pipeline",
    "tfkd.cache.topk.reconstruct (NumPy)",
)

# int16 indices cover every class of ImageNet-21k and halve the index bytes.
_INT16_CLASSES = np.iinfo(np.int16).max + 1


def index_dtype(classes):
    """The smallest integer dtype holding class indices below `classes`."""
    return np.dtype(np.int16) if classes <= _INT16_CLASSES else np.dtype(np.int32)


def _logsumexp(x, axis=-1):
    peak = np.max(x, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    return np.log(np.sum(np.exp(x - peak), axis=axis)) + np.squeeze(peak, axis)


def top_k_indices(logits, k):
    """Indices of the k largest logits per row, largest first, `(n, k)`."""
    part = np.argpartition(-logits, k - 1, axis=-1)[:, :k]
    values = np.take_along_axis(logits, part, axis=-1)
    order = np.argsort(-values, axis=-1, kind="stable")
    return np.take_along_axis(part, order, axis=-1)


def compress(logits, k, temperature=1.0):
    """Keeps the k largest logits per row and the fill of the others.

    Args:
        logits: NumPy array of shape `(n, classes)`, finite.
        k: Int in [1, classes).
        temperature: Float > 0, the temperature at which the tail mass is
            kept exact. Defaults to `1.0`.

    Returns:
        A tuple `(values, indices, fill)`: float32 `(n, k)`, indices in
        `index_dtype(classes)` `(n, k)` and float32 `(n,)`.

    Example:

    >>> import numpy as np
    >>> values, indices, fill = compress(np.array([[3.0, 0.0, 1.0]]), k=1)
    >>> indices.tolist(), values.tolist()
    ([[0]], [[3.0]])
    """
    logits = np.asarray(logits, dtype=np.float32)
    classes = logits.shape[-1]
    indices = top_k_indices(logits, k)  # (n, k)
    values = np.take_along_axis(logits, indices, axis=-1)  # (n, k)
    tail = logits.astype(np.float64) / temperature  # (n, classes)
    np.put_along_axis(tail, indices, -np.inf, axis=-1)
    fill = temperature * (_logsumexp(tail) - np.log(classes - k))  # (n,)
    return (
        values,
        indices.astype(index_dtype(classes)),
        fill.astype(np.float32),
    )


def reconstruct(values, indices, fill, classes):
    """Dense logits from top-k storage (NumPy).

    Args:
        values: Array `(n, k)`.
        indices: Integer array `(n, k)`.
        fill: Array `(n,)`.
        classes: Number of classes C.

    Returns:
        A float32 array `(n, classes)`.
    """
    fill = np.asarray(fill, dtype=np.float32)
    dense = np.repeat(fill[:, np.newaxis], classes, axis=-1)
    np.put_along_axis(
        dense,
        np.asarray(indices, dtype=np.int64),
        np.asarray(values, dtype=np.float32),
        axis=-1,
    )
    return dense


def reconstruct_tensor(values, indices, fill, classes):
    """Dense logits from top-k storage, inside a `tf.data` map.

    Args:
        values: Tensor `(batch, k)`.
        indices: Integer tensor `(batch, k)`.
        fill: Tensor `(batch,)`.
        classes: Number of classes C (a Python int).

    Returns:
        A float32 tensor `(batch, classes)`.
    """
    values = tf.cast(values, tf.float32)
    fill = tf.cast(fill, tf.float32)
    batch = tf.shape(values)[0]
    dense = tf.broadcast_to(fill[:, tf.newaxis], tf.stack([batch, classes]))
    rows = tf.broadcast_to(tf.range(batch)[:, tf.newaxis], tf.shape(values))
    positions = tf.stack([rows, tf.cast(indices, tf.int32)], axis=-1)
    return tf.tensor_scatter_nd_update(dense, positions, values)


def _softmax(x):
    return np.exp(x - _logsumexp(x)[:, np.newaxis])


def tail_mass(logits, k, temperature=1.0):
    """Probability outside the k largest classes, per row, at temperature T.

    Args:
        logits: Array `(n, classes)`.
        k: Int in [1, classes).
        temperature: Float > 0. Defaults to `1.0`.

    Returns:
        A float64 array `(n,)` of masses in [0, 1].
    """
    logits = np.asarray(logits, dtype=np.float64)
    probabilities = _softmax(logits / temperature)
    top = np.take_along_axis(probabilities, top_k_indices(logits, k), axis=-1)
    return np.clip(1.0 - top.sum(axis=-1), 0.0, 1.0)


def kd_loss(teacher_logits, student_logits, temperature):
    """Per-example `T² · KL(softmax(t/T) ‖ softmax(s/T))` in float64 (NumPy)."""
    t = np.asarray(teacher_logits, dtype=np.float64) / temperature
    s = np.asarray(student_logits, dtype=np.float64) / temperature
    log_q = t - _logsumexp(t)[:, np.newaxis]
    log_s = s - _logsumexp(s)[:, np.newaxis]
    return temperature**2 * np.sum(np.exp(log_q) * (log_q - log_s), axis=-1)


def kd_loss_error_bound(teacher_logits, student_logits, k, temperature):
    """Per-example bound on the KD-loss change caused by top-k storage.

    `T² · m · (log(C − k) + range_tail(student) / T)`, valid when the
    cache's `top_k_temperature` equals `temperature` (see the module
    docstring for the derivation).

    Args:
        teacher_logits: Array `(n, classes)`, the full logits.
        student_logits: Array `(n, classes)`.
        k: Int in [1, classes).
        temperature: Float > 0.

    Returns:
        A float64 array `(n,)`.
    """
    teacher_logits = np.asarray(teacher_logits, dtype=np.float64)
    student_logits = np.asarray(student_logits, dtype=np.float64)
    classes = teacher_logits.shape[-1]
    mass = tail_mass(teacher_logits, k, temperature)
    tail = np.ones_like(student_logits, dtype=bool)
    np.put_along_axis(tail, top_k_indices(teacher_logits, k), False, axis=-1)
    high = np.where(tail, student_logits, -np.inf).max(axis=-1)
    low = np.where(tail, student_logits, np.inf).min(axis=-1)
    return temperature**2 * mass * (
        np.log(classes - k) + (high - low) / temperature
    )
