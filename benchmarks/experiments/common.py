"""Pieces the experiments share: data, teacher, student training, files.

Every unit of work (a teacher, one student of one seed) is saved through
`benchmarks.store.ResultStore` the moment it finishes, so a rerun of the
same command resumes; the final JSON and Markdown are written atomically.
"""

import argparse
import dataclasses
import datetime
import os
import pathlib
import time

import keras
import numpy as np

import tfkd
from tfkd.utils import files
from tfkd.utils import validation
from benchmarks import environment
from benchmarks import measure
from benchmarks import models
from benchmarks import plots
from benchmarks import report
from benchmarks import store as store_lib
from tfkd.tuning import memory_cache

#: Where `benchmarks/results/<name>` directories live.
RESULTS_DIR = pathlib.Path(__file__).resolve().parent.parent / "results"
#: Version of the experiments' `results.json` layout.
SCHEMA_VERSION = 1
#: The dataset that needs no download.
OFFLINE_DATASET = "fashion_mnist"
#: Line colours shared with `benchmarks.plots`.
SCRATCH_COLOR = "#8c8c8c"
DISTILLED_COLOR = "#1f77b4"
TEACHER_COLOR = "#222222"


def get_preset(presets, name):
    """Returns `presets[name]`, or raises `ValueError` naming the choices."""
    if name not in presets:
        raise validation.invalid_value(
            "preset",
            f"one of {sorted(presets)}",
            name,
        )
    return presets[name]


def default_output(experiment, preset_name, datasets=()):
    """`benchmarks/results/<experiment>[-<datasets>]-<preset>`.

    The dataset names appear only when one of them is not the offline
    default, so offline runs land in `<experiment>-<preset>`.
    """
    names = list(datasets) if any(n != OFFLINE_DATASET for n in datasets) else []
    return RESULTS_DIR / "-".join([experiment, *names, preset_name])


def open_store(experiment, preset_name, datasets, output, fresh, log,
               description):
    """The run's `ResultStore`, under `output` or the default directory.

    Args:
        experiment: The experiment's name (`default_output`'s first part).
        preset_name: The preset's name.
        datasets: The dataset names of the run (`default_output`).
        output: Output directory, or `None` for `default_output`.
        fresh: Passed to `ResultStore`: forget an earlier run's pieces.
        log: Where the run's first progress line goes.
        description: What that line says about the data.

    Returns:
        A `benchmarks.store.ResultStore`.
    """
    if output is None:
        output = default_output(experiment, preset_name, datasets)
    store = store_lib.ResultStore(output, fresh=fresh)
    log(f"{experiment}: {description}, preset {preset_name}, output {output}")
    return store


def load_preset_data(name, preset, seed=0):
    """`load_data` sized by a preset, and its test split as arrays.

    Args:
        name: The dataset name.
        preset: A preset with `batch_size`, `train_examples`,
            `validation_fraction` and `test_examples`.
        seed: Seed of the split and the subset. Defaults to `0`.

    Returns:
        `(data, (x_test, y_test))`: the `tfkd.data.ImageDataset` and its
        first `preset.test_examples` test examples (all if `None`).
    """
    data = load_data(
        name,
        batch_size=preset.batch_size,
        train_examples=preset.train_examples,
        validation_fraction=preset.validation_fraction,
        seed=seed,
    )
    return data, arrays(data.test, preset.test_examples)


def load_data(name, *, batch_size, train_examples, validation_fraction, seed=0):
    """`tfkd.data.load`, with a clear error when a download is impossible.

    Args:
        name: `"fashion_mnist"` (offline) or a tensorflow-datasets name.
        batch_size: Batch size.
        train_examples: Training examples kept (class-balanced), or `None`.
        validation_fraction: Share of the training split held out.
        seed: Seed of the split and the subset. Defaults to `0`.

    Returns:
        A `tfkd.data.ImageDataset`.

    Raises:
        RuntimeError: when a dataset other than Fashion-MNIST cannot be
            loaded (no network, tensorflow-datasets missing or broken),
            saying what to do instead.
    """
    try:
        return tfkd.data.load(
            name,
            batch_size=batch_size,
            train_examples=train_examples,
            validation_fraction=validation_fraction,
            seed=seed,
        )
    except Exception as error:
        if name == OFFLINE_DATASET:
            raise
        raise RuntimeError(
            f"Could not load the dataset {name!r} "
            f"({type(error).__name__}: {_first_line(error)}). Datasets other "
            f"than {OFFLINE_DATASET!r} come from tensorflow-datasets, which "
            "downloads and prepares them on first use: that needs internet "
            "access (once; tfds then reads ~/tensorflow_datasets). Offline, "
            f"use the default {OFFLINE_DATASET!r} (for the transfer "
            "experiment, its source and target differ by student size and "
            "data budget)."
        ) from error


def arrays(dataset, limit=None):
    """A `tf.data` pipeline of `(x, y)` batches as two NumPy arrays."""
    images, labels = [], []
    count = 0
    for x, y in dataset:
        images.append(x.numpy())
        labels.append(y.numpy())
        count += len(labels[-1])
        if limit is not None and count >= limit:
            break
    x, y = np.concatenate(images), np.concatenate(labels)
    return (x, y) if limit is None else (x[:limit], y[:limit])


def student_builder(data, width):
    """A callable returning a new `benchmarks.models.student_cnn`."""

    def build():
        return models.student_cnn(data.input_shape, data.num_classes, width=width)

    return build


def student_parameters(data, width):
    """Parameters of the student CNN of `width` on `data`."""
    return int(student_builder(data, width)().count_params())


def teacher(data, *, width, epochs, learning_rate, store, key, test, log,
            verbose=0):
    """The side's teacher: loaded from `store`, or trained and saved.

    Args:
        data: The `ImageDataset` to train on.
        width: Width of `benchmarks.models.teacher_cnn`.
        epochs: Training epochs.
        learning_rate: Adam learning rate.
        store: The run's `ResultStore`.
        key: The teacher's name in the store.
        test: `(x_test, y_test)` arrays for its test accuracy.
        log: Where progress lines go.
        verbose: Keras verbosity. Defaults to `0`.

    Returns:
        `(teacher_model, record)`; the record has `accuracy`,
        `parameters` and `train_seconds`.
    """
    record = store.load(key)
    # Weights only, of an uncompiled model: the architecture is
    # `teacher_cnn(width)`, and a compiled model's file would also carry
    # Adam's two slots per weight (3x the size).
    path = store.models / f"{key}.weights.h5"

    def build():
        return models.teacher_cnn(data.input_shape, data.num_classes, width=width)

    keras.utils.set_random_seed(0)
    model = build()
    if record is not None and record.get("status") == "done" and path.exists():
        log(f"{key}: loaded from an earlier run")
        model.load_weights(path)
        return model, record
    log(f"{key}: training teacher_cnn(width={width}) for {plural(epochs, 'epoch')} "
        f"on {data.num_examples['train']} examples")
    model.compile(
        keras.optimizers.Adam(learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    model.fit(data.train, epochs=epochs, verbose=verbose)
    seconds = time.perf_counter() - start
    accuracy, _ = measure.accuracy_and_predictions(model, *test)
    record = {
        "status": "done",
        "accuracy": accuracy,
        "parameters": int(model.count_params()),
        "train_seconds": seconds,
        "width": width,
        "epochs": epochs,
    }
    plain = build()
    plain.set_weights(model.get_weights())
    plain.save_weights(path)
    store.save(key, record)
    log(f"{key}: test accuracy {accuracy:.4f} ({report.format_duration(seconds)})")
    return model, record


def teacher_logits(teacher_model, data, log):
    """The teacher's logits on the training data, computed once."""
    start = time.perf_counter()
    cache = memory_cache.TeacherLogitsInMemory.compute(teacher_model, data.train)
    log(f"  teacher logits for {cache.num_examples} training examples "
        f"({report.format_duration(time.perf_counter() - start)})")
    return cache


def train_student(arm, build, initial_weights, *, data, cache, epochs,
                  learning_rate, seed, temperature=None, alpha=None):
    """Trains one student, from scratch or distilled; returns it and seconds.

    Both arms start from `initial_weights` with the same seed and optimizer.
    The distilled student reads the teacher's precomputed logits (`cache`),
    which gives the same soft targets as running the teacher online (no
    augmentation) at a fraction of the cost.

    Args:
        arm: `"scratch"` or `"distilled"`.
        build: Callable returning a new student.
        initial_weights: The shared initial weights.
        data: The `ImageDataset` (its `train` pipeline feeds `scratch`).
        cache: `TeacherLogitsInMemory` of the training data (`distilled`).
        epochs: Training epochs.
        learning_rate: Adam learning rate.
        seed: Seed of the data order and any randomness in training.
        temperature: T of the distilled arm.
        alpha: α of the distilled arm.

    Returns:
        `(student, train_seconds)`.
    """
    keras.utils.set_random_seed(seed)
    student = build()
    student.set_weights(initial_weights)
    optimizer = keras.optimizers.Adam(learning_rate)
    if arm == "scratch":
        student.compile(
            optimizer,
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        trainer, train_data = student, data.train
    elif arm == "distilled":
        trainer = tfkd.Distiller(
            teacher=None, student=student, temperature=temperature, alpha=alpha
        )
        trainer.compile(optimizer, metrics=["accuracy"])
        train_data = cache.dataset(seed=seed)
    else:
        raise validation.invalid_value(
            "arm",
            "'scratch' or 'distilled'",
            arm,
        )
    start = time.perf_counter()
    trainer.fit(train_data, epochs=epochs, verbose=0)
    return student, time.perf_counter() - start


def initial_weights(build, seed):
    """The initial weights of `build()` under `seed` (shared by the arms)."""
    keras.utils.set_random_seed(seed)
    return build().get_weights()


def mean_std(values):
    """`{"mean", "std", "per_seed"}` of a list of accuracies."""
    values = [float(v) for v in values]
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values)),
        "per_seed": values,
    }


def format_accuracy(summary):
    """`"91.23 %"`, or `"91.23 ± 0.40 %"` over several seeds."""
    if summary is None:
        return "—"
    if len(summary["per_seed"]) < 2:
        return report.format_percent(summary["mean"])
    return f"{100 * summary['mean']:.2f} ± {100 * summary['std']:.2f} %"


def header(experiment_title, preset_name, environment_info, created):
    """The first lines of an experiment's Markdown report."""
    parts = [
        f"{name} {environment_info[key]}"
        for key, name in (("tensorflow", "TensorFlow"), ("keras", "Keras"),
                          ("python", "Python"))
        if environment_info.get(key)
    ]
    device = environment_info.get("device", "?")
    if environment_info.get("cpu"):
        device += f" ({environment_info['cpu']}, "
        device += f"{environment_info.get('cpu_count', '?')} cores)"
    return [
        f"# tfkd experiment: {experiment_title}, preset `{preset_name}`",
        "",
        f"Run {created[:16].replace('T', ' ')} UTC. "
        + " · ".join(parts + [device]) + ".",
        "",
    ]


def results_skeleton(experiment, preset):
    """The common top of an experiment's results dict."""
    return {
        "schema_version": SCHEMA_VERSION,
        "experiment": experiment,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "preset": preset.name,
        "environment": environment.describe(),
        "config": preset_dict(preset),
    }


def preset_dict(preset):
    """A preset dataclass as a JSON-ready dict (tuples become lists)."""
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in dataclasses.asdict(preset).items()
    }


def write_outputs(results, markdown_text, directory):
    """Writes `results.json` and `results.md` atomically; returns their paths."""
    import json

    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / "results.json"
    markdown_path = directory / "results.md"
    files.write_text_atomically(json_path, json.dumps(results, indent=1, allow_nan=False) + "\n")
    files.write_text_atomically(markdown_path, markdown_text)
    return json_path, markdown_path


def new_figure(size):
    """A `matplotlib.figure.Figure` off `pyplot`, as `benchmarks.plots` does."""
    from matplotlib.figure import Figure

    return Figure(figsize=size, layout="constrained")


def save_figure(figure, path):
    """Renders `figure` with Agg to `path` at the benchmark's DPI."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=plots.DPI, facecolor="white")
    return path


def plural(count, noun):
    """`"1 epoch"`, `"6 epochs"`."""
    return f"{count} {noun}" + ("" if count == 1 else "s")


def add_common_arguments(parser, *, experiment, presets, preset_help,
                         verbose_help, dataset=True):
    """Adds the options every experiment has to an argparse parser.

    `--preset`, `--dataset` (unless `dataset=False`), `--output`, `--fresh`
    and `--verbose`.

    Args:
        parser: An `argparse.ArgumentParser`.
        experiment: The experiment's name, for the default output directory.
        presets: Its dict of presets (their names are the choices).
        preset_help: Help text of `--preset`.
        verbose_help: What `--verbose` controls.
        dataset: Whether to add `--dataset`. Defaults to `True`.

    Returns:
        `parser`.
    """
    parser.add_argument("--preset", default="quick", choices=sorted(presets),
                        help=preset_help)
    if dataset:
        parser.add_argument("--dataset", default=OFFLINE_DATASET,
                            help="fashion_mnist (offline) or a tfds image "
                                 "dataset name")
    parser.add_argument("--output", default=None,
                        help="output directory (default "
                             f"benchmarks/results/{experiment}-<preset>)")
    parser.add_argument("--fresh", action="store_true",
                        help="start over instead of resuming")
    parser.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2),
                        help=verbose_help)
    return parser


def make_main(experiment, description, add_arguments, run_from_args):
    """The command-line entry point of an experiment.

    Args:
        experiment: The experiment's module name, e.g. `"capacity"`.
        description: Description shown in `--help`.
        add_arguments: The experiment's `add_arguments(parser)`.
        run_from_args: The experiment's `run_from_args(args)`.

    Returns:
        `main(argv=None, prog=...)`: parses `argv` (arguments without the
        program name; `None` for `sys.argv[1:]`), runs the experiment and
        returns the exit code, 0. `prog` is the program name shown in
        `--help`.
    """
    default_prog = f"python -m benchmarks.experiments.{experiment}"

    def main(argv=None, prog=default_prog):
        parser = argparse.ArgumentParser(prog=prog, description=description)
        run_from_args(add_arguments(parser).parse_args(argv))
        return 0

    main.__doc__ = (
        f"Entry point of the `{experiment}` command line; returns the exit "
        "code.\n\n    See `benchmarks.experiments.common.make_main`.\n    "
    )
    return main


def _first_line(error, limit=200):
    text = str(error).strip().splitlines()
    line = text[0] if text else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"
