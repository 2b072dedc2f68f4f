"""DIST: knowledge distillation from a stronger teacher, by correlation.

Huang, You, Wang, Qian & Xu (2022), "Knowledge Distillation from A Stronger
Teacher" (NeurIPS 2022, arXiv:2205.10536) replace the KL's exact match of
probabilities by a match of their *relations*: the student only has to
rank and space the classes as the teacher does (Pearson correlation is
invariant to a positive affine map), which a much weaker student can do.
With `P = softmax(Z / τ)` for both models, rows examples and columns
classes of a batch:

    inter = 1 − mean over examples i of ρ(P^s[i, :], P^t[i, :])
    intra = 1 − mean over classes c of ρ(P^s[:, c], P^t[:, c])
    DIST  = τ² · (β · inter + γ · intra)

Inter-class relations are each example's row (how the classes compare);
intra-class relations are each class's column across the batch (how the
examples compare for one class). As in the authors' code
(github.com/hunto/DIST_KD), `ρ(a, b) = ⟨a − ā, b − b̄⟩ / (‖a − ā‖ ‖b − b̄‖
+ 1e-8)`. The paper trains `CE + DIST` with β = γ = 1 (τ = 1 on ImageNet,
τ = 4 on CIFAR-100).
"""

import keras
from keras import ops

from tfkd import hyperparameters
from tfkd.terms import base
from tfkd.terms import methods

#: Added to the product of norms, as in the authors' `cosine_similarity`.
PEARSON_EPSILON = 1e-8


def _weighted_pearson(a, b, weights):
    """Pearson correlation of `a` and `b` along axis 0, weighted: `(k,)`.

    `a`, `b`: `(n, k)`; `weights`: `(n, 1)` (all 1 gives the plain
    correlation of each column).
    """
    total = ops.sum(weights, axis=0, keepdims=True)  # (1, 1)
    a = a - ops.sum(weights * a, axis=0, keepdims=True) / total  # (n, k)
    b = b - ops.sum(weights * b, axis=0, keepdims=True) / total  # (n, k)
    covariance = ops.sum(weights * a * b, axis=0)  # (k,)
    norm_a = base.sqrt_zero_gradient_at_zero(
        ops.sum(weights * ops.square(a), axis=0)
    )
    norm_b = base.sqrt_zero_gradient_at_zero(
        ops.sum(weights * ops.square(b), axis=0)
    )
    norms = norm_a * norm_b  # (k,)
    return covariance / (norms + PEARSON_EPSILON)


def _pearson_rows(a, b):
    """Pearson correlation of each row of `a` with that of `b`: `(n,)`."""
    a = a - ops.mean(a, axis=-1, keepdims=True)  # (n, classes)
    b = b - ops.mean(b, axis=-1, keepdims=True)
    norms = base.sqrt_zero_gradient_at_zero(
        ops.sum(ops.square(a), axis=-1)
    ) * base.sqrt_zero_gradient_at_zero(ops.sum(ops.square(b), axis=-1))  # (n,)
    return ops.sum(a * b, axis=-1) / (norms + PEARSON_EPSILON)


def dist_loss(
    teacher_logits,
    student_logits,
    temperature=1.0,
    beta=1.0,
    gamma=1.0,
    sample_weight=None,
):
    """DIST loss of one batch, `τ² · (β · inter + γ · intra)` (a scalar).

    Args:
        teacher_logits: Tensor of shape `(batch, classes)`.
        student_logits: Tensor of shape `(batch, classes)`.
        temperature: Float in [0.01, 100], τ. Defaults to `1.0`.
        beta: Float in [0, 1e6], the weight of the inter-class (row) term.
            Defaults to `1.0`.
        gamma: Float in [0, 1e6], the weight of the intra-class (column) term.
            Defaults to `1.0`.
        sample_weight: Optional weights `(batch,)`: the row term is
            `Σ_i w_i (1 − ρ_i) / batch` (Keras's "sum_over_batch_size")
            and the column correlations are weighted by `w_i`, so an
            example of weight 0 drops out of both. Defaults to `None`.

    Returns:
        A float32 scalar.

    Example:

    >>> import numpy as np
    >>> z = np.array([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
    >>> float(dist_loss(z, z)) < 1e-5  # identical logits: correlation 1
    True
    """
    temperature = hyperparameters.check_temperature(temperature)
    teacher = ops.softmax(
        ops.cast(teacher_logits, "float32") / temperature, axis=-1
    )  # (batch, classes)
    student = ops.softmax(
        ops.cast(student_logits, "float32") / temperature, axis=-1
    )  # (batch, classes)
    inter = base.weighted_batch_mean(
        1.0 - _pearson_rows(student, teacher), sample_weight
    )
    if sample_weight is None:
        weights = ops.ones_like(student[:, :1])  # (batch, 1)
    else:
        weights = ops.reshape(ops.cast(sample_weight, "float32"), (-1, 1))
    intra = 1.0 - ops.mean(_weighted_pearson(student, teacher, weights))
    return (temperature**2) * (beta * inter + gamma * intra)


@keras.saving.register_keras_serializable(package="tfkd")
class DIST(base.LogitTerm):
    """DIST: the student matches the correlations of the teacher's outputs.

    Huang et al. (2022), "Knowledge Distillation from A Stronger Teacher".
    On the logits, `τ² · (β · inter + γ · intra)` with `inter` one minus
    the mean Pearson correlation of each example's probability row and
    `intra` one minus that of each class's probability column across the
    batch (see `dist_loss`). The paper's loss, `CE + DIST`, is
    `tfkd.Distiller(..., alpha=1.0, extra_losses=[tfkd.DIST()])` (the
    built-in KL then has no weight). With cached teacher logits no teacher
    model is needed. The intra-class term relates the examples of one
    batch: under `tf.distribute` it is computed on each replica's share.

    Logit standardization (`Distiller(logit_standardization=True)`) does
    not change this term: its teacher and student inputs are the raw
    logits (Sun et al., 2024 evaluate standardization with KD, CTKD, DKD
    and MLKD, not DIST). With a teacher ensemble, the teacher input is the
    ensemble's combined logits (see `tfkd.Distiller`).

    Args:
        temperature: Float in [0.01, 100], τ. Defaults to `1.0`.
        beta: Float in [0, 1e6], the weight of the inter-class term. Defaults to
            `1.0`.
        gamma: Float in [0, 1e6], the weight of the intra-class term. Defaults to
            `1.0`.
        weight: Float in [0, 1e6], an overall weight of the term. Defaults to
            `1.0`.
        name: Defaults to `"dist_loss"`.

    Raises:
        TypeError, ValueError: for an invalid argument.

    Example:

    >>> import numpy as np, keras, tfkd
    >>> x, y = np.random.rand(32, 8).astype("float32"), np.arange(32) % 3
    >>> def dense(): return keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    >>> distiller = tfkd.Distiller(
    ...     teacher=dense(), student=dense(), alpha=1.0,
    ...     extra_losses=[tfkd.DIST(temperature=4.0, beta=1.0, gamma=2.0)])
    >>> distiller.compile(optimizer="adam")
    >>> "dist_loss" in distiller.fit(x, y, verbose=0).history
    True
    """

    default_name = "dist_loss"

    def __init__(
        self, temperature=1.0, beta=1.0, gamma=1.0, weight=1.0, name=None
    ):
        super().__init__(weight=weight, name=name)
        self.temperature = hyperparameters.check_temperature(temperature)
        self.beta = hyperparameters.check_weight("beta", beta)
        self.gamma = hyperparameters.check_weight("gamma", gamma)

    def call(
        self, teacher_features, student_features, labels=None, sample_weight=None
    ):
        del labels
        return dist_loss(
            teacher_features,
            student_features,
            self.temperature,
            self.beta,
            self.gamma,
            sample_weight,
        )

    def get_config(self):
        return {
            "temperature": self.temperature,
            "beta": self.beta,
            "gamma": self.gamma,
            "weight": self.weight,
            "name": self.name,
        }


def _dist(layers):
    del layers  # logits only
    # τ = 4, β = γ = 1; it replaces the KL term: CE + DIST, as the paper.
    return [DIST(temperature=4.0, beta=1.0, gamma=1.0)]


methods.register(methods.Method(
    "dist", "CE + DIST (Huang et al., 2022)", build=_dist, replaces_kl=True))
