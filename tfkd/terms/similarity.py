"""Batch-similarity distillation: similarity-preserving KD and PKT.

Both transfer how the teacher's representation relates the examples of a
batch to each other, not the representation itself, so teacher and student
features may have any (different) sizes; features of any rank are
flattened per example. Under `tf.distribute` the relations are those
within each replica's share of the batch.

Similarity-preserving KD (Tung & Mori, 2019, "Similarity-Preserving
Knowledge Distillation", ICCV, arXiv:1907.09682), with `F` the flattened
`(b, d)` features and `G̃` the batch Gram matrix `F Fᵀ` with each row
L2-normalised:

    SP = ‖G̃_t − G̃_s‖_F² / b²

Probabilistic knowledge transfer (Passalis & Tefas, 2018, "Learning Deep
Representations with Probabilistic Knowledge Transfer", ECCV,
arXiv:1803.10837): the cosine similarity of every pair, mapped to [0, 1]
by `(cos + 1) / 2`, each row normalised to a conditional distribution
`p_{j|i}`, and

    PKT = Σ_ij p^t_{j|i} · log((p^t_{j|i} + ε) / (p^s_{j|i} + ε)) / b²,  ε = 1e-7

i.e. KL(teacher ‖ student) of the conditional distributions, summed over
`j` and averaged over the `b²` entries as in the authors' code (their
`torch.mean` over the `b × b` matrix).
"""

import keras
from keras import ops

from tfkd.terms import base
from tfkd.terms import methods

#: ε of PKT, as in the authors' code (github.com/passalis/probabilistic_kt).
PKT_EPSILON = 1e-7


def _example_weights(features, sample_weight):
    """`(b,)` float32 weights, all 1 without `sample_weight`."""
    if sample_weight is None:
        return ops.ones((ops.shape(features)[0],), "float32")
    return ops.reshape(ops.cast(sample_weight, "float32"), (-1,))


def _normalized_gram(features):
    """Row-L2-normalised Gram matrix `(b, b)` of the flattened batch."""
    embeddings = base.flatten_examples(features)  # (b, d)
    gram = ops.matmul(embeddings, ops.transpose(embeddings))  # (b, b)
    # `keras.ops.normalize`'s value, with a finite gradient for an all-zero
    # row (dead ReLUs), where its `rsqrt` gives NaN gradients on JAX.
    norms = base.sqrt_zero_gradient_at_zero(
        ops.sum(ops.square(gram), axis=-1, keepdims=True)
    )  # (b, 1)
    return gram / ops.maximum(norms, keras.config.epsilon())


def similarity_preserving_loss(
    teacher_features, student_features, sample_weight=None
):
    """SP loss of one batch, `‖G̃_t − G̃_s‖_F² / b²` (a scalar).

    Args:
        teacher_features: Tensor `(b, ...)`.
        student_features: Tensor `(b, ...)`, of any size.
        sample_weight: Optional weights `(b,)`: entry `(i, j)` counts with
            weight `w_i · w_j` (the Gram rows are still normalised over
            the whole batch). Defaults to `None`.

    Returns:
        A float32 scalar.

    Example:

    >>> import numpy as np
    >>> f = np.random.rand(6, 4)
    >>> float(similarity_preserving_loss(f, 2.0 * f)) < 1e-7  # scale-invariant
    True
    """
    weights = _example_weights(teacher_features, sample_weight)  # (b,)
    difference = _normalized_gram(teacher_features) - _normalized_gram(
        student_features
    )  # (b, b)
    pair_weights = weights[:, None] * weights[None, :]  # (b, b)
    count = ops.cast(ops.shape(weights)[0], "float32")
    return ops.sum(pair_weights * ops.square(difference)) / ops.square(count)


def _conditional_similarities(features):
    """`p_{j|i}` `(b, b)`: cosine similarities in [0, 1], rows summing to 1."""
    embeddings = base.flatten_examples(features)  # (b, d)
    norms = base.sqrt_zero_gradient_at_zero(
        ops.sum(ops.square(embeddings), axis=-1, keepdims=True)
    )  # (b, 1)
    embeddings = embeddings / (norms + PKT_EPSILON)  # (b, d)
    similarity = ops.matmul(embeddings, ops.transpose(embeddings))  # (b, b)
    similarity = (similarity + 1.0) / 2.0
    return similarity / ops.sum(similarity, axis=-1, keepdims=True)


def pkt_loss(teacher_features, student_features, sample_weight=None):
    """PKT loss of one batch (a scalar).

    Args:
        teacher_features: Tensor `(b, ...)`.
        student_features: Tensor `(b, ...)`, of any size.
        sample_weight: Optional weights `(b,)`, weighting each row `i`
            (the conditional distribution of example `i`). Defaults to
            `None`.

    Returns:
        A float32 scalar: `Σ_i w_i Σ_j p^t_{j|i} log((p^t_{j|i} + ε) /
        (p^s_{j|i} + ε)) / b²`.

    Example:

    >>> import numpy as np
    >>> f = np.random.rand(6, 4)
    >>> float(pkt_loss(f, 3.0 * f)) < 1e-6  # cosine: scale-invariant
    True
    """
    weights = _example_weights(teacher_features, sample_weight)  # (b,)
    teacher = _conditional_similarities(teacher_features)  # (b, b)
    student = _conditional_similarities(student_features)  # (b, b)
    per_row = ops.sum(
        teacher
        * ops.log((teacher + PKT_EPSILON) / (student + PKT_EPSILON)),
        axis=-1,
    )  # (b,)
    count = ops.cast(ops.shape(weights)[0], "float32")
    return ops.sum(weights * per_row) / ops.square(count)


@keras.saving.register_keras_serializable(package="tfkd")
class SimilarityPreserving(base.BatchScalarTerm):
    """SP: the student keeps the teacher's batch similarity matrix.

    Tung & Mori (2019), "Similarity-Preserving Knowledge Distillation":
    `‖G̃_t − G̃_s‖_F² / b²` with `G̃` the row-L2-normalised Gram matrix of
    the batch's flattened features (see `similarity_preserving_loss`).
    The paper (and the CRD benchmark code) uses the last convolutional
    block's output with weight γ = 3000.

    Args:
        teacher_layer: Name of the teacher layer, or `None` for its logits.
            Defaults to `None`.
        student_layer: Name of the student layer, or `None` for its logits.
            Defaults to `None`.
        weight: Float in [0, 1e6], the paper's γ. Defaults to `3000.0`.
        name: Defaults to `"sp_loss"`.

    Example:

    >>> import tfkd
    >>> tfkd.SP(teacher_layer="block3", student_layer="block2").weight
    3000.0
    """

    default_name = "sp_loss"
    _loss_function = staticmethod(similarity_preserving_loss)

    def __init__(
        self, teacher_layer=None, student_layer=None, weight=3000.0, name=None
    ):
        super().__init__(
            teacher_layer=teacher_layer,
            student_layer=student_layer,
            weight=weight,
            name=name,
        )


@keras.saving.register_keras_serializable(package="tfkd")
class PKT(base.BatchScalarTerm):
    """PKT: the student keeps the teacher's pairwise-similarity distributions.

    Passalis & Tefas (2018), "Learning Deep Representations with
    Probabilistic Knowledge Transfer": cosine similarities mapped to
    [0, 1], rows normalised to conditional probabilities, and the KL from
    the teacher's to the student's (see `pkt_loss`). The paper applies it
    to the penultimate embeddings; the CRD benchmark code weights it
    30000.

    Args:
        teacher_layer: Name of the teacher's embedding layer, or `None`
            for its logits. Defaults to `None`.
        student_layer: Name of the student's embedding layer, or `None`
            for its logits. Defaults to `None`.
        weight: Float in [0, 1e6]. Defaults to `1.0`.
        name: Defaults to `"pkt_loss"`.

    Example:

    >>> import tfkd
    >>> tfkd.PKT(teacher_layer="embedding", student_layer="embedding").name
    'pkt_loss'
    """

    default_name = "pkt_loss"
    _loss_function = staticmethod(pkt_loss)


#: Short name of `SimilarityPreserving`, as the method is usually called.
SP = SimilarityPreserving


def _sp(layers):
    # On the last conv blocks (the teacher's third, the student's second).
    return [SimilarityPreserving(layers.teacher_convs[2], layers.student_convs[1],
                                 weight=3000.0)]


def _pkt(layers):
    # On the penultimate dense layers.
    return [PKT(layers.teacher_embedding, layers.student_embedding, weight=30000.0)]


methods.register(methods.Method(
    "sp", "Logit KD + similarity-preserving KD (Tung & Mori, 2019)", build=_sp))
methods.register(methods.Method("pkt", "Logit KD + PKT (Passalis & Tefas, 2018)", build=_pkt))
