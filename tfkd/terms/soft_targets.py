"""The soft-target KL term of knowledge distillation (Hinton et al., 2015).

Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural
Network", train the student on the teacher's softened predictions. Per
example, with temperature T:

    KL_i = T² · KL(softmax(t_i / T) ‖ softmax(s_i / T))

The T² factor keeps the soft term's gradients the same size whatever T
(Hinton et al., 2015, section 2), so the weights keep their meaning when T
changes. With logit standardization (Sun, Ren, Li, Wang & Cao, 2024,
"Logit Standardization in Knowledge Distillation", CVPR 2024) both models'
logits are z-scored per example before the temperature
(`tfkd.losses.standardize_logits`). Everything is computed from
`log_softmax` in float32, never from clipped probabilities.

`tfkd.Distiller` builds one `SoftTargetKL` from its own `temperature`,
`alpha` (the term's weight is `1 − alpha`) and `logit_standardization`,
named `"distillation_loss"`; this module also registers the two methods
that are that term alone, `logit_kd` and `logit_std`.
"""

import keras
from keras import ops

from tfkd import hyperparameters
from tfkd import losses
from tfkd.terms import base
from tfkd.terms import methods
from tfkd.utils import validation


@keras.saving.register_keras_serializable(package="tfkd")
class SoftTargetKL(base.LogitTerm):
    """The soft-target KL, `T² · KL(softmax(t/T) ‖ softmax(s/T))`.

    Hinton et al. (2015), "Distilling the Knowledge in a Neural Network";
    with `logit_standardization`, Sun et al. (2024), "Logit
    Standardization in Knowledge Distillation". Per example
    `tfkd.losses.soft_target_loss` of the (optionally z-scored) logits,
    reduced as Keras's "sum_over_batch_size": `Σ_i w_i · KL_i / N`.

    The teacher's logits may be a teacher ensemble's mixture
    (`tfkd.ensembles.TeacherEnsemble`), built from standardized teachers
    already when the ensemble standardizes: the `Distiller` then passes
    `teacher_is_mixture=True` and only the student's logits are z-scored,
    so the teachers are never standardized twice.

    `tfkd.Distiller(temperature=T, alpha=α, logit_standardization=...)`
    builds this term with weight `1 − α` itself; pass one in `extra_losses`
    only for a second KL, for example on another view of the batch
    (`view="strong"`, with `Distiller(views={"strong": layer})`).

    Args:
        temperature: Float in [0.01, 100], T. Defaults to `4.0`.
        logit_standardization: Whether both models' logits are z-scored
            per example before the temperature. Defaults to `False`.
        weight: Float in [0, 1e6], the term's weight in the total loss.
            Defaults to `1.0`.
        view: Name of the augmented view of the batch the term reads (one
            of the `Distiller`'s `views`), or `None` for the batch itself.
            Defaults to `None`.
        name: Defaults to `"distillation_loss"`.

    Raises:
        TypeError, ValueError: for an invalid argument.

    Example:

    >>> import numpy as np
    >>> kl = SoftTargetKL(temperature=2.0)
    >>> z = np.array([[2.0, 0.0, -1.0]])
    >>> float(kl(z, z))
    0.0
    >>> round(float(kl(z, np.zeros((1, 3)))), 4)
    0.7706
    """

    default_name = "distillation_loss"
    #: Per-step values the term reads besides its tensors (see the base).
    step_arguments = ("teacher_is_mixture",)

    def __init__(
        self,
        temperature=4.0,
        logit_standardization=False,
        weight=1.0,
        view=None,
        name=None,
    ):
        super().__init__(weight=weight, name=name)
        self.view = base.check_layer_name("view", view)
        self.temperature = hyperparameters.check_temperature(temperature)
        self.logit_standardization = validation.check_bool(
            "logit_standardization", logit_standardization
        )

    def call(
        self,
        teacher_features,
        student_features,
        labels=None,
        sample_weight=None,
        teacher_is_mixture=False,
    ):
        del labels
        teacher_logits, student_logits = teacher_features, student_features
        if self.logit_standardization:
            if not teacher_is_mixture:
                teacher_logits = losses.standardize_logits(teacher_logits)
            student_logits = losses.standardize_logits(student_logits)
        per_example = losses.soft_target_loss(
            teacher_logits, student_logits, self.temperature
        )  # (batch,)
        return base.weighted_batch_mean(per_example, sample_weight)

    def get_config(self):
        return {
            "temperature": self.temperature,
            "logit_standardization": self.logit_standardization,
            "weight": self.weight,
            "view": self.view,
            "name": self.name,
        }


methods.register(methods.Method("logit_kd", "Logit KD (Hinton et al., 2015)"))
# z-scores teacher and student logits before T and the KL.
methods.register(methods.Method(
    "logit_std", "Logit KD, standardized logits (Sun et al., 2024)",
    distiller_options={"logit_standardization": True},
))
