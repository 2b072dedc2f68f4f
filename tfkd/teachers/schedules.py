"""Slanted triangular learning rates (ULMFiT)."""

import math

import keras
from keras import ops

from tfkd.utils import validation


@keras.saving.register_keras_serializable(package="tfkd")
class SlantedTriangularLR(keras.optimizers.schedules.LearningRateSchedule):
    """Slanted triangular learning rate: short linear rise, long linear decay.

    Howard & Ruder (2018), "Universal Language Model Fine-tuning for Text
    Classification", equation (3). With `T = total_steps`,
    `cut = floor(T * cut_frac)`:

    ```
    p    = t / cut                                       if t < cut
         = 1 - (t - cut) / (cut * (1 / cut_frac - 1))    otherwise
    lr_t = max_learning_rate * (1 + p * (ratio - 1)) / ratio
    ```

    The rate climbs from `max_learning_rate / ratio` to `max_learning_rate`
    during the first `cut_frac` of the steps, so a new head's large early
    gradients cannot wreck pretrained weights, then decays linearly back to
    `max_learning_rate / ratio` at step `T` and stays there. The paper's values
    are `cut_frac=0.1`, `ratio=32`.

    Args:
        max_learning_rate: Peak rate, a float > 0.
        total_steps: Number of optimizer steps `T` the schedule spans, an
            int >= 1 (`epochs * steps_per_epoch`).
        cut_frac: Fraction of steps spent increasing the rate, a float in
            `(0, 1)`. Defaults to `0.1`. If `total_steps * cut_frac < 1` the
            rise lasts one step.
        ratio: How much smaller the lowest rate is than the peak, a float >= 1.
            Defaults to `32.0`.
        name: Name of the schedule. Defaults to `"SlantedTriangularLR"`.

    Returns:
        Called with a step, a float32 scalar tensor: the learning rate.

    Raises:
        ValueError: On invalid arguments.

    Example:

    >>> schedule = SlantedTriangularLR(0.01, total_steps=1000)
    >>> [round(float(schedule(step)), 6) for step in (0, 100, 1000)]
    [0.000312, 0.01, 0.000312]
    """

    def __init__(
        self,
        max_learning_rate,
        total_steps,
        cut_frac=0.1,
        ratio=32.0,
        name="SlantedTriangularLR",
    ):
        super().__init__()
        validation.check_positive_float("max_learning_rate", max_learning_rate)
        validation.check_int("total_steps", total_steps, minimum=1)
        if not isinstance(cut_frac, (int, float)) or not 0 < cut_frac < 1:
            raise validation.invalid_value(
                "cut_frac",
                "a float in (0, 1)",
                cut_frac,
            )
        if not isinstance(ratio, (int, float)) or not ratio >= 1:
            raise validation.invalid_value(
                "ratio",
                "a float >= 1",
                ratio,
            )
        self.max_learning_rate = float(max_learning_rate)
        self.total_steps = total_steps
        self.cut_frac = float(cut_frac)
        self.ratio = float(ratio)
        self.name = name

    @property
    def cut(self):
        """Step of the peak rate, `max(1, floor(total_steps * cut_frac))`."""
        return max(1, math.floor(self.total_steps * self.cut_frac))

    def __call__(self, step):
        step = ops.cast(step, "float32")
        cut = float(self.cut)
        rising = step / cut
        falling = 1.0 - (step - cut) / (cut * (1.0 / self.cut_frac - 1.0))
        # Past `total_steps` the decay would go negative: hold the minimum.
        p = ops.clip(ops.where(step < cut, rising, falling), 0.0, 1.0)
        scale = (1.0 + p * (self.ratio - 1.0)) / self.ratio
        return self.max_learning_rate * scale

    def get_config(self):
        return {
            "max_learning_rate": self.max_learning_rate,
            "total_steps": self.total_steps,
            "cut_frac": self.cut_frac,
            "ratio": self.ratio,
            "name": self.name,
        }
