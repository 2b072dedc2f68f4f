"""Benchmark of issue 8: feature, attention, relation and decoupled KD.

On a class-balanced Fashion-MNIST subset (offline; the teacher trains on a
larger subset containing the students'), with the benchmark's reference
CNN teacher and student (`benchmarks.models`), in one process, it trains
these student arms from the same initial weights:

- `scratch`: `student.fit` on the labels.
- `logit_kd`: `tfkd.Distiller` (T, α as in the preset), Hinton et al. 2015.
- `fitnets`: logit KD + `FitNetHint` (Romero et al., 2015), weight 100:
  the student's second conv block regresses the teacher's third (both
  14x14) through a 1x1-conv connector.
- `attention`: logit KD + two `AttentionTransfer` terms (Zagoruyko &
  Komodakis, 2017) at 28x28 and 14x14, β = 1000 each.
- `rkd`: logit KD + `RKDDistance` + `RKDAngle` (Park et al., 2019) on the
  penultimate dense layers, weights 25 and 50.
- `dkd`: CE + `DecoupledKD` (Zhao et al., 2022; α = 1, β = 8, T = 4),
  i.e. `Distiller(alpha=1.0)` so the KL term has no weight.

Arms are trained one epoch each in rotating order (`benchmarks.interleave`)
so their epoch times are measured under the same machine conditions. The
term weights are those of the CRD benchmark code (Tian et al., 2020,
"Contrastive Representation Distillation", github.com/HobbitLong/
RepDistiller), not tuned here. It
reports each arm's test accuracy, its median epoch time (the first, tracing
epoch excluded) with min/max, and that median divided by scratch's. The
feature arms read intermediate layers from one forward pass per model; the
ratio to `logit_kd` is the price of the extra loss terms alone.

Run (about 6 minutes on 2 busy CPU cores with the default `quick` preset):

    python -m benchmarks.methods --preset quick \\
        --output benchmarks/results/methods-quick.json

It writes the JSON results and a Markdown table beside them (`.md`).
"""

import argparse
import dataclasses
import json
import pathlib
import time

import keras
import numpy as np
import tensorflow as tf

import tfkd
from benchmarks import environment
from benchmarks import interleave
from benchmarks import measure
from benchmarks import models
from tfkd.utils import validation
from tfkd import data as data_lib
from tfkd.terms.decoupled import DecoupledKD
from tfkd.terms.features import AttentionTransfer, FitNetHint
from tfkd.terms.relations import RKDAngle, RKDDistance

ARMS = ("scratch", "logit_kd", "fitnets", "attention", "rkd", "dkd")

LABELS = {
    "scratch": "Student from scratch",
    "logit_kd": "Logit KD (Hinton et al., 2015)",
    "fitnets": "Logit KD + FitNets hint (Romero et al., 2015)",
    "attention": "Logit KD + attention transfer (Zagoruyko & Komodakis, 2017)",
    "rkd": "Logit KD + RKD distance & angle (Park et al., 2019)",
    "dkd": "CE + decoupled KD (Zhao et al., 2022)",
}


@dataclasses.dataclass(frozen=True)
class Preset:
    """Sizes of one run of this benchmark.

    Attributes:
        name: Preset name.
        train_examples: Class-balanced training examples of the students.
        teacher_examples: Class-balanced training examples of the teacher,
            a superset of the students' (a teacher usually saw more data
            than the student gets; Hinton et al., 2015, section 3).
        test_examples: First test-split examples evaluated.
        batch_size: Batch size of every arm.
        teacher_epochs: Epochs of teacher training.
        student_epochs: Epochs of every student arm; all but the first are
            timed.
        teacher_width: Width of `models.teacher_cnn`.
        student_width: Width of `models.student_cnn`.
        temperature: T of logit KD (and of DKD).
        alpha: α of logit KD.
        learning_rate: Adam learning rate of every model.
    """

    name: str
    train_examples: int
    teacher_examples: int
    test_examples: int
    batch_size: int
    teacher_epochs: int
    student_epochs: int
    teacher_width: int = 16
    student_width: int = 8
    temperature: float = 4.0
    alpha: float = 0.1
    learning_rate: float = 2e-3


PRESETS = {
    # Seconds: what the tests run, end to end.
    "smoke": Preset("smoke", 256, 256, 256, 64, 1, 2, teacher_width=4, student_width=2),
    # About 6 minutes on 2 busy CPU cores.
    "quick": Preset("quick", 4000, 8000, 2000, 128, 2, 5),
    # For a GPU.
    "full": Preset("full", 54000, 54000, 10000, 128, 15, 20, teacher_width=32),
}


def load_arrays(preset, seed=0):
    """The preset's Fashion-MNIST subsets, images float32 in [0, 1].

    Returns:
        `((x_student, y_student), (x_teacher, y_teacher), (x_test, y_test))`
        with images `(n, 28, 28, 1)`; the student's examples are among the
        teacher's (`balanced_subset` with one seed takes prefixes).
    """
    (x_train, y_train), (x_test, y_test) = data_lib.load_fashion_mnist_arrays(
        download=False
    )

    def subset(count):
        chosen = data_lib.balanced_subset(y_train, count, seed)
        images = (x_train[chosen][..., np.newaxis] / 255.0).astype("float32")
        return images, y_train[chosen].astype("int32")

    test = slice(0, preset.test_examples)
    x_test = (x_test[test][..., np.newaxis] / 255.0).astype("float32")
    return (
        subset(preset.train_examples),
        subset(max(preset.teacher_examples, preset.train_examples)),
        (x_test, y_test[test].astype("int32")),
    )


def layer_names(model, layer_type):
    """Names of `model`'s top-level layers of `layer_type`, in order."""
    return [layer.name for layer in model.layers if isinstance(layer, layer_type)]


def extra_losses(arm_id, teacher, student):
    """The `extra_losses` of an arm, on the reference CNNs' layers.

    Teacher convs: 28x28 (w), 28x28 (2w), 14x14 (4w); student convs:
    28x28 (v), 14x14 (2v); each has a penultimate dense layer.
    """
    teacher_convs = layer_names(teacher, keras.layers.Conv2D)
    student_convs = layer_names(student, keras.layers.Conv2D)
    teacher_embedding = layer_names(teacher, keras.layers.Dense)[-2]
    student_embedding = layer_names(student, keras.layers.Dense)[-2]
    if arm_id == "fitnets":
        return [FitNetHint(teacher_convs[2], student_convs[1], weight=100.0)]
    if arm_id == "attention":
        return [
            AttentionTransfer(teacher_convs[1], student_convs[0], name="at_28x28"),
            AttentionTransfer(teacher_convs[2], student_convs[1], name="at_14x14"),
        ]
    if arm_id == "rkd":
        return [
            RKDDistance(teacher_embedding, student_embedding, weight=25.0),
            RKDAngle(teacher_embedding, student_embedding, weight=50.0),
        ]
    if arm_id == "dkd":
        return [DecoupledKD(temperature=4.0, target_weight=1.0, non_target_weight=8.0)]
    return []


def _optimizer(preset):
    return keras.optimizers.Adam(preset.learning_rate)


def _cross_entropy():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def build_trainer(arm_id, teacher, student, preset):
    """The compiled model whose `fit` trains `student` for `arm_id`."""
    if arm_id not in ARMS:
        raise validation.invalid_value(
            "arm_id",
            f"one of {ARMS}",
            arm_id,
        )
    if arm_id == "scratch":
        student.compile(_optimizer(preset), _cross_entropy(), metrics=["accuracy"])
        return student
    distiller = tfkd.Distiller(
        teacher=teacher,
        student=student,
        temperature=preset.temperature,
        # DKD replaces the KL term: CE + DKD, as in the paper.
        alpha=1.0 if arm_id == "dkd" else preset.alpha,
        teacher_outputs="logits",
        extra_losses=extra_losses(arm_id, teacher, student),
    )
    distiller.compile(_optimizer(preset), metrics=["accuracy"])
    return distiller


def _dataset(x, y, batch_size, seed, shuffle):
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def run(preset="quick", arms=ARMS, seed=0, log=print):
    """Trains the teacher and the student arms; returns the results dict.

    Args:
        preset: A preset name (see `PRESETS`) or a `Preset`. Defaults to
            `"quick"`.
        arms: Arm ids to train; `scratch` is always added (the time ratios
            are relative to it). Defaults to all of `ARMS`.
        seed: Seed of the subset, the shuffling and the initial weights.
            Defaults to `0`.
        log: Where progress lines go. Defaults to `print`.

    Returns:
        A JSON-ready dict: `preset`, `environment`, `data`, `teacher` and
        `arms` (per arm: `accuracy`, `epoch_seconds`, `epoch_time`
        {median, min, max, epochs}, `epoch_time_vs_scratch`, `history`).
    """
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise validation.invalid_value(
                "preset",
                f"one of {sorted(PRESETS)}",
                preset,
            )
        preset = PRESETS[preset]
    arms = ("scratch",) + tuple(a for a in arms if a != "scratch")
    for arm_id in arms:
        if arm_id not in ARMS:
            raise ValueError(
                f"Invalid value for argument `arms`. Expected ids from {ARMS}. "
                f"Received: {arm_id!r}"
            )
    started = time.perf_counter()
    (x_train, y_train), (x_teacher, y_teacher), (x_test, y_test) = load_arrays(
        preset, seed
    )
    train = _dataset(x_train, y_train, preset.batch_size, seed, shuffle=True)
    input_shape, classes = x_train.shape[1:], 10

    keras.utils.set_random_seed(seed)
    teacher = models.teacher_cnn(input_shape, classes, width=preset.teacher_width)
    teacher.compile(_optimizer(preset), _cross_entropy(), metrics=["accuracy"])
    log(f"teacher: {teacher.count_params():,} parameters, "
        f"{preset.teacher_epochs} epochs on {len(x_teacher)} images")
    teacher.fit(
        _dataset(x_teacher, y_teacher, preset.batch_size, seed, shuffle=True),
        epochs=preset.teacher_epochs,
        verbose=0,
    )
    teacher_accuracy, _ = measure.accuracy_and_predictions(teacher, x_test, y_test)
    log(f"teacher accuracy {teacher_accuracy:.4f} "
        f"({time.perf_counter() - started:.0f} s)")

    keras.utils.set_random_seed(seed + 1)
    initial = models.student_cnn(input_shape, classes, width=preset.student_width)
    initial_weights = initial.get_weights()
    runs = []
    for arm_id in arms:
        student = models.student_cnn(input_shape, classes, width=preset.student_width)
        student.set_weights(initial_weights)
        trainer = build_trainer(arm_id, teacher, student, preset)
        runs.append((interleave.Arm(arm_id, trainer, train), student))
    interleave.train_interleaved(
        [arm for arm, _ in runs],
        preset.student_epochs,
        # Its progress lines report validation accuracy, which this
        # benchmark does not compute (test accuracy comes at the end).
        log=lambda line: log(
            f"{line.split(':')[0]} ({time.perf_counter() - started:.0f} s)"
        ),
    )

    results = {}
    for arm, student in runs:
        accuracy, _ = measure.accuracy_and_predictions(student, x_test, y_test)
        results[arm.arm_id] = {
            "label": LABELS[arm.arm_id],
            "accuracy": accuracy,
            "parameters": int(student.count_params()),
            "epoch_seconds": [float(s) for s in arm.epoch_seconds],
            "epoch_time": measure.summarize_seconds(arm.epoch_seconds),
            "history": arm.history,
        }
    scratch = results["scratch"]["epoch_time"]["median"]
    for values in results.values():
        median = values["epoch_time"]["median"]
        values["epoch_time_vs_scratch"] = (
            None if median is None or not scratch else median / scratch
        )
    log(f"done in {time.perf_counter() - started:.0f} s")
    return {
        "benchmark": "methods",
        "preset": dataclasses.asdict(preset),
        "seed": seed,
        "environment": environment.describe(),
        "data": {
            "dataset": "fashion_mnist",
            "train_examples": int(len(x_train)),
            "teacher_examples": int(len(x_teacher)),
            "test_examples": int(len(x_test)),
        },
        "teacher": {
            "accuracy": teacher_accuracy,
            "parameters": int(teacher.count_params()),
        },
        "arms": results,
        "wall_seconds": time.perf_counter() - started,
    }


def markdown_table(results):
    """The results as a Markdown table, one row per arm."""
    preset = results["preset"]
    lines = [
        f"Fashion-MNIST, {results['data']['train_examples']} training "
        f"images ({results['data']['teacher_examples']} for the teacher), "
        f"{results['data']['test_examples']} test images, "
        f"{preset['student_epochs']} epochs (median of the last "
        f"{preset['student_epochs'] - 1}), teacher accuracy "
        f"{results['teacher']['accuracy']:.4f} "
        f"({results['teacher']['parameters']:,} parameters).",
        "",
        "| Arm | Accuracy | Epoch s (median) | min-max | ÷ scratch |",
        "|---|---:|---:|---:|---:|",
    ]
    for values in results["arms"].values():
        time_ = values["epoch_time"]
        ratio = values["epoch_time_vs_scratch"]
        lines.append(
            f"| {values['label']} | {values['accuracy']:.4f} | "
            f"{time_['median']:.2f} | {time_['min']:.2f}-{time_['max']:.2f} | "
            f"{'n/a' if ratio is None else f'{ratio:.2f}'} |"
        )
    return "\n".join(lines) + "\n"


def write_results(results, output):
    """Writes `output` (JSON) and the Markdown table beside it (`.md`)."""
    output = pathlib.Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    output.with_suffix(".md").write_text(markdown_table(results))
    return output


def parse_args(argv=None):
    """Parses the command line (see `--help`)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.methods",
        description="Student accuracy and epoch time of logit KD, FitNets, "
        "attention transfer, RKD and DKD next to scratch (issue 8).",
    )
    parser.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    parser.add_argument(
        "--output",
        default=None,
        help="JSON file to write (default benchmarks/results/methods-<preset>.json); "
        "the Markdown table goes beside it",
    )
    parser.add_argument("--arms", default=None,
                        help=f"comma-separated subset of {','.join(ARMS)}")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None):
    """Entry point; returns the process exit code."""
    args = parse_args(argv)
    output = args.output or (
        pathlib.Path(__file__).parent / "results" / f"methods-{args.preset}.json"
    )
    results = run(
        preset=args.preset,
        arms=tuple(args.arms.split(",")) if args.arms else ARMS,
        seed=args.seed,
    )
    path = write_results(results, output)
    print(markdown_table(results))
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
