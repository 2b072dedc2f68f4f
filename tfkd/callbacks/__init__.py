"""Keras callbacks for distillation runs that must not fail silently.

- `CollapseMonitor`: warns, with a diagnosis, when the student predicts
  (almost) one class; can stop training and restore the best weights.
- `StudentCheckpoint`: saves `distiller.student` atomically each epoch,
  with a checksum file (`tfkd.callbacks.checkpointing.load_model_verified`).
- `checkpointing`: the atomic, checksummed `.keras` saving and verified
  loading these callbacks use (also `tfkd.checkpointing`).
- `MidEpochBackupAndRestore`: backs up every N batches and resumes an
  interrupted epoch at the batch it reached.
"""

from tfkd.callbacks import checkpointing
from tfkd.callbacks.backup_and_restore import MidEpochBackupAndRestore
from tfkd.callbacks.collapse_diagnosis import CollapseReport
from tfkd.callbacks.collapse_diagnosis import Finding
from tfkd.callbacks.collapse_monitor import CollapseMonitor
from tfkd.callbacks.student_checkpoint import StudentCheckpoint

__all__ = [
    "CollapseMonitor",
    "CollapseReport",
    "Finding",
    "MidEpochBackupAndRestore",
    "StudentCheckpoint",
    "checkpointing",
]
