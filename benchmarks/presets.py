"""Named benchmark presets: how much data, how many epochs, which arms.

`smoke` runs in well under a minute (the tests run it end to end), `quick`
fits in about 20 minutes on 2 CPU cores, `full` is for a GPU (hours on a
CPU). Every preset runs the same code path; only the sizes change.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Preset:
    """Sizes and hyper-parameters of one benchmark run.

    Attributes:
        name: Preset name.
        train_examples: Training examples (class-balanced subset), or
            `None` for the whole training split.
        test_examples: Test examples evaluated, or `None` for all.
        validation_examples: Validation examples used during training
            (the Distiller runs the teacher on them every epoch), or `None`
            for the whole validation split.
        batch_size: Batch size of every arm.
        teacher_epochs: Epochs of teacher training.
        student_epochs: Epochs of every student arm.
        seeds: Seeds of the student arms (accuracy is mean ± std).
        temperature: KD temperature T.
        alpha: Weight of the hard-label loss.
        learning_rate: Adam learning rate of the students.
        teacher_width: Width of the reference teacher CNN.
        teacher_dense_units: Units of the teacher's dense head (`None`:
            8 x width).
        student_width: Width of the reference student CNN.
        autokeras_trials: AutoKeras `max_trials` (0 skips the arm).
        autokeras_epochs: Epochs of each AutoKeras trial.
        autokeras_seconds: Time budget of the whole AutoKeras search.
        latency_repeats: Timed batch-1 calls for the latency percentiles.
        grid_images: Test images in the prediction grid.
    """

    name: str
    train_examples: int | None
    test_examples: int | None
    validation_examples: int | None
    batch_size: int
    teacher_epochs: int
    student_epochs: int
    seeds: tuple
    temperature: float = 4.0
    alpha: float = 0.1
    learning_rate: float = 2e-3
    teacher_width: int = 32
    teacher_dense_units: int | None = None
    student_width: int = 8
    autokeras_trials: int = 1
    autokeras_epochs: int = 2
    autokeras_seconds: float = 600.0
    latency_repeats: int = 200
    grid_images: int = 32

    def to_dict(self):
        """The preset as a JSON-ready dict."""
        values = dataclasses.asdict(self)
        values["seeds"] = list(self.seeds)
        return values


PRESETS = {
    "smoke": Preset(
        name="smoke",
        train_examples=256,
        test_examples=256,
        validation_examples=256,
        batch_size=64,
        teacher_epochs=1,
        student_epochs=2,
        seeds=(0,),
        teacher_width=8,
        student_width=4,
        autokeras_trials=1,
        autokeras_epochs=1,
        autokeras_seconds=120.0,
        latency_repeats=20,
        grid_images=8,
    ),
    "quick": Preset(
        name="quick",
        train_examples=6_000,
        test_examples=None,
        validation_examples=1_000,
        batch_size=128,
        teacher_epochs=4,
        student_epochs=6,
        seeds=(0, 1),
        teacher_width=16,
        teacher_dense_units=512,
        autokeras_trials=1,
        autokeras_epochs=4,
        autokeras_seconds=240.0,
    ),
    "full": Preset(
        name="full",
        train_examples=None,
        test_examples=None,
        validation_examples=None,
        batch_size=128,
        teacher_epochs=20,
        student_epochs=30,
        seeds=(0, 1, 2),
        autokeras_trials=20,
        autokeras_epochs=20,
        autokeras_seconds=4 * 3600.0,
    ),
}


def get_preset(name):
    """Returns the preset called `name`.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    if name not in PRESETS:
        raise ValueError(
            "Invalid value for argument `preset`. Expected one of "
            f"{sorted(PRESETS)}. Received: preset={name!r}"
        )
    return PRESETS[name]
