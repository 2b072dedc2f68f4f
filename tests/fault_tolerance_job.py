"""A small deterministic distillation run that can kill itself mid-epoch.

Run by tests/test_fault_tolerance.py in subprocesses:

    python tests/fault_tolerance_job.py --teacher T.keras --out W.npz
        [--backup keras-epoch|keras-steps|tfkd-steps --backup-dir D]
        [--save-freq N] [--kill-after-steps K]
        [--checkpoint student.keras] [--dropout] [--reference-out R.npz]

It distils a saved teacher into a fresh student on 512 Fashion-MNIST
images (16 batches of 32 per epoch, 3 epochs, no shuffling), with the
same seed and deterministic ops every time, then writes the student's
weights to `--out`, with how much this process trained (`TrainingProgress`:
the optimizer step it started from and ended at, the epochs it began). With `--kill-after-steps K` it sends itself SIGKILL
after K training steps of this process, as a preempted machine would.
With `--reference-out` it then runs the same distillation again from
scratch (same seed, no callbacks) and writes that student too, which saves
the tests a TensorFlow start-up.
"""

import argparse
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfkd  # noqa: E402
import tfkd.callbacks  # noqa: E402
from tfkd import data  # noqa: E402

EXAMPLES = 512
BATCH_SIZE = 32
EPOCHS = 3


def load_examples():
    """The first EXAMPLES training images, flattened to 784 floats."""
    (x, y), _ = data.load_fashion_mnist_arrays(download=False)
    x = (x[:EXAMPLES].reshape(EXAMPLES, -1) / 255.0).astype("float32")
    return x, y[:EXAMPLES].astype("int32")


def make_student(dropout):
    layers = [keras.Input((784,)), keras.layers.Dense(16, activation="relu")]
    if dropout:
        # Random masks: exact resumption needs the seed state restored.
        layers.append(keras.layers.Dropout(0.1))
    layers.append(keras.layers.Dense(10))
    return keras.Sequential(layers, name="student")


class KillAfterSteps(keras.callbacks.Callback):
    """SIGKILLs this process after `steps` training steps (no clean-up)."""

    def __init__(self, steps):
        super().__init__()
        self.steps = steps
        self.seen = 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.steps:
            os.kill(os.getpid(), signal.SIGKILL)


class TrainingProgress(keras.callbacks.Callback):
    """Records how much training this process did, to prove a restore.

    A restore that did nothing would leave a fresh same-seed run, whose
    student equals the uninterrupted one: comparing weights alone cannot
    tell. Placed after the backup callback, `on_train_begin` sees the
    restored optimizer.

    Attributes:
        start_step: The optimizer's step count when training began (0 for
            a fresh run; the backup's step count after a restore).
        end_step: Its step count when training ended; `end_step -
            start_step` steps were trained by this process (batches
            fast-forwarded past by a restore do not count).
        epochs: The epochs this process began (0-based).
    """

    def on_train_begin(self, logs=None):
        self.start_step = int(self.model.optimizer.iterations.numpy())
        self.end_step = self.start_step
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)

    def on_train_end(self, logs=None):
        self.end_step = int(self.model.optimizer.iterations.numpy())


def backup_callback(kind, backup_dir, save_freq):
    if kind == "keras-epoch":
        return keras.callbacks.BackupAndRestore(backup_dir, save_freq="epoch")
    if kind == "keras-steps":
        return keras.callbacks.BackupAndRestore(backup_dir, save_freq=save_freq)
    if kind == "tfkd-steps":
        return tfkd.callbacks.MidEpochBackupAndRestore(
            backup_dir, save_freq=save_freq
        )
    raise ValueError(f"Unknown --backup {kind!r}")


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--backup", default=None)
    parser.add_argument("--backup-dir", default=None)
    parser.add_argument("--save-freq", type=int, default=5)
    parser.add_argument("--kill-after-steps", type=int, default=0)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--dropout", action="store_true")
    parser.add_argument("--reference-out", default=None)
    args = parser.parse_args(argv)

    tf.config.experimental.enable_op_determinism()
    callbacks = []
    if args.backup:
        callbacks.append(
            backup_callback(args.backup, args.backup_dir, args.save_freq)
        )
    if args.checkpoint:
        callbacks.append(tfkd.callbacks.StudentCheckpoint(args.checkpoint))
    if args.kill_after_steps:
        callbacks.append(KillAfterSteps(args.kill_after_steps))
    progress = TrainingProgress()
    callbacks.append(progress)
    distil(args, args.out, callbacks, progress)
    if args.reference_out:
        distil(args, args.reference_out, callbacks=[])


def distil(args, out, callbacks, progress=None):
    """One seeded distillation; writes the student's weights to `out`.

    With a `TrainingProgress` among `callbacks`, also writes what it saw.
    """
    keras.utils.set_random_seed(0)
    x, y = load_examples()
    # No shuffling: the batch order must not depend on how many epochs
    # this process has run (see MidEpochBackupAndRestore).
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH_SIZE)
    teacher = keras.saving.load_model(args.teacher)
    distiller = tfkd.Distiller(
        teacher=teacher, student=make_student(args.dropout)
    )
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = distiller.fit(
        dataset, epochs=EPOCHS, verbose=0, callbacks=callbacks
    )
    np.savez(
        out,
        *distiller.student.get_weights(),
        epochs_run=len(history.history["loss"]),
        last_loss=history.history["loss"][-1],
        **(
            {}
            if progress is None
            else {
                "start_step": progress.start_step,
                "end_step": progress.end_step,
                "epochs": np.asarray(progress.epochs),
            }
        ),
    )


if __name__ == "__main__":
    main()
