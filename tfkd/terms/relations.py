"""Relational knowledge distillation: RKD distance and RKD angle.

Park, Kim, Lu & Cho (2019), "Relational Knowledge Distillation"
(arXiv:1904.05068) transfer the *structure* of a batch rather than each
example's output: how far apart the teacher places every pair of examples,
and the angle every triplet forms. Teacher and student embeddings may have
different sizes. With `l_δ` the Huber loss (δ = 1, PyTorch's smooth L1):

    ψ_D(i, j)    = ‖e_i − e_j‖₂ / μ,   μ = mean over pairs i ≠ j of ‖e_i − e_j‖₂
    RKD-D        = mean over pairs i ≠ j of l_δ(ψ_D^s(i, j) − ψ_D^t(i, j))
    ψ_A(i, j, k) = cos ∠(e_j, e_i, e_k) = ⟨(e_j − e_i)/‖·‖, (e_k − e_i)/‖·‖⟩
    RKD-A        = mean over distinct triplets of l_δ(ψ_A^s − ψ_A^t)

(the authors' code averages over all `n²`/`n³` index tuples, including
degenerate ones whose loss is zero; averaging over distinct pairs and
triplets changes the loss by a constant factor only).

A loss over pairs has no per-example value: sample weights weight pair
`(i, j)` by `w_i · w_j` and triplet `(i, j, k)` by `w_i · w_j · w_k`, so an
example of weight 0 (padding) drops out of every relation and of `μ`. Under
`tf.distribute` the relations are those within each replica's share of the
batch. Features of any rank are flattened per example. Distances and
angles come from the Gram matrix of the centred batch (both are
translation-invariant), so memory is `O(n² + n³)` for `n` examples and does
not grow with the feature size.
"""

import keras
from keras import ops

from tfkd.terms import base
from tfkd.terms import methods

# Squared distances below this count as zero: sqrt's gradient stays finite
# for identical examples (and on the diagonal).
_SQUARED_EPSILON = 1e-12


def _huber(x):
    """Huber loss with δ = 1 of a difference `x` (PyTorch's smooth L1)."""
    absolute = ops.abs(x)
    return ops.where(absolute < 1.0, 0.5 * ops.square(x), absolute - 0.5)


def _centered_gram(features):
    """`(n, ...)` -> Gram matrix `(n, n)` of the centred, flattened batch."""
    embeddings = base.flatten_examples(features)  # (n, d)
    # Centring keeps the Gram entries small, so the differences below do
    # not cancel catastrophically in float32.
    embeddings = embeddings - ops.mean(embeddings, axis=0, keepdims=True)
    return ops.matmul(embeddings, ops.transpose(embeddings))  # (n, n)


def _distances(gram):
    """Pairwise Euclidean distances `(n, n)` from a Gram matrix."""
    norms = ops.diagonal(gram)  # (n,)
    squared = norms[:, None] + norms[None, :] - 2.0 * gram  # (n, n)
    return ops.sqrt(ops.maximum(squared, _SQUARED_EPSILON))


def _example_weights(features, sample_weight):
    n = ops.shape(features)[0]
    if sample_weight is None:
        return ops.ones((n,), "float32")
    return ops.reshape(ops.cast(sample_weight, "float32"), (-1,))  # (n,)


def _pair_weights(weights):
    """`w_i · w_j` for `i ≠ j`, 0 on the diagonal: `(n, n)`."""
    n = ops.shape(weights)[0]
    off_diagonal = 1.0 - ops.eye(n, dtype="float32")
    return weights[:, None] * weights[None, :] * off_diagonal


def _normalized_distances(features, pair_weights):
    distances = _distances(_centered_gram(features))  # (n, n)
    mean = ops.divide_no_nan(
        ops.sum(pair_weights * distances), ops.sum(pair_weights)
    )
    return ops.divide_no_nan(distances, mean)  # (n, n)


def rkd_distance_loss(teacher_features, student_features, sample_weight=None):
    """RKD distance loss of one batch (a scalar).

    Args:
        teacher_features: Tensor `(n, ...)`, the teacher's embeddings.
        student_features: Tensor `(n, ...)`, the student's, of any size.
        sample_weight: Optional weights `(n,)`; pair `(i, j)` counts with
            weight `w_i · w_j`. Defaults to `None` (all 1).

    Returns:
        A float32 scalar: the weighted mean over pairs `i ≠ j` of
        `huber(‖s_i − s_j‖ / μ_s − ‖t_i − t_j‖ / μ_t)`.

    Example:

    >>> import numpy as np
    >>> t = np.random.rand(8, 5)
    >>> float(rkd_distance_loss(t, 3.0 * t)) < 1e-6  # scale-invariant
    True
    """
    weights = _example_weights(teacher_features, sample_weight)
    pairs = _pair_weights(weights)  # (n, n)
    teacher = _normalized_distances(teacher_features, pairs)
    student = _normalized_distances(student_features, pairs)
    return ops.divide_no_nan(
        ops.sum(pairs * _huber(student - teacher)), ops.sum(pairs)
    )


def _angles(features):
    """`cos ∠(e_j, e_i, e_k)` for all triplets: `(n, n, n)` indexed [i, j, k].

    Entries with `j = i` or `k = i` (no angle) are exactly 0, for teacher
    and student alike, so they add nothing to the loss; `j = k` gives 1 for
    both, likewise.
    """
    gram = _centered_gram(features)  # (n, n)
    distances = _distances(gram)  # (n, n)
    n = ops.shape(gram)[0]
    inverse = ops.where(
        ops.eye(n, dtype="bool"), 0.0, 1.0 / distances
    )  # (n, n): 1 / ‖e_j − e_i‖, 0 for j = i
    diagonal = ops.diagonal(gram)  # (n,)
    # ⟨e_j − e_i, e_k − e_i⟩ = G_jk − G_ij − G_ik + G_ii
    dots = (
        gram[None, :, :]
        - gram[:, :, None]
        - gram[:, None, :]
        + diagonal[:, None, None]
    )  # (n, n, n)
    cosines = dots * inverse[:, :, None] * inverse[:, None, :]
    return ops.clip(cosines, -1.0, 1.0)


def rkd_angle_loss(teacher_features, student_features, sample_weight=None):
    """RKD angle loss of one batch (a scalar).

    Args:
        teacher_features: Tensor `(n, ...)`, the teacher's embeddings.
        student_features: Tensor `(n, ...)`, the student's, of any size.
        sample_weight: Optional weights `(n,)`; triplet `(i, j, k)` counts
            with weight `w_i · w_j · w_k`. Defaults to `None` (all 1).

    Returns:
        A float32 scalar: the weighted mean over distinct triplets of
        `huber(cos_s(i, j, k) − cos_t(i, j, k))`, the angle at `e_i`.

    Example:

    >>> import numpy as np
    >>> t = np.random.rand(6, 4)
    >>> float(rkd_angle_loss(t, 2.0 * t + 1.0)) < 1e-6  # similarity-invariant
    True
    """
    weights = _example_weights(teacher_features, sample_weight)  # (n,)
    # (n, n, n); zero (up to rounding, for j = k) off the distinct triplets,
    # so no (n, n, n) mask is needed: the sums below run over everything.
    losses = _huber(_angles(student_features) - _angles(teacher_features))
    if sample_weight is None:
        total = ops.sum(losses)
    else:
        total = ops.einsum("ijk,i,j,k->", losses, weights, weights, weights)
    # Σ over distinct ordered triplets of w_i w_j w_k, from power sums
    # S_p = Σ w^p: S1³ − 3·S1·S2 + 2·S3 (n(n − 1)(n − 2) for unit weights).
    s1 = ops.sum(weights)
    s2 = ops.sum(ops.square(weights))
    s3 = ops.sum(ops.power(weights, 3))
    count = s1**3 - 3.0 * s1 * s2 + 2.0 * s3
    return ops.divide_no_nan(total, count)


@keras.saving.register_keras_serializable(package="tfkd")
class RKDDistance(base.BatchScalarTerm):
    """RKD distance: the student keeps the teacher's pairwise distances.

    Park et al. (2019), "Relational Knowledge Distillation", the
    distance-wise loss: the Huber loss between the two models' pairwise
    distances, each divided by its batch mean (see `rkd_distance_loss`).
    The paper applies it to the final embeddings (the layer before the
    classifier); teacher and student sizes may differ.

    Args:
        teacher_layer: Name of the teacher's embedding layer, or `None` for
            its logits. Defaults to `None`.
        student_layer: Name of the student's embedding layer, or `None` for
            its logits. Defaults to `None`.
        weight: Float in [0, 1e6], the paper's λ_D. Defaults to `1.0` (its
            metric-learning setting; classification benchmarks that add RKD
            to a KD loss use 25, e.g. Tian et al., 2020).
        name: Defaults to `"rkd_distance_loss"`.

    Example:

    >>> import tfkd
    >>> tfkd.RKDDistance(teacher_layer="embedding",
    ...                  student_layer="embedding").weight
    1.0
    """

    default_name = "rkd_distance_loss"
    _loss_function = staticmethod(rkd_distance_loss)


@keras.saving.register_keras_serializable(package="tfkd")
class RKDAngle(base.BatchScalarTerm):
    """RKD angle: the student keeps the angles the teacher's triplets form.

    Park et al. (2019), "Relational Knowledge Distillation", the angle-wise
    loss (see `rkd_angle_loss`). Memory and time grow as `n³` for `n`
    examples per replica: about 8 MB of float32 per tensor at `n = 128`.

    Args:
        teacher_layer: Name of the teacher's embedding layer, or `None` for
            its logits. Defaults to `None`.
        student_layer: Name of the student's embedding layer, or `None` for
            its logits. Defaults to `None`.
        weight: Float in [0, 1e6], the paper's λ_A. Defaults to `2.0` (its
            metric-learning setting; 50 in classification benchmarks such
            as Tian et al., 2020).
        name: Defaults to `"rkd_angle_loss"`.

    Example:

    >>> import tfkd
    >>> tfkd.RKDAngle().get_config()["weight"]
    2.0
    """

    default_name = "rkd_angle_loss"
    _loss_function = staticmethod(rkd_angle_loss)

    def __init__(
        self, teacher_layer=None, student_layer=None, weight=2.0, name=None
    ):
        super().__init__(
            weight=weight,
            teacher_layer=teacher_layer,
            student_layer=student_layer,
            name=name,
        )


def _rkd(layers):
    # Both terms on the penultimate dense layers, weights 25 and 50.
    return [RKDDistance(layers.teacher_embedding, layers.student_embedding, weight=25.0),
            RKDAngle(layers.teacher_embedding, layers.student_embedding, weight=50.0)]


methods.register(methods.Method(
    "rkd", "Logit KD + RKD distance & angle (Park et al., 2019)", build=_rkd))
