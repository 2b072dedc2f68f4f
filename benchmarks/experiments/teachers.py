"""Experiment `teachers`: which `keras.applications` family makes a good teacher?

Every family of the preset is built with `tfkd.teachers.build` and trained
with `tfkd.teachers.fine_tune` on the same data, then compared on test
accuracy, parameters, training time and throughput. As a reference, the
main benchmark's `teacher_cnn` is trained on the same data for the same
number of epochs.

Speed is measured twice, in different ways:

- the wall time of each family's `fine_tune` (sequential, so it carries the
  machine's drift between families);
- training and inference throughput (images per second), measured after
  all families are trained, interleaved: each repeat times every family in
  turn, and the report gives the median over repeats with the min-max
  spread. Compare families with these.

    python -m benchmarks teachers --preset quick   # ~40 min on 2 CPU cores
    python -m benchmarks teachers --preset smoke   # ~1 min

Presets: `smoke` (what the tests run: one family, 256 examples, 1 epoch),
`quick` (the five families that fit a 2-core CPU, trained from random
initialization, since these machines cannot download ImageNet weights: the
`weights=None` recipe of `tfkd.teachers.fine_tune`, 6,000 examples, 6
epochs) and `full` (every registered family from ImageNet weights with the
two-stage recipe, the whole training split; needs internet once, and a
GPU). Output: `benchmarks/runs/teachers-<preset>/` with `results.json`,
`results.md` and `teachers.png`; a rerun resumes after the last trained
family (`--fresh` starts over).
"""

import sys
import time

import keras
import numpy as np
import tensorflow as tf

import tfkd
from benchmarks import cli
from benchmarks import measure
from benchmarks import models
from benchmarks import presets as presets_lib
from benchmarks import protocol
from benchmarks import report
from benchmarks import results as results_lib
from benchmarks import stats
from tfkd.teachers.layer_groups import all_sublayers
from tfkd.utils import figures
from tfkd.utils import validation

#: The families whose training fits a 2-core CPU budget (about 20-100 s per
#: epoch of 6,000 28x28 images, run at 32x32).
CPU_FAMILIES = (
    "mobilenetv3small", "mobilenetv3large", "mobilenetv2",
    "efficientnetb0", "efficientnetv2b0",
)
#: Row id of the reference CNN in the results.
REFERENCE = "teacher_cnn"
PLOT_NAME = "teachers.png"


#: The recipe `tfkd.teachers.fine_tune` documents for `weights=None`: no
#: frozen-backbone stage, everything trained at one rate.
FROM_SCRATCH = dict(weights=None, stage_learning_rates=(1e-3, 1e-3),
                    unfreeze="all", discriminative_factor=None)


def _preset(name, families, stage_epochs, **fields):
    """A teachers preset. Its `options`: `families` (registered names),
    `weights` (`None` or `"imagenet"`), `stage_epochs` and
    `stage_learning_rates` (`(stage 1, stage 2)` of `fine_tune`),
    `unfreeze`, `discriminative_factor`, `schedule`, `reference` (also
    train the reference `teacher_cnn` of `teacher_width`), the throughput
    timing's `throughput_batch` and `throughput_train_steps`, and
    `run_eagerly` (tracing a backbone's step takes tens of seconds on a
    CPU, more than a smoke run's few steps; speeds then mean nothing)."""
    options = dict(families=families, stage_epochs=stage_epochs, schedule="stlr",
                   reference=True, throughput_batch=256, throughput_train_steps=5,
                   run_eagerly=False)
    options.update(fields.pop("options"))
    return presets_lib.Preset(name=name, student_epochs=0, teacher_epochs=sum(stage_epochs),
                              teacher_dense_units=fields.pop("teacher_dense_units", 512),
                              options=options, **fields)


PRESETS = {
    "smoke": _preset("smoke", ("mobilenetv3small",), (0, 1), train_examples=256,
                     test_examples=256, validation_fraction=0.01, batch_size=64,
                     teacher_width=8, teacher_dense_units=64, timing_repeats=2,
                     options=dict(throughput_batch=32, throughput_train_steps=2,
                                  run_eagerly=True, **FROM_SCRATCH)),
    # Five families x 4,000 images x 5 epochs: ~20 min on 2 CPU cores.
    "quick": _preset("quick", CPU_FAMILIES, (0, 5), train_examples=4_000,
                     test_examples=None, validation_fraction=0.02, batch_size=64,
                     options=FROM_SCRATCH),
    "full": _preset("full", tuple(tfkd.teachers.list_families()), (3, 10),
                    train_examples=None, test_examples=None, batch_size=64,
                    teacher_width=32, teacher_dense_units=None, timing_repeats=7,
                    options=dict(weights="imagenet", stage_learning_rates=(1e-3, 1e-4),
                                 unfreeze=2, discriminative_factor=2.6)),
}


def run(preset="quick", dataset=None, output=None, fresh=False, seeds=None,
        families=None, verbose=0, log=print):
    """Runs the teachers experiment; writes results.json, results.md, PNG.

    Args:
        preset: A name of `PRESETS` or a `Preset`. Defaults to `"quick"`.
        dataset: `"fashion_mnist"` (offline) or a tfds image dataset name.
            Defaults to `None` (the preset's).
        output: Output directory. Defaults to
            `benchmarks/runs/teachers-<preset>` (with the dataset name
            when it is not Fashion-MNIST).
        fresh: Ignore families trained by an earlier run. Defaults to
            `False` (resume).
        seeds: `(seed,)` of the initializations instead of the preset's.
            Defaults to `None`.
        families: Family names to run instead of the preset's. Defaults to
            `None`.
        verbose: Keras verbosity of training. Defaults to `0`.
        log: Where progress lines go. Defaults to `print`.

    Returns:
        The results dict (also written as `results.json`).

    Raises:
        ValueError: for an unknown preset or family, before anything is
            trained.
        RuntimeError: if the dataset cannot be loaded, or if ImageNet
            weights are needed and cannot be downloaded (the message says
            how to supply a local file).
    """
    preset = presets_lib.get_preset(PRESETS, preset)
    preset = preset.replace(families=_check_families(
        preset.option("families") if families is None else families))
    setup = protocol.start("teachers", PRESETS, preset, seeds=seeds, dataset=dataset,
                           output=output, fresh=fresh, log=log, verbose=verbose)
    preset, data, store = setup.preset, setup.data, setup.store
    row_ids = list(preset.option("families")) + (
        [REFERENCE] if preset.option("reference") else [])
    trained, rows = {}, []
    for row_id in row_ids:
        trained[row_id], record = _train_or_load(row_id, preset, data, store, log, verbose)
        rows.append(record)
    log(f"throughput: {preset.timing_repeats} interleaved repeats over "
        f"{len(row_ids)} models")
    speeds = interleaved_throughput(
        trained, images=data.x_test, labels=data.y_test,
        inference_batch=preset.option("throughput_batch"),
        train_batch=preset.batch_size,
        train_steps=preset.option("throughput_train_steps"),
        repeats=preset.timing_repeats, run_eagerly=preset.option("run_eagerly"))
    for row in rows:
        row.update(speeds[row["id"]])
    results = results_lib.skeleton("teachers", preset)
    results.update(dataset=data.name, num_examples=data.num_examples,
                   test_examples_evaluated=int(len(data.y_test)), rows=rows)
    results["derived"] = derive(results)
    plot_path = plot_teachers(results, store.directory / PLOT_NAME)
    results_lib.write(results, markdown(results, [plot_path]), store.directory)
    log(f"teachers: wrote {store.directory / 'results.md'}")
    return results


def _training_data(preset, data):
    """Seeded training and validation pipelines; every family gets new
    ones with the same seed, so all see the same sequence of batches."""
    seed = preset.seeds[0]
    train = tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train)).shuffle(
        len(data.y_train), seed=seed).batch(preset.batch_size)
    validation = tf.data.Dataset.from_tensor_slices(
        (data.x_val, data.y_val)).batch(preset.batch_size)
    return train, validation


def _build(row_id, preset, data):
    """A fresh, untrained model for row `row_id`."""
    keras.utils.set_random_seed(preset.seeds[0])
    if row_id == REFERENCE:
        return models.teacher_cnn(
            data.input_shape, data.num_classes, width=preset.teacher_width,
            dense_units=preset.teacher_dense_units,
        )
    return tfkd.teachers.build(
        row_id, num_classes=data.num_classes, input_shape=data.input_shape,
        weights=preset.option("weights"),
    )


def _train_or_load(row_id, preset, data, store, log, verbose):
    """Trains one row's model (or loads it from an earlier run)."""
    key = f"teacher__{row_id}"
    path = store.models / f"{row_id}.weights.h5"
    model = _build(row_id, preset, data)
    record = store.load(key)
    if record is not None and record.get("status") == "done" and path.exists():
        model.load_weights(path)
        log(f"{row_id}: loaded from an earlier run "
            f"(test accuracy {record['accuracy']:.4f})")
        return model, record

    epochs, options = preset.teacher_epochs, preset.options
    log(f"{row_id}: training for {results_lib.plural(epochs, 'epoch')} on "
        f"{data.num_examples['train']} examples")
    train, validation = _training_data(preset, data)
    timer = measure.EpochTimer()
    start = time.perf_counter()
    if row_id == REFERENCE:
        model.compile(
            keras.optimizers.Adam(options["stage_learning_rates"][1]),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            run_eagerly=options["run_eagerly"],
        )
        history = model.fit(train, validation_data=validation,
                            epochs=epochs, callbacks=[timer], verbose=verbose)
    else:
        history = tfkd.teachers.fine_tune(
            model, train, validation,
            epochs=options["stage_epochs"],
            learning_rate=options["stage_learning_rates"],
            unfreeze=options["unfreeze"],
            discriminative_factor=options["discriminative_factor"],
            schedule=options["schedule"],
            callbacks=[timer],
            run_eagerly=options["run_eagerly"],
            verbose=verbose,
        )
    seconds = time.perf_counter() - start
    accuracy, _ = measure.accuracy_and_predictions(model, data.x_test, data.y_test)
    record = {
        "status": "done",
        "id": row_id,
        "kind": "reference" if row_id == REFERENCE else "keras.applications",
        "parameters": int(model.count_params()),
        "image_size": _backbone_size(model, data),
        "accuracy": accuracy,
        "train_seconds": seconds,
        "epoch_seconds": measure.summarize_seconds(timer.seconds),
        "validation_accuracy": [
            float(v) for v in history.history.get("val_accuracy", [])
        ],
        "train_accuracy": [float(v) for v in history.history.get("accuracy", [])],
    }
    model.save_weights(path)
    store.save(key, record)
    log(f"{row_id}: test accuracy {accuracy:.4f}, "
        f"{report.format_count(record['parameters'])} parameters "
        f"({report.format_duration(seconds)})")
    return model, record


def _backbone_size(model, data):
    """Height/width the model really runs at (after its `Resizing`)."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.Resizing):
            return int(layer.height)
    return int(data.input_shape[0])


def interleaved_throughput(trained, *, images, labels, inference_batch,
                           train_batch, train_steps, repeats,
                           run_eagerly=False):
    """Training and inference images/s of every model, measured in turn.

    Each repeat times every model once, in a rotating order, so all models
    see the same machine conditions. Inference: `predict_on_batch` (one
    forward pass, `training=False`) over the first `inference_batch` images. Training:
    `train_steps` steps of Adam on the whole network (every layer
    trainable) on the first `train_batch` images. A first untimed call of each traces the
    functions.

    Args:
        trained: Dict of id -> trained `keras.Model` (left unchanged: the
            timing runs on a copy with the same weights).
        images: Array of at least `max(inference_batch, train_batch)`
            test images.
        labels: Their labels.
        inference_batch: Batch size of the timed inference.
        train_batch: Batch size of the timed training steps.
        train_steps: Training steps timed per repeat.
        repeats: Number of interleaved repeats.
        run_eagerly: Time without `tf.function` (for smoke runs only).
            Defaults to `False`.

    Returns:
        Dict of id -> `{"inference_images_per_second": {"median", "min",
        "max"}, "train_images_per_second": {...}, "throughput_batch"}`.
    """
    if len(images) < max(inference_batch, train_batch):
        raise ValueError(
            "Invalid value for argument `images`. Expected at least "
            f"{max(inference_batch, train_batch)} images. Received: "
            f"{len(images)}"
        )
    inference_x = tf.convert_to_tensor(images[:inference_batch])
    train_x = tf.convert_to_tensor(images[:train_batch])
    train_y = tf.convert_to_tensor(labels[:train_batch])
    steps = {}
    # Each copy traces its own functions once; TensorFlow's retracing
    # detector counts those traces across models and warns about a
    # problem that is not there.
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        for model_id, model in trained.items():
            steps[model_id] = _timing_copy(model, train_x, train_y,
                                           inference_x, run_eagerly)
    finally:
        logger.setLevel(level)

    rates = {model_id: {"inference": [], "train": []} for model_id in trained}
    order = list(trained)
    for repeat in range(repeats):
        shift = repeat % len(order)
        for model_id in order[shift:] + order[:shift]:
            copy = steps[model_id]
            start = time.perf_counter()
            copy.predict_on_batch(inference_x)  # returns NumPy: synchronous
            rates[model_id]["inference"].append(
                inference_batch / (time.perf_counter() - start))
            start = time.perf_counter()
            for _ in range(train_steps):
                copy.train_on_batch(train_x, train_y)
            rates[model_id]["train"].append(
                train_steps * train_batch / (time.perf_counter() - start))
    return {
        model_id: {
            "inference_images_per_second": stats.spread(values["inference"]),
            "train_images_per_second": stats.spread(values["train"]),
            "throughput_batch": int(inference_batch),
        }
        for model_id, values in rates.items()
    }


def _timing_copy(model, train_x, train_y, inference_x, run_eagerly):
    """A fully trainable, compiled copy of `model`, its functions traced."""
    copy = type(model).from_config(model.get_config())
    copy.set_weights(model.get_weights())
    for layer in all_sublayers(copy):
        layer.trainable = True
    copy.compile(
        keras.optimizers.Adam(1e-4),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run_eagerly=run_eagerly,
    )
    copy.train_on_batch(train_x, train_y)  # traces
    copy.predict_on_batch(inference_x)  # traces
    return copy


def derive(results):
    """The best family, and the fastest one within 1 point of it.

    Args:
        results: A teachers results dict (its `rows`).

    Returns:
        `{"best": id, "best_accuracy", "fastest_within_1pt": id}` over the
        `keras.applications` rows (the reference excluded), or `{}` when
        there are none.

    Example:

    >>> rows = [{"id": "a", "kind": "keras.applications", "accuracy": .85,
    ...          "inference_images_per_second": {"median": 100.0}},
    ...         {"id": "b", "kind": "keras.applications", "accuracy": .846,
    ...          "inference_images_per_second": {"median": 900.0}}]
    >>> derive({"rows": rows})["fastest_within_1pt"]
    'b'
    """
    rows = [r for r in results["rows"] if r["kind"] == "keras.applications"]
    if not rows:
        return {}
    best = max(rows, key=lambda r: r["accuracy"])
    close = [r for r in rows if r["accuracy"] >= best["accuracy"] - 0.01]
    fastest = max(close, key=lambda r: r["inference_images_per_second"]["median"])
    return {"best": best["id"], "best_accuracy": best["accuracy"],
            "fastest_within_1pt": fastest["id"]}


def _format_spread(spread):
    return (f"{spread['median']:,.0f} ({spread['min']:,.0f}–"
            f"{spread['max']:,.0f})")


def markdown(results, plot_files=(PLOT_NAME,)):
    """The teachers report as Markdown.

    Args:
        results: A teachers results dict.
        plot_files: Plots to link (base names are used). Defaults to the
            teachers plot.

    Returns:
        The report, ending with a newline.
    """
    config = results["config"]
    lines = results_lib.header("teacher families", results)
    weights = config["weights"] or "none (random initialization)"
    stage1, stage2 = config.get("stage_epochs") or config["epochs"]
    rates = config.get("stage_learning_rates") or config["learning_rate"]
    lines += [
        f"{results['dataset']}: {results['num_examples']['train']} training "
        f"examples, {results['num_examples']['validation']} validation, "
        f"{results['test_examples_evaluated']} test. Backbone weights: "
        f"{weights}. `tfkd.teachers.fine_tune(epochs=({stage1}, {stage2}), "
        f"learning_rate={tuple(rates)}, "
        f"unfreeze={config['unfreeze']!r}, "
        f"discriminative_factor={config['discriminative_factor']}, "
        f"schedule={config['schedule']!r})`, batch {config['batch_size']}. "
        f"Reference: the main benchmark's `teacher_cnn`, plain Adam "
        f"{rates[1]:g} for the same "
        f"{results_lib.plural(stage1 + stage2, 'epoch')}.",
        "",
        "## Accuracy, size and speed",
        "",
        "| Teacher | Parameters | Runs at | Test accuracy | Training time "
        "| Median epoch | Training img/s | Inference img/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        name = f"`{row['id']}`" + (" (reference)" if row["kind"] == "reference" else "")
        epoch = row["epoch_seconds"]["median"]
        lines.append(
            f"| {name} | {report.format_count(row['parameters'])} "
            f"| {row['image_size']}×{row['image_size']} "
            f"| {report.format_percent(row['accuracy'])} "
            f"| {report.format_duration(row['train_seconds'])} "
            f"| {'—' if epoch is None else report.format_duration(epoch)} "
            f"| {_format_spread(row['train_images_per_second'])} "
            f"| {_format_spread(row['inference_images_per_second'])} |"
        )
    repeats = results["rows"][0]["inference_images_per_second"]["repeats"] \
        if results["rows"] else 0
    lines += [
        "",
        "Training time: wall time of the whole `fine_tune` (sequential, so it "
        "includes the machine's drift between rows). Median epoch: without "
        "the first (tracing) epoch. Training and inference img/s: measured "
        f"after training, all models in turn, median (min–max) of {repeats} "
        "interleaved repeats; training = Adam steps on the whole network, "
        f"batch {config['batch_size']}; inference = `predict_on_batch` of "
        f"{results['rows'][0]['throughput_batch'] if results['rows'] else 0} "
        "test images.",
        "",
    ]
    derived = results.get("derived") or {}
    if derived:
        lines += [
            f"- Most accurate family: `{derived['best']}` "
            f"({report.format_percent(derived['best_accuracy'])}), from one "
            f"training run per family (seed {config['seeds'][0]}): seed-to-seed "
            "variation is not measured here, so a gap of a point or two between "
            "families is not a ranking; the speeds (interleaved repeats) are.",
            f"- Fastest inference within 1 point of it: "
            f"`{derived['fastest_within_1pt']}`.",
        ]
    if config["weights"] is None:
        lines.append(
            "- No ImageNet weights here (offline machine): these are "
            "architectures trained from scratch on few, small images, not "
            "transfer learning. With `weights=\"imagenet\"` (preset `full`) "
            "the ranking can differ."
        )
    lines += ["", "## Plot", ""]
    lines += results_lib.image_links(plot_files, {PLOT_NAME: "Teacher families"})
    return "\n".join(lines).rstrip("\n") + "\n"


def plot_teachers(results, path):
    """Two panels: accuracy vs inference speed, and validation curves.

    Left: test accuracy against inference images/s (log x), marker area by
    parameters, error bars for the throughput spread. Right: validation
    accuracy after each epoch, one line per row.

    Args:
        results: A teachers results dict.
        path: Where to write the PNG.

    Returns:
        `path`, as a string.
    """
    from matplotlib.ticker import MaxNLocator

    figure = figures.new_figure((13, 5.5))
    speed_axes, curve_axes = figure.subplots(1, 2)
    colors = [f"C{i}" for i in range(10)]
    rows = results["rows"]
    for index, row in enumerate(rows):
        color = results_lib.TEACHER_COLOR if row["kind"] == "reference" \
            else colors[index % len(colors)]
        speed = row["inference_images_per_second"]
        accuracy = 100 * row["accuracy"]
        speed_axes.errorbar(
            [speed["median"]], [accuracy],
            xerr=[[speed["median"] - speed["min"]],
                  [speed["max"] - speed["median"]]],
            fmt="none", ecolor=color, capsize=3, alpha=0.6,
        )
        speed_axes.scatter(
            [speed["median"]], [accuracy],
            s=40 + 60 * np.sqrt(row["parameters"] / 1e6), color=color,
            marker="s" if row["kind"] == "reference" else "o",
            alpha=0.85, edgecolors="white", zorder=3,
        )
        speed_axes.annotate(
            f"{row['id']}\n{report.format_count(row['parameters'])} params",
            (speed["median"], accuracy), xytext=(6, 6),
            textcoords="offset points", fontsize=8, color=color,
        )
        curve = [100 * v for v in row["validation_accuracy"]]
        curve_axes.plot(
            range(1, len(curve) + 1), curve, marker="o", markersize=4,
            color=color, linestyle="--" if row["kind"] == "reference" else "-",
            label=row["id"],
        )
    speed_axes.set_xscale("log")
    speed_axes.set_xlabel("Inference images/s (log scale; median, min–max)")
    speed_axes.set_ylabel("Test accuracy (%)")
    speed_axes.set_title("Accuracy vs inference speed (area ∝ √parameters)")
    speed_axes.grid(True, alpha=0.3)
    if rows:
        low = min(100 * r["accuracy"] for r in rows)
        high = max(100 * r["accuracy"] for r in rows)
        span = max(high - low, 2.0)
        speed_axes.set_ylim(low - 0.2 * span, high + 0.3 * span)
        speeds = [r["inference_images_per_second"] for r in rows]
        speed_axes.set_xlim(min(s["min"] for s in speeds) / 1.5,
                            max(s["max"] for s in speeds) * 2.5)
    curve_axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    curve_axes.set_xlabel("Epoch")
    curve_axes.set_ylabel("Validation accuracy (%)")
    curve_axes.set_title("Validation accuracy while training")
    curve_axes.grid(True, alpha=0.3)
    curve_axes.legend(fontsize=8, loc="lower right")
    weights = results["config"]["weights"] or "random init"
    figure.suptitle(
        f"Teacher families on {results['dataset']} ({weights}), preset "
        f"{results['preset']}"
    )
    return figures.save_figure(figure, path)


def _check_families(families):
    values = tuple(families)
    if not values or not all(isinstance(name, str) for name in values):
        raise validation.invalid_value(
            "families",
            "a non-empty sequence of family names",
            families,
        )
    # Raises the registry's ValueError, which lists the valid names.
    return tuple(tfkd.teachers.get_family(name).name for name in values)


def main(argv=None, prog=None):
    """Parses the command line, runs the experiment; returns 0."""
    parser = cli.parser(sys.modules[__name__], "teachers", prog)
    parser.add_argument("--families", default=None, type=cli.name_list,
                        help="comma-separated family names (default: the "
                             "preset's; see tfkd.teachers.list_families())")
    run(**vars(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
