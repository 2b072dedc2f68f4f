"""Experiment `gain`: where does distillation beat training from scratch?

The gain map. One teacher (`benchmarks.models.teacher_cnn`) is trained on a
pool of labelled images; the student (`student_cnn`) then sees only a
fraction of those labels. Two students start from the same initial weights
per seed and read the same batches (`benchmarks.protocol`): the one
*from scratch* learns from the labelled images only; the *distilled* one
(`tfkd.Distiller`, logit KD of Hinton et al., 2015, with the teacher's
logits computed once) learns from the teacher's soft targets on every
image of the pool, labelled or not (a *transfer set*), with α = 0 (no
hard-label loss: the pool has no labels to give it). Both take the same
number of optimizer steps: an epoch is one pass over the transfer set,
and the student from scratch cycles through its labelled images for as
many batches (`protocol.labelled_batches`), with the same cosine-decayed
Adam, and random one-pixel shifts (`arms.small_shift`): measured before
at 600 of 6,000 labels and 100 passes (3 seeds), they gave scratch +0.48
points [-0.61, +1.56] over none, where flips gave -0.12 and flips with
10 % shifts -2.90 [-4.06, -1.75]; a constant learning rate gave -0.08
against cosine decay. The reference point runs scratch both with and
without the shifts, so every run re-measures that choice. So scratch is
trained as well as we know how at the same budget. (The distilled
student is not augmented: its teacher logits are computed once, on the
plain images.)

The KD gain (distilled minus scratch, paired per seed, mean and 95 %
t-interval, `benchmarks.stats`) is mapped along five axes around one
reference point (10 % labels, 10 epochs, width 8, T=2, the full teacher):

- labels: the labelled fraction of the pool (the rest unlabelled);
- patience: student epochs;
- gap: how long the teacher trained (a weaker teacher, same data);
- capacity: student width;
- temperature: T of the soft targets.

The gap and temperature axes change only the distilled arm, so they are
more arms of the reference point, paired with its scratch student.

    python -m benchmarks gain --preset quick   # 25-32 min on 2 CPU cores
    python -m benchmarks gain --preset smoke   # seconds; what tests run

Presets: `smoke` (200 images, 2 seeds, tiny models: the tests), `quick`
(a pool of 4,000 images, the 10k test set, 3 seeds; 2 CPU cores) and
`full` (the whole training split, 5 seeds; a GPU). Output:
`benchmarks/runs/gain-<preset>/` with `results.json`, `results.md` and
`gain.png`; a rerun resumes after the last finished point and seed
(`--fresh` starts over).
"""

import math
import sys
import time

from benchmarks import arms as arms_lib
from benchmarks import cli
from benchmarks import presets as presets_lib
from benchmarks import protocol
from benchmarks import report
from benchmarks import results as results_lib
from benchmarks import stats
from tfkd.utils import figures

PLOT_NAME = "gain.png"
#: The axes in report order: key -> (title, what its values are).
AXES = {
    "labels": ("Labels: labelled share of the pool", "labelled fraction"),
    "patience": ("Patience: student epochs", "student epochs"),
    "gap": ("Teacher-student gap: teacher epochs", "teacher epochs"),
    "capacity": ("Student capacity: width", "student width"),
    "temperature": ("Temperature T", "T"),
}
SCRATCH = "scratch"
SCRATCH_AUGMENTED = "scratch_augmented"
DISTILLED = "distilled"

PRESETS = {
    "smoke": presets_lib.Preset(
        name="smoke", train_examples=200, test_examples=200,
        validation_fraction=0.01, batch_size=32, teacher_width=4,
        teacher_epochs=1, student_epochs=1, student_width=4, seeds=(0, 1),
        temperature=2.0, alpha=0.0, learning_rate_schedule="cosine",
        options=dict(fraction=0.1, fractions=(0.1, 1.0), epochs=(1, 2),
                     teacher_epochs_axis=(0, 1), widths=(2, 4),
                     temperatures=(2.0, 4.0), scratch_augmentation=True)),
    # ~760 width-8 arm-epochs over 4,000 images, ~2 s each on 2 CPU cores:
    # ~25 minutes alone; 32 min measured with other jobs on the machine
    # (load average 3 to 5.6 on its 2 cores).
    "quick": presets_lib.Preset(
        name="quick", train_examples=4_000, test_examples=None, batch_size=64,
        teacher_width=16, teacher_dense_units=512, teacher_epochs=6,
        student_epochs=10, student_width=8, seeds=(0, 1, 2), temperature=2.0,
        alpha=0.0, learning_rate_schedule="cosine",
        options=dict(fraction=0.1, fractions=(0.01, 0.05, 0.1, 0.2, 1.0),
                     epochs=(5, 10, 20), teacher_epochs_axis=(1, 6),
                     widths=(2, 4, 8, 16), temperatures=(1.0, 2.0, 4.0),
                     scratch_augmentation=True)),
    "full": presets_lib.Preset(
        name="full", train_examples=None, test_examples=None, batch_size=128,
        teacher_width=32, teacher_epochs=20, student_epochs=20, student_width=8,
        seeds=(0, 1, 2, 3, 4), temperature=2.0, alpha=0.0,
        learning_rate_schedule="cosine",
        options=dict(fraction=0.1, fractions=(0.01, 0.05, 0.1, 0.2, 0.5, 1.0),
                     epochs=(5, 10, 20, 40, 80), teacher_epochs_axis=(1, 3, 20),
                     widths=(2, 4, 8, 16, 32), temperatures=(1.0, 2.0, 4.0, 8.0),
                     scratch_augmentation=True)),
}


def labelled_count(fraction, pool):
    """Labelled images of the pool at `fraction` (at least one per class)."""
    return max(10, min(pool, int(round(fraction * pool))))


def point_key(labelled, epochs, width):
    """The store prefix and id of one point."""
    return f"l{labelled}-e{epochs}-w{width}"


def teacher_logits_source(teacher, key):
    """A `soft_targets` source: `teacher`'s logits on the epoch's rows."""
    def logits(setup):
        return setup.tensor(f"teacher_logits_{key}", lambda: teacher.predict(
            setup.epoch_inputs(), batch_size=256, verbose=0))
    return logits


def plan(preset):
    """The points to train and which arm of which point each axis reads.

    Returns:
        `(reference, axes)`: the reference point's `(fraction, epochs,
        width)`, and axis -> list of `(value, point, arm_id)`; `point` is
        a `(fraction, epochs, width)`.
    """
    options = preset.options
    reference = (options["fraction"], preset.student_epochs, preset.student_width)
    fraction, epochs, width = reference
    return reference, {
        "labels": [(f, (f, epochs, width), DISTILLED) for f in options["fractions"]],
        "patience": [(e, (fraction, e, width), DISTILLED) for e in options["epochs"]],
        "gap": [(e, reference, DISTILLED if e == preset.teacher_epochs
                 else f"distilled_teacher{e}") for e in options["teacher_epochs_axis"]],
        "capacity": [(w, (fraction, epochs, w), DISTILLED) for w in options["widths"]],
        "temperature": [(t, reference, DISTILLED if t == preset.temperature
                         else f"distilled_t{t:g}") for t in options["temperatures"]],
    }


def point_arms(preset, is_reference, teachers):
    """The arms of one point: scratch, distilled, and at the reference more.

    Args:
        preset: The run's `Preset`.
        is_reference: Whether this is the reference point, which also runs
            the other scratch variant, the other temperatures and teachers.
        teachers: Teacher epochs -> trained teacher model.

    Returns:
        `(arms, baseline arm id)`.
    """
    augmented = preset.option("scratch_augmentation")
    scratch_arms = {
        SCRATCH: arms_lib.scratch(SCRATCH, "From scratch (labelled only)"),
        SCRATCH_AUGMENTED: arms_lib.scratch(
            SCRATCH_AUGMENTED, "From scratch, 1-pixel shifts",
            augmentation=arms_lib.small_shift),
    }
    baseline = SCRATCH_AUGMENTED if augmented else SCRATCH
    arms = [scratch_arms[baseline], arms_lib.distilled(
        DISTILLED, f"Distilled (T={preset.temperature:g})", alpha=0.0,
        soft_targets="memory")]
    if is_reference:
        arms.insert(1, scratch_arms[SCRATCH if augmented else SCRATCH_AUGMENTED])
        for t in preset.option("temperatures"):
            if t != preset.temperature:
                arms.append(arms_lib.distilled(
                    f"distilled_t{t:g}", f"Distilled (T={t:g})", temperature=t,
                    alpha=0.0, soft_targets="memory"))
        for epochs, teacher in teachers.items():
            if epochs != preset.teacher_epochs:
                arms.append(arms_lib.distilled(
                    f"distilled_teacher{epochs}",
                    f"Distilled from a {results_lib.plural(epochs, 'epoch')} teacher",
                    alpha=0.0, soft_targets=teacher_logits_source(teacher, epochs)))
    return arms, baseline


def run_point(setup, views, point, is_reference, teachers):
    """Trains (or loads) one point's arms over the seeds; its summary."""
    preset = setup.preset
    fraction, epochs, width = point
    pool = len(setup.data.y_train)
    labelled = labelled_count(fraction, pool)
    if labelled not in views:
        views[labelled] = setup.with_labels(labelled)
    view = views[labelled].with_preset(
        preset.replace(student_epochs=epochs, student_width=width))
    arms, baseline = point_arms(preset, is_reference, teachers)
    key = point_key(labelled, epochs, width)
    started = time.perf_counter()
    records = protocol.run_seeds(view, arms, prefix=f"{key}__")
    summaries = {}
    for arm in arms:
        summary = protocol.summarize(
            records[arm.arm_id], None if arm.arm_id == baseline else records[baseline])
        if summary is None:
            failed = next(r for r in records[arm.arm_id] if not protocol.is_done(r))
            summaries[arm.arm_id] = {"label": arm.label, "status": "failed",
                                     "error": (failed or {}).get("error", "not run")}
            continue
        summaries[arm.arm_id] = {
            "label": arm.label, "status": "done", "accuracy": summary["accuracy"],
            "vs_baseline": summary["vs_baseline"],
            "train_seconds": summary["train_seconds"],
            "epoch_seconds": summary["epoch_seconds"]}
    gain = summaries[DISTILLED].get("vs_baseline")
    setup.log(f"point {key}: scratch {_mean(summaries[baseline])}, distilled "
              f"{_mean(summaries[DISTILLED])}, gain {stats.format_interval(gain)} "
              f"({time.perf_counter() - started:.0f} s)")
    return {
        "id": key, "fraction": fraction, "labelled": labelled,
        "unlabelled": pool - labelled, "epochs": epochs, "width": width,
        "parameters": int(view.build_student().count_params()),
        "steps": protocol.training_steps(view), "baseline": baseline,
        "reference": is_reference, "arms": summaries,
    }


def _mean(summary):
    accuracy = summary.get("accuracy")
    return "failed" if accuracy is None else f"{accuracy['mean']:.4f}"


def axis_rows(points, name, axis, teachers_info):
    """The rows of one axis: scratch and distilled accuracy and the gain."""
    rows = []
    for value, point, arm_id in axis:
        entry = points[point]
        arm = entry["arms"].get(arm_id, {})
        row = {
            "value": value, "point": entry["id"], "arm": arm_id,
            "baseline": entry["baseline"], "labelled": entry["labelled"],
            "unlabelled": entry["unlabelled"], "epochs": entry["epochs"],
            "width": entry["width"], "parameters": entry["parameters"],
            "scratch": entry["arms"][entry["baseline"]].get("accuracy"),
            "distilled": arm.get("accuracy"), "gain": arm.get("vs_baseline"),
        }
        if name == "gap":
            row["teacher_accuracy"] = teachers_info[str(value)]["accuracy"]
        rows.append(row)
    return rows


def run(preset="quick", dataset=None, output=None, fresh=False, seeds=None,
        verbose=0, log=print):
    """Runs the gain map; writes results.json, results.md and gain.png.

    Args:
        preset: A name of `PRESETS` or a `Preset`. Defaults to `"quick"`.
        dataset: `"fashion_mnist"` (offline) or a tfds image dataset name.
            Defaults to `None` (the preset's).
        output: Output directory. Defaults to
            `benchmarks/runs/gain-<preset>`.
        fresh: Ignore finished pieces of an earlier run. Defaults to
            `False` (resume).
        seeds: Seeds instead of the preset's (at least 2 for an
            interval). Defaults to `None`.
        verbose: Keras verbosity of the teachers' training. Defaults to `0`.
        log: Where progress lines go. Defaults to `print`.

    Returns:
        The results dict (also written as `results.json`).

    Raises:
        ValueError: for an unknown preset or invalid seeds, before anything
            is trained.
    """
    started = time.perf_counter()
    setup = protocol.start("gain", PRESETS, preset, seeds=seeds, dataset=dataset,
                           output=output, fresh=fresh, log=log, verbose=verbose)
    preset = setup.preset
    teachers, teachers_info = {}, {}
    for epochs in sorted({preset.teacher_epochs, *preset.option("teacher_epochs_axis")}):
        # A view per teacher: `train_teacher` sets the view's `teacher`.
        view = setup.with_preset(preset)
        model, record = protocol.train_teacher(view, epochs=epochs)
        teachers[epochs] = model
        teachers_info[str(epochs)] = {key: record[key] for key in (
            "accuracy", "parameters", "train_seconds", "width", "fingerprint",
            "epochs")}
    setup.teacher = teachers[preset.teacher_epochs]
    reference, axes = plan(preset)
    order = [reference] + [p for axis in axes.values() for _, p, _ in axis]
    views, points = {}, {}
    for point in order:
        if point not in points:
            points[point] = run_point(setup, views, point, point == reference, teachers)
    results = results_lib.skeleton("gain", preset)
    reference_entry = points[reference]
    results.update(
        dataset=setup.data.name, num_examples=setup.data.num_examples,
        test_examples_evaluated=int(len(setup.data.y_test)),
        teachers=teachers_info,
        reference={"id": reference_entry["id"], "fraction": reference[0],
                   "labelled": reference_entry["labelled"], "epochs": reference[1],
                   "width": reference[2], "temperature": preset.temperature,
                   "alpha": 0.0, "teacher_epochs": preset.teacher_epochs},
        scratch_augmentation=scratch_augmentation(preset, reference_entry),
        points=list(points.values()),
        axes={name: {"title": AXES[name][0], "x_label": AXES[name][1],
                     "rows": axis_rows(points, name, axis, teachers_info)}
              for name, axis in axes.items()},
        wall_seconds=time.perf_counter() - started)
    plot_path = plot_gain(results, setup.store.directory / PLOT_NAME)
    results_lib.write(results, markdown(results, [plot_path]), setup.store.directory)
    log(f"gain: wrote {setup.store.directory / 'results.md'}")
    return results


def scratch_augmentation(preset, reference_entry):
    """Whether augmentation helped scratch at the reference point, measured.

    Returns:
        `{"used", "augmented_minus_plain"}`: the preset's choice, and the
        paired difference (augmented - plain) measured at the reference
        point, where both scratch variants run.
    """
    arms = reference_entry["arms"]
    plain, augmented = arms.get(SCRATCH, {}), arms.get(SCRATCH_AUGMENTED, {})
    difference = None
    if plain.get("accuracy") and augmented.get("accuracy"):
        difference = stats.paired_difference(augmented["accuracy"]["per_seed"],
                                             plain["accuracy"]["per_seed"])
    return {"used": bool(preset.option("scratch_augmentation")),
            "augmented_minus_plain": difference}


def format_value(axis, value):
    """An axis value as the report writes it (`"10 %"`, `"T=2"`, ...)."""
    if axis == "labels":
        return f"{100 * value:g} %"
    if axis == "temperature":
        return f"T={value:g}"
    return f"{value:g}"


def _per_seed(summary):
    if not summary:
        return "—"
    return ", ".join(f"{100 * v:.1f}" for v in summary["per_seed"])


def markdown(results, plot_files=(PLOT_NAME,)):
    """The gain map as Markdown: set-up, one table per axis, the plot."""
    config, reference = results["config"], results["reference"]
    teacher = results["teachers"][str(reference["teacher_epochs"])]
    pool = results["num_examples"]["train"]
    lines = results_lib.header("the KD gain map", results)
    lines += [
        f"{results['dataset']}: a pool of {pool:,} class-balanced training "
        f"images, {results['test_examples_evaluated']:,} test images. "
        f"**Teacher**: teacher_cnn(width={teacher['width']}), "
        f"{report.format_count(teacher['parameters'])} parameters, trained "
        f"{results_lib.plural(teacher['epochs'], 'epoch')} on all {pool:,} images "
        f"**with their labels**: test accuracy "
        f"{report.format_percent(teacher['accuracy'])}.",
        "",
        "**Students** (student_cnn, same initial weights and batch order per "
        "seed): *from scratch* sees only the labelled share of the pool; "
        "*distilled* sees that share plus the rest of the pool **without "
        "labels**, learning only from the teacher's soft targets (logits "
        "computed once; α = 0). Both take the same number of optimizer steps "
        "(an epoch is one pass over the pool: scratch cycles through its "
        f"labelled images for as many batches), Adam {config['learning_rate']:g} "
        f"with {config['learning_rate_schedule']} decay, batch "
        f"{config['batch_size']}, seeds {config['seeds']}.",
        "",
        f"Reference point: {100 * reference['fraction']:g} % labels "
        f"({reference['labelled']:,} labelled + {pool - reference['labelled']:,} "
        f"unlabelled), {results_lib.plural(reference['epochs'], 'epoch')}, "
        f"width {reference['width']}, "
        f"T={reference['temperature']:g}, α=0, the "
        f"{results_lib.plural(reference['teacher_epochs'], 'epoch')} teacher. Each "
        "axis changes one of these.",
        "",
    ]
    augmentation = results["scratch_augmentation"]
    difference = augmentation["augmented_minus_plain"]
    lines += [
        f"Scratch baseline: {'with' if augmentation['used'] else 'without'} "
        "random 1-pixel shifts, chosen from an earlier measurement (see "
        "`benchmarks/experiments/gain.py`). Re-measured at the reference "
        "point: shifted minus plain = "
        f"{stats.format_interval(difference)}.",
        "",
    ]
    for name, axis in results["axes"].items():
        lines += [f"## {axis['title']}", "",
                  f"| {axis['x_label']} | Student data | Scratch, per seed (%) "
                  "| Scratch | Distilled, per seed (%) | Distilled "
                  "| KD gain, 95 % CI |",
                  "|---:|---|---|---:|---|---:|---:|"]
        for row in axis["rows"]:
            value = format_value(name, row["value"])
            if "teacher_accuracy" in row:
                value += f" ({report.format_percent(row['teacher_accuracy'], 1)})"
            data = (f"{row['labelled']:,} labelled + {row['unlabelled']:,} unlabelled"
                    if row["unlabelled"] else f"{row['labelled']:,} labelled")
            lines.append(
                f"| {value} | {data} | {_per_seed(row['scratch'])} "
                f"| {stats.format_accuracy(row['scratch'])} "
                f"| {_per_seed(row['distilled'])} "
                f"| {stats.format_accuracy(row['distilled'])} "
                f"| {stats.format_interval(row['gain'])} |")
        if name == "gap":
            lines += ["", "In brackets: the teacher's test accuracy."]
        lines.append("")
    lines += [
        "Accuracy: test set, mean ± sample std (ddof=1) over seeds. KD gain: "
        "distilled minus scratch on the same seed (same initial weights, same "
        "batches), mean of the per-seed differences with its 95 % Student-t "
        "interval, in percentage points.",
        "",
        "## Plot", "",
    ]
    lines += results_lib.image_links(plot_files, {PLOT_NAME: "KD gain along each axis"})
    return "\n".join(lines).rstrip("\n") + "\n"


def plot_gain(results, path):
    """One panel per axis: the KD gain with its 95 % interval, a zero line.

    Args:
        results: A gain results dict.
        path: Where to write the PNG.

    Returns:
        `path`, as a string.
    """
    names = list(results["axes"])
    columns = 3
    rows = math.ceil(len(names) / columns)
    figure = figures.new_figure((4.6 * columns, 3.8 * rows))
    grid = figure.subplots(rows, columns, squeeze=False)
    reference = results["reference"]
    reference_values = {"labels": reference["fraction"], "patience": reference["epochs"],
                        "gap": reference["teacher_epochs"], "capacity": reference["width"],
                        "temperature": reference["temperature"]}
    for index, name in enumerate(names):
        axes = grid[index // columns][index % columns]
        axis = results["axes"][name]
        xs = list(range(len(axis["rows"])))
        ticks, extremes = [], [0.0]
        for x, row in zip(xs, axis["rows"]):
            tick = format_value(name, row["value"])
            if "teacher_accuracy" in row:
                tick += f"\n({100 * row['teacher_accuracy']:.1f} %)"
            if name == "capacity":
                tick += f"\n{report.format_count(row['parameters'])}"
            ticks.append(tick)
            gain = row["gain"]
            if gain is None:
                continue
            mean = 100 * gain["mean"]
            low = mean if gain["low"] is None else 100 * gain["low"]
            high = mean if gain["high"] is None else 100 * gain["high"]
            extremes += [low, high]
            color = ("#2ca02c" if low > 0 else "#d62728" if high < 0
                     else results_lib.SCRATCH_COLOR)
            axes.errorbar([x], [mean], yerr=[[mean - low], [high - mean]], fmt="o",
                          color=color, markersize=8, capsize=5, linewidth=2)
            axes.annotate(f"{mean:+.1f}", xy=(x, high), xytext=(0, 5),
                          textcoords="offset points", ha="center", fontsize=9,
                          color=color)
            if row["value"] == reference_values[name]:
                axes.axvspan(x - 0.35, x + 0.35, color="#1f77b4", alpha=0.08)
        axes.axhline(0.0, color=results_lib.TEACHER_COLOR, linewidth=1.0)
        axes.set_xticks(xs, ticks, fontsize=8)
        axes.set_xlim(-0.6, len(xs) - 0.4)
        span = max(max(extremes) - min(extremes), 1.0)  # room for the labels
        axes.set_ylim(min(extremes) - 0.08 * span, max(extremes) + 0.18 * span)
        axes.set_title(axis["title"], fontsize=10)
        axes.set_xlabel(axis["x_label"], fontsize=9)
        axes.set_ylabel("KD gain over scratch (pp)", fontsize=9)
        axes.grid(True, axis="y", alpha=0.3)
    for index in range(len(names), rows * columns):
        spare = grid[index // columns][index % columns]
        spare.axis("off")
        spare.text(0.0, 0.5, (
            "Gain = distilled - scratch, same seed,\n"
            "mean and 95 % t-interval over "
            f"{len(results['config']['seeds'])} seeds.\n"
            "Green: interval above 0; red: below;\ngrey: contains 0. "
            "Shaded: reference point.\n\n"
            f"Teacher: {results['num_examples']['train']:,} labelled images.\n"
            "Distilled: the labelled share + the rest\nunlabelled "
            "(soft targets, α=0).\nScratch: the labelled share only,\n"
            "same steps."), fontsize=9, va="center")
    figure.suptitle(f"Where does distillation pay? {results['dataset']}, "
                    f"preset {results['preset']}", fontsize=12)
    return figures.save_figure(figure, path)


def main(argv=None, prog=None):
    """Parses the command line, runs the gain map; returns 0."""
    parser = cli.parser(sys.modules[__name__], "gain", prog)
    run(**vars(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
