"""The one preset class of every experiment, and how presets are looked up.

Every experiment (`benchmarks/experiments/<name>.py`) defines a dict
`PRESETS` of `Preset`s: `smoke` (what the tests run, seconds), `quick` (2
CPU cores) and `full` (a GPU). The fields below are those the shared
protocol (`benchmarks.protocol`) reads; what only one experiment needs
(student widths, AutoKeras budget, teacher families, ...) goes in
`options`, so that a new experiment needs no new class.
"""

import dataclasses

from tfkd.utils import validation

#: The dataset that needs no download (tfkd reads its IDX files offline).
OFFLINE_DATASET = "fashion_mnist"


@dataclasses.dataclass(frozen=True)
class Preset:
    """Sizes and hyper-parameters of one experiment run.

    Attributes:
        name: Preset name (`"smoke"`, `"quick"`, `"full"`).
        train_examples: Labelled training examples of the students
            (class-balanced), or `None` for the whole training split.
        test_examples: Test examples evaluated, or `None` for all.
        batch_size: Batch size of every model.
        teacher_epochs: Epochs of the teacher.
        student_epochs: Epochs of every student arm.
        seeds: Seeds of the student arms: accuracy is the mean and sample
            std over them, and each arm is compared with scratch per seed.
        dataset: `"fashion_mnist"` (offline) or a tfds image dataset name.
        teacher_examples: Training examples of the teacher, a superset of
            the students' (`None`: the same). The rest are the unlabelled
            pool `Data.x_pool`.
        validation_fraction: Share of the training split held out.
        validation_examples: Validation examples used during training, or
            `None` for all of the held-out split.
        teacher_width: Width of `benchmarks.models.teacher_cnn`.
        teacher_dense_units: Units of its dense head (`None`: 8 x width).
        student_width: Width of `benchmarks.models.student_cnn`.
        temperature: KD temperature T.
        alpha: Weight of the hard-label loss.
        learning_rate: Adam learning rate of every model.
        learning_rate_schedule: The students' schedule: `"constant"`, or
            `"cosine"` decay to 0 over each arm's training steps (see
            `benchmarks.protocol.student_optimizer`). The teacher always
            trains at the constant rate.
        timing_repeats: Interleaved repeats of every speed measurement.
        options: What only one experiment reads (see its module).
    """

    name: str
    train_examples: int | None
    test_examples: int | None
    batch_size: int
    teacher_epochs: int
    student_epochs: int
    seeds: tuple = (0,)
    dataset: str = OFFLINE_DATASET
    teacher_examples: int | None = None
    validation_fraction: float = 0.1
    validation_examples: int | None = None
    teacher_width: int = 16
    teacher_dense_units: int | None = None
    student_width: int = 8
    temperature: float = 4.0
    alpha: float = 0.1
    learning_rate: float = 2e-3
    learning_rate_schedule: str = "constant"
    timing_repeats: int = 5
    options: dict = dataclasses.field(default_factory=dict)

    def option(self, key):
        """The experiment-specific value `options[key]`."""
        return self.options[key]

    def replace(self, **changes):
        """A copy with `changes`; keys that are not fields go to `options`."""
        fields = {field.name for field in dataclasses.fields(self)}
        options = dict(self.options)
        options.update({k: v for k, v in changes.items() if k not in fields})
        changes = {k: v for k, v in changes.items() if k in fields}
        return dataclasses.replace(self, options=options, **changes)

    def to_dict(self):
        """The preset as a JSON-ready dict (tuples become lists)."""
        values = dataclasses.asdict(self)
        values.update(values.pop("options"))
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in values.items()}


def get_preset(presets, name):
    """Returns `presets[name]`, or raises `ValueError` naming the choices."""
    if isinstance(name, Preset):
        return name
    if name not in presets:
        raise validation.invalid_value("preset", f"one of {sorted(presets)}", name)
    return presets[name]


def check_seeds(seeds):
    """`seeds` as a tuple of distinct ints >= 0, or raises `ValueError`."""
    values = tuple(seeds)
    if not values or len(set(values)) != len(values) or any(
        not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in values
    ):
        raise validation.invalid_value(
            "seeds", "a non-empty sequence of distinct ints >= 0", seeds)
    return values
