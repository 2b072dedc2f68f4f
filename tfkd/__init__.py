"""tfkd: knowledge distillation for Keras 3.

Distil a large, accurate teacher into a small, fast student with ordinary
`model.fit` calls:

>>> import tfkd  # doctest: +SKIP
>>> distiller = tfkd.Distiller(teacher=teacher, student=student)  # doctest: +SKIP
>>> distiller.compile(optimizer="adam", metrics=["accuracy"])  # doctest: +SKIP
>>> distiller.fit(train_ds, validation_data=val_ds, epochs=10)  # doctest: +SKIP
"""

from tfkd.version import __version__

from tfkd import backend_support
from tfkd import cache
from tfkd import callbacks
from tfkd import data
from tfkd import ensembles
from tfkd import export
from tfkd import hyperparameters
from tfkd import losses
from tfkd import memory_limit
from tfkd import mixing
from tfkd import recipes
from tfkd import step_guard
from tfkd import teachers
from tfkd import terms
from tfkd.backend_support import TensorFlowRequiredError
from tfkd.cache import TeacherCache
from tfkd.callbacks import checkpointing
from tfkd.distiller import Distiller
from tfkd.environment_report import doctor
from tfkd.generations import born_again
from tfkd.losses import KnowledgeDistillation
from tfkd.preflight import DistillationWarning
from tfkd.step_guard import InvalidLabelsError
from tfkd.step_guard import NonFiniteLossError
from tfkd.teacher_outputs import attach_teacher_logits
from tfkd.terms import AttentionTransfer
from tfkd.terms import CRD
from tfkd.terms import DIST
from tfkd.terms import DecoupledKD
from tfkd.terms import DistillationTerm
from tfkd.terms import FitNetHint
from tfkd.terms import PKT
from tfkd.terms import RKDAngle
from tfkd.terms import RKDDistance
from tfkd.terms import SP
from tfkd.terms import SimilarityPreserving
from tfkd.terms import SoftTargetKL
from tfkd.terms import WTTM

#: Submodules imported on first use, because they need an optional extra.
_LAZY_SUBMODULES = {"tuning": "tfkd.tuning"}


def __getattr__(name):
    # PEP 562: `tfkd.tuning` imports keras-tuner (and so TensorBoard) only
    # when a user reaches for it, so `import tfkd` needs neither.
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(_LAZY_SUBMODULES[name])
    raise AttributeError(f"module 'tfkd' has no attribute {name!r}")


__all__ = [
    "AttentionTransfer",
    "CRD",
    "DIST",
    "DecoupledKD",
    "DistillationTerm",
    "DistillationWarning",
    "Distiller",
    "FitNetHint",
    "InvalidLabelsError",
    "KnowledgeDistillation",
    "NonFiniteLossError",
    "PKT",
    "RKDAngle",
    "RKDDistance",
    "SP",
    "SimilarityPreserving",
    "SoftTargetKL",
    "TeacherCache",
    "TensorFlowRequiredError",
    "WTTM",
    "__version__",
    "attach_teacher_logits",
    "backend_support",
    "born_again",
    "cache",
    "callbacks",
    "checkpointing",
    "data",
    "doctor",
    "ensembles",
    "export",
    "hyperparameters",
    "losses",
    "memory_limit",
    "mixing",
    "recipes",
    "step_guard",
    "teachers",
    "terms",
    "tuning",
]
