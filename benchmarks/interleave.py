"""Training several arms epoch by epoch, in turn, for fair epoch times.

These machines' speed drifts by tens of percent within minutes. Timing arm A
for ten minutes and then arm B compares two different machines; training
A, B, C one epoch each, in a rotating order, and taking the median epoch of
each, compares them under the same conditions. Accuracy is unaffected: each
arm's `fit` continues where it stopped (`initial_epoch`).
"""

import dataclasses
import time

from benchmarks import measure


@dataclasses.dataclass
class Arm:
    """One model to train, with its data.

    Attributes:
        arm_id: Identifier in the results.
        trainer: What `fit` is called on (a student, a `tfkd.Distiller`, a
            `keras.distillation.Distiller`).
        train_data: Its training `tf.data.Dataset`.
        validation_data: Its validation data (or `None`).
        history: Filled in: metric name -> list of per-epoch values.
        epoch_seconds: Filled in: training time of each epoch.
        train_seconds: Filled in: total wall time spent in `fit`.
    """

    arm_id: str
    trainer: object
    train_data: object
    validation_data: object = None
    history: dict = dataclasses.field(default_factory=dict)
    epoch_seconds: list = dataclasses.field(default_factory=list)
    train_seconds: float = 0.0


def train_interleaved(arms, epochs, verbose=0, log=print):
    """Trains every arm for `epochs` epochs, one epoch per arm in turn.

    The order rotates every epoch so no arm always runs first (right after
    another arm's garbage) or last.

    Args:
        arms: List of `Arm`.
        epochs: Epochs per arm.
        verbose: Keras `fit` verbosity. Defaults to `0`.
        log: Where progress lines go. Defaults to `print`.

    Returns:
        The same arms, with `history`, `epoch_seconds` and `train_seconds`.
    """
    for epoch in range(epochs):
        shift = epoch % len(arms)
        for arm in arms[shift:] + arms[:shift]:
            timer = measure.EpochTimer()
            start = time.perf_counter()
            history = arm.trainer.fit(
                arm.train_data,
                validation_data=arm.validation_data,
                initial_epoch=epoch,
                epochs=epoch + 1,
                callbacks=[timer],
                verbose=verbose,
            )
            arm.train_seconds += time.perf_counter() - start
            arm.epoch_seconds.extend(timer.seconds)
            for name, values in history.history.items():
                arm.history.setdefault(name, []).extend(float(v) for v in values)
        summary = ", ".join(
            f"{arm.arm_id} {arm.history.get('val_accuracy', [float('nan')])[-1]:.3f}"
            for arm in arms
        )
        log(f"  epoch {epoch + 1}/{epochs}: val_accuracy {summary}")
    return arms
