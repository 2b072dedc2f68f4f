"""WTTM: the student matches a power-transformed teacher, sample-weighted.

Zheng & Yang (2024), "Knowledge Distillation Based on Transformed Teacher
Matching" (ICLR 2024, arXiv:2402.11148), drop the temperature on the
student side of KD: with it there, KD is the same as matching a
power-transformed teacher plus a regulariser on the student's entropy;
without it ("transformed teacher matching", TTM) the student at T = 1
matches the teacher's distribution raised to the power γ = 1/T. Weighted
TTM (WTTM) weights each example by the power sum of its teacher
distribution, which is large when the teacher is unsure:

    p^t = softmax(z^t),  U_γ(p^t) = Σ_c (p^t_c)^γ,
    p̃^t = (p^t)^γ / U_γ(p^t)
    WTTM = mean over examples of U_γ(p^t) · KL(p̃^t ‖ softmax(z^s))

As in the authors' code (github.com/zkxufo/TTM, `distillers/WTTM.py`,
whose `L` is γ), the student's distribution is at T = 1 and no T² factor
scales the loss; their total loss is `CE_WEIGHT · CE + KD_WEIGHT · WTTM`.
Everything here is computed from `log_softmax`/`logsumexp`, so a teacher
probability that underflows in float32 does not make the power sum or the
KL non-finite.
"""

import keras
from keras import ops

from tfkd.terms import base
from tfkd.terms import methods
from tfkd import hyperparameters


def wttm_per_example(teacher_logits, student_logits, temperature=2.0):
    """Each example's `U_γ(p^t) · KL(p̃^t ‖ p^s)`, float32 `(batch,)`.

    Args:
        teacher_logits: Tensor of shape `(batch, classes)` (logits or
            log-probabilities: the softmax makes them the same).
        student_logits: Tensor of shape `(batch, classes)`.
        temperature: Float > 0, T; the teacher's probabilities are raised
            to γ = 1 / T. Defaults to `2.0`.

    Returns:
        A float32 tensor of shape `(batch,)`.

    Example:

    >>> import numpy as np
    >>> z = np.array([[2.0, 0.5, -1.0]])
    >>> float(wttm_per_example(z, z, temperature=1.0)[0]) < 1e-6  # γ = 1: KL(p ‖ p)
    True
    """
    gamma = 1.0 / hyperparameters.check_temperature(temperature)
    powered = gamma * ops.log_softmax(
        ops.cast(teacher_logits, "float32"), axis=-1
    )  # (batch, classes): γ · log p^t
    log_power_sum = ops.logsumexp(powered, axis=-1)  # (batch,): log U_γ
    log_transformed = powered - log_power_sum[:, None]  # log p̃^t
    log_student = ops.log_softmax(
        ops.cast(student_logits, "float32"), axis=-1
    )  # (batch, classes), T = 1
    kl = ops.sum(
        ops.exp(log_transformed) * (log_transformed - log_student), axis=-1
    )  # (batch,)
    return ops.exp(log_power_sum) * kl


@keras.saving.register_keras_serializable(package="tfkd")
class WTTM(base.LogitTerm):
    """WTTM: weighted transformed teacher matching (Zheng & Yang, 2024).

    The student, at temperature 1, matches the teacher's distribution
    raised to the power 1/T and renormalised; each example is weighted by
    the power sum `Σ_c (p^t_c)^(1/T)` of its teacher distribution (see the
    module docstring and `wttm_per_example`). It replaces the Distiller's
    KL, so the paper's loss `CE + β · WTTM` is
    `tfkd.Distiller(..., alpha=1.0, extra_losses=[tfkd.WTTM(weight=β)])`
    (with `alpha=1.0` the built-in KL has no weight). It reads only the
    two models' logits, so it works from cached teacher logits
    (`tfkd.TeacherCache`) with no teacher model; labels are not read, so
    unlabelled examples (label -1) count like labelled ones.

    Args:
        temperature: Float > 0, T; γ = 1 / T is the authors' `L`.
            Defaults to `2.0`.
        weight: Float >= 0, the term's weight β. Defaults to `1.0`.
        name: Defaults to `"wttm_loss"`.

    Raises:
        TypeError, ValueError: for an invalid argument.

    Example:

    >>> import numpy as np, keras, tfkd
    >>> x, y = np.random.rand(32, 8).astype("float32"), np.arange(32) % 3
    >>> def dense(): return keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    >>> distiller = tfkd.Distiller(
    ...     teacher=dense(), student=dense(), alpha=1.0,
    ...     extra_losses=[tfkd.WTTM(temperature=4.0, weight=2.0)])
    >>> distiller.compile(optimizer="adam")
    >>> "wttm_loss" in distiller.fit(x, y, verbose=0).history
    True
    """

    default_name = "wttm_loss"

    def __init__(self, temperature=2.0, weight=1.0, name=None):
        super().__init__(weight=weight, name=name)
        self.temperature = hyperparameters.check_temperature(temperature)

    def per_example_loss(self, teacher_features, student_features, labels):
        del labels
        return wttm_per_example(
            teacher_features, student_features, self.temperature
        )

    def get_config(self):
        return {
            "temperature": self.temperature,
            "weight": self.weight,
            "name": self.name,
        }


def _wttm(layers):
    del layers  # logits only
    # The authors' CIFAR-100 settings are per teacher-student pair (the
    # paper's appendix A.4, not in their repository's code, whose `ttm_l`
    # defaults to γ = 1 and whose README examples are γ = 0.1 with weight
    # 45 for TTM, γ = 0.2 with weight 4 for WTTM added to CRD): here T = 2
    # (γ = 0.5), the benchmarks' KD temperature, and weight 1, not tuned.
    return [WTTM(temperature=2.0, weight=1.0)]


methods.register(methods.Method(
    "wttm", "CE + WTTM (Zheng & Yang, 2024)", build=_wttm, replaces_kl=True))
