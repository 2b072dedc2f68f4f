"""tfkd: knowledge distillation for Keras 3 on TensorFlow.

Distil a large, accurate teacher into a small, fast student with ordinary
`model.fit` calls:

>>> import tfkd  # doctest: +SKIP
>>> distiller = tfkd.Distiller(teacher=teacher, student=student)  # doctest: +SKIP
>>> distiller.compile(optimizer="adam", metrics=["accuracy"])  # doctest: +SKIP
>>> distiller.fit(train_ds, validation_data=val_ds, epochs=10)  # doctest: +SKIP
"""

__version__ = "0.1.0"

try:
    import tensorflow  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the install
    raise ImportError(
        "tfkd needs TensorFlow, which is installed through an extra so that "
        "`tensorflow` and `tensorflow-cpu` never end up side by side: "
        "`pip install 'tfkd[cpu]'` (CPU) or `pip install 'tfkd[gpu]'` "
        "(Linux with an NVIDIA GPU; WSL2 on Windows)."
    ) from error

from tfkd import cache
from tfkd import callbacks
from tfkd import checkpointing
from tfkd import data
from tfkd import losses
from tfkd import teachers
from tfkd import tuning
from tfkd.born_again import born_again
from tfkd.cache import TeacherCache
from tfkd.decoupled import DecoupledKD
from tfkd.distillation_terms import DistillationTerm
from tfkd.distiller import Distiller
from tfkd.doctor import doctor
from tfkd.feature_losses import AttentionTransfer
from tfkd.feature_losses import FitNetHint
from tfkd.losses import KnowledgeDistillation
from tfkd.preflight import DistillationWarning
from tfkd.relation_losses import RKDAngle
from tfkd.relation_losses import RKDDistance
from tfkd.teacher_outputs import attach_teacher_logits

__all__ = [
    "AttentionTransfer",
    "DecoupledKD",
    "DistillationTerm",
    "DistillationWarning",
    "Distiller",
    "FitNetHint",
    "KnowledgeDistillation",
    "RKDAngle",
    "RKDDistance",
    "TeacherCache",
    "__version__",
    "attach_teacher_logits",
    "born_again",
    "cache",
    "callbacks",
    "checkpointing",
    "data",
    "doctor",
    "losses",
    "teachers",
    "tuning",
]
