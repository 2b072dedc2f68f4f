"""`StudentCheckpoint`: saves the student, atomically, as it trains."""

import json
import math
import os

import keras

from tfkd.utils import validation
from tfkd.callbacks import checkpointing


def is_chief():
    """Whether this process writes shared files under `tf.distribute`.

    Reads `TF_CONFIG` as `MultiWorkerMirroredStrategy` does: the task
    `chief`, or worker 0 of a cluster without a chief; any single process.
    """
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = config.get("task") or {}
    cluster = config.get("cluster") or {}
    task_type = task.get("type")
    if task_type in (None, "chief"):
        return True
    return task_type == "worker" and "chief" not in cluster and (
        int(task.get("index", 0)) == 0
    )


class StudentCheckpoint(keras.callbacks.Callback):
    """Saves `distiller.student` to a `.keras` file at the end of each epoch.

    Unlike `keras.callbacks.ModelCheckpoint` it saves only the student (the
    teacher never changes, so a Distiller checkpoint would store it again
    every epoch), and it saves atomically: the model goes to a temporary
    file that then replaces `filepath` in one `os.replace`, and a
    `<filepath>.sha256.json` checksum file lets
    `tfkd.checkpointing.load_model_verified` reject a damaged copy. A
    process killed at any moment leaves either the previous or the new
    student, never a truncated one.

    Under `MultiWorkerMirroredStrategy` only the chief (worker 0) writes.

    Args:
        filepath: Path ending in `.keras`. It may contain `{epoch}` (1-based,
            as in Keras) and fields of the epoch logs, e.g.
            `"student-{epoch:02d}-{val_loss:.3f}.keras"`.
        monitor: `None` to save after every epoch, or the name of a logged
            metric (e.g. `"val_loss"`) to save only when it improves.
            Defaults to `None`.
        mode: `"min"`, `"max"` or `"auto"` (max for names containing
            "acc", min otherwise): which direction improves `monitor`.
            Defaults to `"auto"`.

    Attributes:
        last_saved: The path written last, or `None`.

    Raises:
        ValueError: for a `filepath` not ending in `.keras` or a bad `mode`.

    Example:

    >>> import numpy as np, keras, tfkd, os, tempfile
    >>> x, y = np.random.rand(32, 8).astype("float32"), np.arange(32) % 3
    >>> def dense(): return keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    >>> distiller = tfkd.Distiller(teacher=dense(), student=dense())
    >>> distiller.compile(optimizer="adam")
    >>> path = os.path.join(tempfile.mkdtemp(), "student.keras")
    >>> checkpoint = tfkd.callbacks.StudentCheckpoint(path)
    >>> _ = distiller.fit(x, y, epochs=1, verbose=0, callbacks=[checkpoint])
    >>> restored = tfkd.checkpointing.load_model_verified(path)
    """

    def __init__(self, filepath, monitor=None, mode="auto"):
        super().__init__()
        filepath = checkpointing.check_keras_path(filepath)
        validation.check_choice("mode", mode, ("auto", "min", "max"))
        self.filepath = filepath
        self.monitor = monitor
        self.mode = mode
        if mode == "auto":
            mode = "max" if monitor and "acc" in monitor else "min"
        self._greater_is_better = mode == "max"
        self._best = None
        self.last_saved = None

    def _improved(self, value):
        if value is None or not math.isfinite(value):
            return False
        if self._best is None:
            return True
        if self._greater_is_better:
            return value > self._best
        return value < self._best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor is not None:
            value = logs.get(self.monitor)
            value = None if value is None else float(value)
            if not self._improved(value):
                return
            self._best = value
        if not is_chief():
            return
        path = self.filepath.format(epoch=epoch + 1, **logs)
        model = getattr(self.model, "student", self.model)
        checkpointing.save_model_atomically(model, path)
        self.last_saved = path
