"""Decoupled knowledge distillation (DKD).

Zhao, Cui, Song, Qiu & Liang (2022), "Decoupled Knowledge Distillation"
(CVPR 2022, arXiv:2203.08679) split the KD term into what the teacher says
about the labelled class and what it says about the others. With
`p = softmax(z / T)`, `g` the label, `b = [p_g, 1 − p_g]` the binary
target/non-target distribution and `p̂ = softmax` over the non-target
classes only:

    TCKD = KL(b^t ‖ b^s)                 (target class)
    NCKD = KL(p̂^t ‖ p̂^s)                 (non-target classes)
    DKD  = T² · (α · TCKD + β · NCKD)

Classical KD equals `TCKD + (1 − p_g^t) · NCKD`, which suppresses the
non-target ("dark knowledge") part exactly when the teacher is confident;
DKD weights it with its own β (the paper uses α = 1, β = 8, T = 4 on
CIFAR-100). Everything is computed from `log_softmax`/`logsumexp` in
float32, never from clipped probabilities.
"""

import keras
from keras import ops

from tfkd import hyperparameters
from tfkd.utils import validation
from tfkd.terms import base
from tfkd.terms import methods
from tfkd import losses

# Masks the target logit out of the non-target softmax: exp(−1e9 − max)
# is exactly 0 in float32, and the value stays finite, so 0 · (log − log)
# is 0 rather than NaN.
_MASKED_LOGIT = -1e9


def _binary_log_probabilities(logits, is_target):
    """`log p_g` and `log(1 − p_g)` per example, from logits `(batch, C)`."""
    log_total = ops.logsumexp(logits, axis=-1)  # (batch,)
    log_target = ops.sum(ops.where(is_target, logits, 0.0), axis=-1) - log_total
    log_rest = (
        ops.logsumexp(ops.where(is_target, _MASKED_LOGIT, logits), axis=-1)
        - log_total
    )
    return log_target, log_rest  # (batch,), (batch,)


def _non_target_log_probabilities(logits, is_target):
    """`log p̂`: log-softmax over the non-target classes, `(batch, C)`."""
    return ops.log_softmax(ops.where(is_target, _MASKED_LOGIT, logits), axis=-1)


def decoupled_kd_loss(
    labels,
    student_logits,
    teacher_logits,
    temperature=4.0,
    target_weight=1.0,
    non_target_weight=8.0,
):
    """Per-example DKD loss `T² · (α · TCKD + β · NCKD)`.

    Args:
        labels: Integer class ids `(batch,)`/`(batch, 1)` or one-hot rows
            `(batch, classes)`. An unlabelled example (-1, or a row of
            zeros) takes the teacher's top class as its target class.
        student_logits: Tensor of shape `(batch, classes)`.
        teacher_logits: Tensor of shape `(batch, classes)`.
        temperature: Float in [0.01, 100], T. Defaults to `4.0`.
        target_weight: Float in [0, 1e6], α, the weight of TCKD. Defaults to `1.0`.
        non_target_weight: Float in [0, 1e6], β, the weight of NCKD. Defaults to
            `8.0`.

    Returns:
        A float32 tensor of shape `(batch,)`.

    Example:

    >>> import numpy as np
    >>> z = np.array([[2.0, 0.5, -1.0]])
    >>> float(decoupled_kd_loss(np.array([0]), z, z)[0])
    0.0
    """
    temperature = hyperparameters.check_temperature(temperature)
    student = ops.cast(student_logits, "float32") / temperature  # (batch, C)
    teacher = ops.cast(teacher_logits, "float32") / temperature  # (batch, C)
    num_classes = student.shape[-1]
    # An unlabelled example (-1, or a one-hot row of zeros) has no target
    # class; the teacher's top class stands in for it.
    class_ids = ops.where(
        losses.labelled_mask(labels, num_classes) > 0.0,
        losses.class_ids(labels, num_classes),
        ops.cast(ops.argmax(teacher, axis=-1), "int32"),
    )  # (batch,)
    is_target = ops.cast(ops.one_hot(class_ids, num_classes), "bool")  # (batch, C)

    teacher_target, teacher_rest = _binary_log_probabilities(teacher, is_target)
    student_target, student_rest = _binary_log_probabilities(student, is_target)
    target_kl = ops.exp(teacher_target) * (
        teacher_target - student_target
    ) + ops.exp(teacher_rest) * (teacher_rest - student_rest)  # (batch,)

    teacher_hat = _non_target_log_probabilities(teacher, is_target)
    student_hat = _non_target_log_probabilities(student, is_target)
    non_target_kl = ops.sum(
        ops.where(
            is_target, 0.0, ops.exp(teacher_hat) * (teacher_hat - student_hat)
        ),
        axis=-1,
    )  # (batch,)
    return (temperature**2) * (
        target_weight * target_kl + non_target_weight * non_target_kl
    )


@keras.saving.register_keras_serializable(package="tfkd")
class DecoupledKD(base.LogitTerm):
    """Decoupled KD: target and non-target KD with their own weights.

    Zhao et al. (2022), "Decoupled Knowledge Distillation". Per example
    `T² · (α · TCKD + β · NCKD)` on the logits (see `decoupled_kd_loss`);
    it needs the labels, which the `Distiller` passes on, to split target
    from non-target classes. For an unlabelled example (label -1) the
    teacher's top class is the target, so DKD distils unlabelled data too.

    DKD *replaces* the KL term of classical KD. The paper's loss,
    `CE + DKD`, is `tfkd.Distiller(..., alpha=1.0,
    extra_losses=[tfkd.DecoupledKD()])`: `alpha=1` gives the hard loss its
    full weight and the built-in KL none (it is still reported as
    `distillation_loss`). With cached teacher logits no teacher model is
    needed. The paper's linear warm-up of the DKD weight over the first
    epochs is not included.

    Args:
        temperature: Float in [0.01, 100], T. Defaults to `4.0`.
        target_weight: Float in [0, 1e6], the paper's α (TCKD). Defaults to `1.0`.
        non_target_weight: Float in [0, 1e6], the paper's β (NCKD). Defaults to
            `8.0`.
        weight: Float in [0, 1e6], an overall weight of the term. Defaults to
            `1.0`.
        logit_standardization: Whether teacher and student logits are
            z-scored per example (`tfkd.losses.standardize_logits`) before
            the temperature, as Sun et al. (2024, "Logit Standardization in
            Knowledge Distillation") apply to DKD. Independent of the
            `Distiller`'s option of that name, which covers its KL term
            only. Defaults to `False`.
        name: Defaults to `"dkd_loss"`.

    Raises:
        TypeError, ValueError: for an invalid argument.

    Example:

    >>> import numpy as np, keras, tfkd
    >>> x, y = np.random.rand(32, 8).astype("float32"), np.arange(32) % 3
    >>> def dense(): return keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    >>> teacher, student = dense(), dense()
    >>> distiller = tfkd.Distiller(
    ...     teacher=teacher, student=student, alpha=1.0,
    ...     extra_losses=[tfkd.DecoupledKD(target_weight=1.0,
    ...                                    non_target_weight=8.0)])
    >>> distiller.compile(optimizer="adam")
    >>> "dkd_loss" in distiller.fit(x, y, verbose=0).history
    True
    """

    default_name = "dkd_loss"

    def __init__(
        self,
        temperature=4.0,
        target_weight=1.0,
        non_target_weight=8.0,
        weight=1.0,
        name=None,
        logit_standardization=False,
    ):
        super().__init__(weight=weight, name=name)
        self.logit_standardization = validation.check_bool(
            "logit_standardization", logit_standardization
        )
        self.temperature = hyperparameters.check_temperature(temperature)
        check = hyperparameters.check_weight
        self.target_weight = check("target_weight", target_weight)
        self.non_target_weight = check("non_target_weight", non_target_weight)

    def per_example_loss(self, teacher_features, student_features, labels):
        if labels is None:
            raise ValueError(
                f"`{self.name}` (DecoupledKD) needs the labels of the batch. "
                "Received: labels=None"
            )
        if self.logit_standardization:
            teacher_features = losses.standardize_logits(teacher_features)
            student_features = losses.standardize_logits(student_features)
        return decoupled_kd_loss(
            labels,
            student_features,
            teacher_features,
            self.temperature,
            self.target_weight,
            self.non_target_weight,
        )

    def get_config(self):
        return {
            "temperature": self.temperature,
            "target_weight": self.target_weight,
            "non_target_weight": self.non_target_weight,
            "weight": self.weight,
            "name": self.name,
            "logit_standardization": self.logit_standardization,
        }


def _dkd(layers):
    del layers  # logits only
    # α = 1, β = 8, T = 4; it replaces the KL term: CE + DKD, as the paper.
    return [DecoupledKD(temperature=4.0, target_weight=1.0, non_target_weight=8.0)]


methods.register(methods.Method(
    "dkd", "CE + decoupled KD (Zhao et al., 2022)", build=_dkd, replaces_kl=True))
