"""Benchmark of issue 3: what a teacher cache costs and saves, per epoch.

On a Fashion-MNIST subset, with a CNN teacher of >= 1 M parameters and a
CNN student of <= 50 k, it measures inside one process, arms interleaved:

- epoch time of cached distillation (`tfkd.Distiller(teacher=None)` on
  `TeacherCache.dataset`) / epoch time of the student trained alone
  (plain `student.fit` on the usual in-memory pipeline). Goal <= 1.10.
- epoch time of online tfkd (`tfkd.Distiller(teacher=...)`) / epoch time
  of `keras.distillation.Distiller` with `LogitsDistillation(T, KL)`, the
  incumbent. Goal <= 1.0.
- `TeacherCache.build` time / `teacher.predict` time over the same data.
  Goal <= 1.15.
- bytes on disk per example.

Every arm gets one untimed warm-up epoch (tracing), then `repeats` timed
epochs, measured from `on_epoch_begin` to `on_epoch_end` so `fit`'s set-up
is excluded. Each ratio is reported three ways: of the medians; paired
(the median, min and max over repeats of the ratio of two measurements
taken back to back, which cancels slow drifts in machine load); and paired
in CPU seconds of this process (`time.process_time`, all threads), which
other processes on a shared machine disturb far less than wall time.

Run (about 4 minutes on 2 CPU cores for the default preset):

    PYTHONPATH=. python benchmarks/cache_speed.py --output results.json

The `smoke` preset (a few seconds of work) is what the tests run.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time

import numpy as np
import tensorflow as tf
import keras

import tfkd
from tfkd.utils import validation
from tfkd import data
from tfkd.cache import TeacherCache

#: Named configurations; `smoke` is the one the tests run.
PRESETS = {
    # Exercises every arm in seconds; its numbers mean nothing.
    "smoke": {
        "train_examples": 256,
        "test_examples": 128,
        "batch_size": 64,
        "repeats": 1,
        "teacher_epochs": 0,  # an untrained teacher times the same
        "teacher_dense_units": 16,
    },
    "default": {
        "train_examples": 10_000,
        "test_examples": 2_000,
        "batch_size": 128,
        "repeats": 5,
        "teacher_epochs": 2,
        "teacher_dense_units": 128,
    },
}

TEMPERATURE = 4.0
ALPHA = 0.1
SEED = 0
ARMS = ("student_alone", "tfkd_cached", "tfkd_online", "keras_online")


def make_teacher(dense_units=128):
    """conv32-conv64-pool-dense: 1.2 M parameters at 128 units, logits out."""
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),  # (batch, 12 * 12 * 64 = 9216)
            keras.layers.Dense(dense_units, activation="relu"),
            keras.layers.Dense(10),
        ],
        name="teacher",
    )


def make_student():
    """A 37 k-parameter CNN emitting logits."""
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),  # (batch, 5 * 5 * 32 = 800)
            keras.layers.Dense(40, activation="relu"),
            keras.layers.Dense(10),
        ],
        name="student",
    )


def load_subset(train_examples, test_examples, seed=SEED):
    """Class-balanced uint8 Fashion-MNIST subsets `(x, y)`, `(h, w, 1)`."""
    (x_train, y_train), (x_test, y_test) = data.load_fashion_mnist_arrays()
    train = data.balanced_subset(y_train, train_examples, seed)
    test = data.balanced_subset(y_test, test_examples, seed)
    return (
        (x_train[train, ..., np.newaxis], y_train[train]),
        (x_test[test, ..., np.newaxis], y_test[test]),
    )


def in_memory_pipeline(x, y, batch_size, shuffle, seed=SEED):
    """The usual pipeline: uint8 in memory, shuffled, batched, scaled."""
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size).map(
        data.preprocess, num_parallel_calls=tf.data.AUTOTUNE
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


class EpochTimer(keras.callbacks.Callback):
    """Records wall and CPU time of each epoch, set-up of `fit` excluded."""

    def __init__(self):
        super().__init__()
        self.seconds = []
        self.cpu_seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._started = (time.perf_counter(), time.process_time())

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._started[0])
        self.cpu_seconds.append(time.process_time() - self._started[1])


class _Stopwatch:
    """Wall and CPU seconds of a `with` block."""

    def __enter__(self):
        self._started = (time.perf_counter(), time.process_time())
        return self

    def __exit__(self, *exc_info):
        self.seconds = time.perf_counter() - self._started[0]
        self.cpu_seconds = time.process_time() - self._started[1]


def _summary(values):
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "values": list(values),
    }


def _ratio(numerator, denominator, cpu_numerator, cpu_denominator):
    paired = [a / b for a, b in zip(numerator, denominator)]
    cpu_paired = [a / b for a, b in zip(cpu_numerator, cpu_denominator)]
    return {
        "of_medians": statistics.median(numerator)
        / statistics.median(denominator),
        "median": statistics.median(paired),
        "min": min(paired),
        "max": max(paired),
        "cpu_median": statistics.median(cpu_paired),
        "cpu_min": min(cpu_paired),
        "cpu_max": max(cpu_paired),
    }


def _directory_bytes(path):
    return sum(
        os.path.getsize(os.path.join(path, name)) for name in os.listdir(path)
    )


def _make_arms(teacher, cache, train_ds, batch_size):
    """Fresh, identically initialised students inside their trainers."""
    arms = {}
    keras.utils.set_random_seed(SEED)
    initial = make_student().get_weights()

    def student():
        model = make_student()
        model.set_weights(initial)
        return model

    alone = student()
    alone.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    arms["student_alone"] = (alone, train_ds)

    cached = tfkd.Distiller(
        student=student(), teacher=None, temperature=TEMPERATURE, alpha=ALPHA
    )
    cached.compile(optimizer="adam", metrics=["accuracy"])
    arms["tfkd_cached"] = (
        cached,
        cache.dataset(batch_size=batch_size, shuffle=True, seed=SEED),
    )

    online = tfkd.Distiller(
        student=student(), teacher=teacher, temperature=TEMPERATURE, alpha=ALPHA
    )
    online.compile(optimizer="adam", metrics=["accuracy"])
    arms["tfkd_online"] = (online, train_ds)

    incumbent = keras.distillation.Distiller(
        teacher=teacher,
        student=student(),
        distillation_losses=keras.distillation.LogitsDistillation(
            temperature=TEMPERATURE, loss=keras.losses.KLDivergence()
        ),
        student_loss_weight=ALPHA,
    )
    incumbent.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    arms["keras_online"] = (incumbent, train_ds)
    return arms


def run(preset="default", workdir=None, verbose=1, **overrides):
    """Runs the benchmark and returns its results as a JSON-able dict.

    Args:
        preset: A key of `PRESETS`. Defaults to `"default"`.
        workdir: Directory for the cache; a temporary one (removed after)
            when `None`. Defaults to `None`.
        verbose: `0` silent, `1` one line per measurement. Defaults to `1`.
        **overrides: Values replacing those of the preset.

    Returns:
        A dict with the configuration, the raw times, the four ratios and
        the bytes per example.
    """
    if preset not in PRESETS:
        raise validation.invalid_value(
            "preset",
            f"one of {sorted(PRESETS)}",
            preset,
        )
    config = dict(PRESETS[preset], **overrides)
    log = print if verbose else (lambda *args, **kwargs: None)
    batch_size, repeats = config["batch_size"], config["repeats"]
    owned = workdir is None
    workdir = tempfile.mkdtemp(prefix="tfkd-bench-") if owned else workdir
    try:
        (x_train, y_train), (x_test, y_test) = load_subset(
            config["train_examples"], config["test_examples"]
        )
        train_ds = in_memory_pipeline(x_train, y_train, batch_size, True)
        ordered_ds = in_memory_pipeline(x_train, y_train, batch_size, False)
        test_ds = in_memory_pipeline(x_test, y_test, 256, False)

        keras.utils.set_random_seed(SEED)
        teacher = make_teacher(config["teacher_dense_units"])
        teacher.compile(
            optimizer="adam",
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        log(f"training the teacher ({teacher.count_params():,} parameters)")
        if config["teacher_epochs"]:
            teacher.fit(train_ds, epochs=config["teacher_epochs"], verbose=0)
        teacher_accuracy = teacher.evaluate(test_ds, verbose=0)[1]

        # Build vs predict, interleaved; the first of each is a warm-up.
        path = os.path.join(workdir, "cache")
        build, predict = {"wall": [], "cpu": []}, {"wall": [], "cpu": []}
        for repeat in range(repeats + 1):
            with _Stopwatch() as predicting:
                teacher.predict(ordered_ds, verbose=0)
            with _Stopwatch() as building:
                cache = TeacherCache.build(
                    teacher, ordered_ds, path, overwrite=True, verbose=0
                )
            if repeat:
                for times, watch in ((predict, predicting), (build, building)):
                    times["wall"].append(watch.seconds)
                    times["cpu"].append(watch.cpu_seconds)
            log(
                f"predict {predicting.seconds:.2f}s "
                f"({predicting.cpu_seconds:.2f} cpu)  build "
                f"{building.seconds:.2f}s ({building.cpu_seconds:.2f} cpu)"
            )

        arms = _make_arms(teacher, cache, train_ds, batch_size)
        timers = {name: EpochTimer() for name in arms}
        for repeat in range(repeats + 1):
            for name, (model, dataset) in arms.items():
                model.fit(dataset, epochs=1, verbose=0, callbacks=[timers[name]])
                log(
                    f"epoch {repeat} {name}: {timers[name].seconds[-1]:.2f}s "
                    f"({timers[name].cpu_seconds[-1]:.2f} cpu)"
                )
        epoch_times = {name: timer.seconds[1:] for name, timer in timers.items()}
        epoch_cpu = {name: timer.cpu_seconds[1:] for name, timer in timers.items()}
        accuracies = {}
        for name, (model, _) in arms.items():
            student = getattr(model, "student", model)
            student.compile(
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"],
            )
            accuracies[name] = float(student.evaluate(test_ds, verbose=0)[1])

        disk_bytes = _directory_bytes(path)
        results = {
            "preset": preset,
            "config": config,
            "environment": {
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
                "tfkd": tfkd.__version__,
                "cpu_count": os.cpu_count(),
                "machine": platform.machine(),
            },
            "models": {
                "teacher_parameters": teacher.count_params(),
                "student_parameters": make_student().count_params(),
                "teacher_test_accuracy": float(teacher_accuracy),
                "student_test_accuracy_after_epochs": accuracies,
                "student_epochs": repeats + 1,
            },
            "epoch_seconds": {
                name: _summary(times) for name, times in epoch_times.items()
            },
            "epoch_cpu_seconds": {
                name: _summary(times) for name, times in epoch_cpu.items()
            },
            "build_seconds": _summary(build["wall"]),
            "build_cpu_seconds": _summary(build["cpu"]),
            "predict_seconds": _summary(predict["wall"]),
            "predict_cpu_seconds": _summary(predict["cpu"]),
            "ratios": {
                "cached_over_student_alone": _ratio(
                    epoch_times["tfkd_cached"],
                    epoch_times["student_alone"],
                    epoch_cpu["tfkd_cached"],
                    epoch_cpu["student_alone"],
                ),
                "tfkd_online_over_keras_online": _ratio(
                    epoch_times["tfkd_online"],
                    epoch_times["keras_online"],
                    epoch_cpu["tfkd_online"],
                    epoch_cpu["keras_online"],
                ),
                "build_over_predict": _ratio(
                    build["wall"], predict["wall"], build["cpu"], predict["cpu"]
                ),
            },
            "goals": {
                "cached_over_student_alone": 1.10,
                "tfkd_online_over_keras_online": 1.0,
                "build_over_predict": 1.15,
            },
            "disk": {
                "bytes": disk_bytes,
                "bytes_per_example": disk_bytes / cache.num_examples,
                "arrays": {
                    name: int(np.prod(spec["shape"]))
                    * np.dtype(spec["dtype"]).itemsize
                    for name, spec in cache.metadata["arrays"].items()
                },
            },
        }
        return results
    finally:
        if owned:
            shutil.rmtree(workdir, ignore_errors=True)


def markdown(results):
    """A Markdown table of the ratios, goals and sizes."""
    lines = [
        "| ratio | wall, paired median (min–max) | wall, of medians | "
        "CPU, paired median (min–max) | goal |",
        "|---|---|---|---|---|",
    ]
    for name, goal in results["goals"].items():
        ratio = results["ratios"][name]
        lines.append(
            f"| {name.replace('_', ' ')} | {ratio['median']:.3f} "
            f"({ratio['min']:.3f}–{ratio['max']:.3f}) | "
            f"{ratio['of_medians']:.3f} | {ratio['cpu_median']:.3f} "
            f"({ratio['cpu_min']:.3f}–{ratio['cpu_max']:.3f}) | ≤ {goal} |"
        )
    lines.append("")
    lines.append(
        f"Bytes on disk per example: "
        f"{results['disk']['bytes_per_example']:.1f} "
        f"({', '.join(f'{k} {v}' for k, v in results['disk']['arrays'].items())}"
        f" bytes in all; metadata included in the per-example figure)."
    )
    lines.append("")
    lines.append(
        "| arm | epoch wall s, median (min–max) | epoch CPU s, median | "
        "test accuracy |"
    )
    lines.append("|---|---|---|---|")
    accuracies = results["models"]["student_test_accuracy_after_epochs"]
    for name, summary in results["epoch_seconds"].items():
        cpu = results["epoch_cpu_seconds"][name]
        lines.append(
            f"| {name} | {summary['median']:.3f} ({summary['min']:.3f}–"
            f"{summary['max']:.3f}) | {cpu['median']:.3f} | "
            f"{accuracies[name]:.3f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    """Parses arguments, runs the benchmark, writes JSON and Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS))
    parser.add_argument("--output", default="cache_speed.json",
                        help="Path of the JSON results (Markdown goes next to it).")
    parser.add_argument("--train-examples", type=int)
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--workdir", help="Where to build the cache.")
    args = parser.parse_args(argv)
    overrides = {
        key: value
        for key, value in (
            ("train_examples", args.train_examples),
            ("repeats", args.repeats),
        )
        if value is not None
    }
    results = run(args.preset, workdir=args.workdir, **overrides)
    with open(args.output, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2)
    table = markdown(results)
    with open(os.path.splitext(args.output)[0] + ".md", "w", encoding="utf-8") as handle:
        handle.write(table + "\n")
    print(table)
    return results


if __name__ == "__main__":
    main()
