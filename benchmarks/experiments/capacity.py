"""Experiment `capacity`: how small can the student be before accuracy falls off?

Students of growing width (`benchmarks.models.student_cnn`, five sizes from
about 2 k to 200 k parameters on 28x28x1 images) are each trained twice
from the same initial weights: from scratch on the labels, and distilled
from one teacher (`tfkd.Distiller`, logit KD of Hinton et al., 2015). The
table and the plot give test accuracy against parameters and the KD gain
at each size, and the report names the smallest student within 1
percentage point of the best of its kind.

    python -m benchmarks capacity --preset quick   # ~13 min on 2 CPU cores
    python -m benchmarks capacity --preset smoke   # seconds

Presets: `smoke` (what the tests run: 2 sizes, 256 examples, 1 epoch),
`quick` (4,000 examples, the teacher of the main benchmark, 1 seed; 13
minutes measured on 2 CPU cores shared with other jobs) and `full` (the whole training split,
3 seeds; for a GPU). Output: `benchmarks/runs/capacity-<preset>/` with
`results.json`, `results.md` and `capacity.png`; a rerun resumes after the
last finished student (`--fresh` starts over).
"""

import sys

import numpy as np

from benchmarks import arms as arms_lib
from benchmarks import cli
from benchmarks import presets as presets_lib
from benchmarks import protocol
from benchmarks import report
from benchmarks import results as results_lib
from benchmarks import stats
from tfkd.utils import figures
from tfkd.utils import validation

#: Student widths: 1.76 k, 6.79 k, 20.5 k, 59.7 k and 200 k parameters for
#: 28x28x1 inputs and 10 classes (410·w² + 56·w + 10), about 3.3x apart.
WIDTHS = (2, 4, 7, 12, 22)
#: "Falls off": more than this below the best student of the same kind.
TOLERANCE = 0.01
LABELS = {"scratch": "From scratch", "distilled": "Distilled (tfkd)"}
#: The distilled students read the teacher's logits, precomputed once: the
#: same soft targets as an online teacher (no augmentation), much cheaper.
ARMS = {"scratch": arms_lib.scratch(label=LABELS["scratch"]),
        "distilled": arms_lib.distilled("distilled", LABELS["distilled"],
                                        soft_targets="memory")}
PLOT_NAME = "capacity.png"

PRESETS = {
    "smoke": presets_lib.Preset(
        name="smoke", train_examples=256, test_examples=256,
        validation_fraction=0.01, batch_size=64, teacher_width=8,
        teacher_epochs=1, student_epochs=1, options=dict(widths=(2, 4))),
    "quick": presets_lib.Preset(
        name="quick", train_examples=4_000, test_examples=None, batch_size=128,
        teacher_width=32, teacher_epochs=4, student_epochs=8,
        seeds=(0, 1, 2), options=dict(widths=WIDTHS)),
    "full": presets_lib.Preset(
        name="full", train_examples=None, test_examples=None, batch_size=128,
        teacher_width=32, teacher_epochs=20, student_epochs=30,
        seeds=(0, 1, 2), options=dict(widths=WIDTHS)),
}


def resolve_preset(preset, seeds=None, temperature=None, alpha=None, widths=None):
    """The preset with the command line's overrides, validated."""
    preset = presets_lib.get_preset(PRESETS, preset)
    changes = {}
    if seeds is not None:
        changes["seeds"] = presets_lib.check_seeds(seeds)
    if temperature is not None:
        changes["temperature"] = validation.check_temperature(temperature)
    if alpha is not None:
        changes["alpha"] = validation.check_alpha(alpha)
    if widths is not None:
        changes["widths"] = _check_widths(widths)
    return preset.replace(**changes)


def width_row(setup, width):
    """Both arms of one student width over the seeds, as a table row."""
    setup = setup.with_preset(setup.preset.replace(student_width=width))
    records = protocol.run_seeds(setup, list(ARMS.values()), prefix=f"w{width}__")
    scratch = protocol.summarize(records["scratch"])
    distilled = protocol.summarize(records["distilled"], records["scratch"])
    setup.log(f"width {width}: scratch {scratch['accuracy']['mean']:.4f}, "
              f"distilled {distilled['accuracy']['mean']:.4f}")
    return {
        "width": width,
        "parameters": int(setup.build_student().count_params()),
        "scratch": scratch["accuracy"], "distilled": distilled["accuracy"],
        "scratch_train_seconds": scratch["train_seconds"],
        "distilled_train_seconds": distilled["train_seconds"],
        "kd_gain": distilled["accuracy"]["mean"] - scratch["accuracy"]["mean"],
        "kd_gain_interval": distilled["vs_baseline"],
    }


def run(preset="quick", dataset=None, output=None, fresh=False, seeds=None,
        temperature=None, alpha=None, widths=None, verbose=0, log=print):
    """Runs the capacity experiment; writes results.json, results.md, PNG.

    Args:
        preset: A name of `PRESETS` or a `Preset`. Defaults to `"quick"`.
        dataset: `"fashion_mnist"` (offline) or a tfds image dataset name.
            Defaults to `None` (the preset's).
        output: Output directory. Defaults to
            `benchmarks/runs/capacity-<preset>`.
        fresh: Ignore finished students of an earlier run. Defaults to
            `False` (resume).
        seeds: Seeds instead of the preset's. Defaults to `None`.
        temperature: T of the distilled students. Defaults to `None` (the
            preset's, 4.0).
        alpha: α of the distilled students. Defaults to `None` (0.1).
        widths: Student widths to run. Defaults to `None` (the preset's).
        verbose: Keras verbosity of the teacher's training. Defaults to `0`.
        log: Where progress lines go. Defaults to `print`.

    Returns:
        The results dict (also written as `results.json`).

    Raises:
        ValueError: for an unknown preset or an invalid override, before
            anything is trained.
        RuntimeError: if the dataset cannot be loaded.
    """
    preset = resolve_preset(preset, seeds, temperature, alpha, widths)
    setup = protocol.start("capacity", PRESETS, preset, dataset=dataset,
                           output=output, fresh=fresh, log=log, verbose=verbose)
    store = setup.store
    _, teacher = protocol.train_teacher(setup)
    rows = [width_row(setup, width) for width in preset.option("widths")]
    results = results_lib.skeleton("capacity", preset)
    results.update(
        dataset=setup.data.name, num_examples=setup.data.num_examples,
        test_examples_evaluated=int(len(setup.data.y_test)),
        teacher={key: teacher[key] for key in
                 ("accuracy", "parameters", "train_seconds", "width", "fingerprint")},
        rows=rows)
    results["derived"] = derive(results)
    plot_path = plot_capacity(results, store.directory / PLOT_NAME)
    results_lib.write(results, markdown(results, [plot_path]), store.directory)
    log(f"capacity: wrote {store.directory / 'results.md'}")
    return results


def derive(results, tolerance=TOLERANCE):
    """Where accuracy falls off, per kind of student.

    For each arm: the best mean accuracy over the sizes, and the smallest
    student whose mean accuracy is within `tolerance` of it (below that
    size, accuracy "falls off"). Also the mean KD gain over the sizes.

    Args:
        results: A capacity results dict (its `rows`).
        tolerance: Accuracy (fraction) below the best that still counts as
            "as good". Defaults to `TOLERANCE` (1 percentage point).

    Returns:
        A dict `{"tolerance", "mean_kd_gain", "scratch": {...},
        "distilled": {...}}`, each arm with `best_accuracy`,
        `smallest_width` and `smallest_parameters`.

    Example:

    >>> rows = [{"width": w, "parameters": p, "kd_gain": 0.0,
    ...          "scratch": {"mean": a}, "distilled": {"mean": a}}
    ...         for w, p, a in [(2, 1762, .70), (4, 6794, .79), (8, 26698, .80)]]
    >>> derive({"rows": rows})["distilled"]["smallest_width"]
    4
    """
    rows = results["rows"]
    derived = {
        "tolerance": tolerance,
        "mean_kd_gain": float(np.mean([row["kd_gain"] for row in rows])) if rows else None,
    }
    for arm in ARMS:
        if not rows:
            derived[arm] = None
            continue
        best = max(row[arm]["mean"] for row in rows)
        smallest = min(
            (row for row in rows if row[arm]["mean"] >= best - tolerance - 1e-12),
            key=lambda row: row["parameters"],
        )
        derived[arm] = {
            "best_accuracy": best,
            "smallest_width": smallest["width"],
            "smallest_parameters": smallest["parameters"],
        }
    return derived


def markdown(results, plot_files=(PLOT_NAME,)):
    """The capacity report as Markdown.

    Args:
        results: A capacity results dict.
        plot_files: Plots to link (base names are used). Defaults to the
            capacity plot.

    Returns:
        The report, ending with a newline.
    """
    config = results["config"]
    teacher = results["teacher"]
    lines = results_lib.header("student capacity", results)
    lines += [
        f"{results['dataset']}: {results['num_examples']['train']} training "
        f"examples, {results['test_examples_evaluated']} test examples. "
        f"Students trained {results_lib.plural(config['student_epochs'], 'epoch')} (Adam "
        f"{config['learning_rate']:g}, batch {config['batch_size']}), seeds "
        f"{config['seeds']}; distilled with T={config['temperature']:g}, "
        f"α={config['alpha']:g} from teacher_cnn(width="
        f"{teacher['width']}), {report.format_count(teacher['parameters'])} "
        f"parameters, {results_lib.plural(config['teacher_epochs'], 'epoch')}, test accuracy "
        f"{report.format_percent(teacher['accuracy'])}.",
        "",
        "## Accuracy by student size",
        "",
        "| Width | Parameters | From scratch | Distilled | KD gain, 95 % CI "
        "| Distilled, kept vs teacher |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        kept = row["distilled"]["mean"] / teacher["accuracy"] if teacher["accuracy"] else None
        lines.append(
            f"| {row['width']} | {report.format_count(row['parameters'])} "
            f"| {stats.format_accuracy(row['scratch'])} "
            f"| {stats.format_accuracy(row['distilled'])} "
            f"| {stats.format_interval(row.get('kd_gain_interval')) if row.get('kd_gain_interval') else report.format_points(row['kd_gain'])} "
            f"| {report.format_percent(kept, 1)} |"
        )
    derived = results["derived"]
    lines += [
        "",
        "Accuracy: test set, mean ± sample std over seeds. KD gain: distilled "
        "minus from scratch, in percentage points, same initial weights and "
        "batches; mean of the per-seed differences with its 95 % t-interval.",
        "",
        "## Where accuracy falls off",
        "",
    ]
    for arm in ARMS:
        entry = derived.get(arm)
        if entry is None:
            continue
        lines.append(
            f"- {LABELS[arm]}: the smallest student within "
            f"{100 * derived['tolerance']:g} pp of the best "
            f"({report.format_percent(entry['best_accuracy'])}) has width "
            f"{entry['smallest_width']} "
            f"({report.format_count(entry['smallest_parameters'])} parameters)."
        )
    if derived.get("mean_kd_gain") is not None:
        lines.append(
            f"- Mean KD gain over the sizes: "
            f"{report.format_points(derived['mean_kd_gain'])}."
        )
    lines += ["", "## Plot", ""]
    lines += results_lib.image_links(plot_files, {PLOT_NAME: "Accuracy vs student size"})
    return "\n".join(lines).rstrip("\n") + "\n"


def plot_capacity(results, path):
    """Test accuracy vs parameters (log x): from scratch and distilled.

    One line per kind of student with ± std error bars, the teacher as a
    dashed horizontal line, and the KD gain written above each size.

    Args:
        results: A capacity results dict.
        path: Where to write the PNG.

    Returns:
        `path`, as a string.
    """
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    figure = figures.new_figure((8, 5.5))
    axes = figure.add_subplot()
    rows = results["rows"]
    xs = [row["parameters"] for row in rows]
    for arm, color, marker in (("scratch", results_lib.SCRATCH_COLOR, "s"),
                               ("distilled", results_lib.DISTILLED_COLOR, "o")):
        means = [100 * row[arm]["mean"] for row in rows]
        stds = [100 * row[arm]["std"] for row in rows]
        axes.errorbar(xs, means, yerr=stds, color=color, marker=marker,
                      markersize=7, capsize=4, linewidth=1.8, label=LABELS[arm])
    teacher = results["teacher"]
    axes.axhline(100 * teacher["accuracy"], color=results_lib.TEACHER_COLOR,
                 linestyle="--", linewidth=1.2,
                 label=f"Teacher ({report.format_count(teacher['parameters'])} "
                       f"params): {100 * teacher['accuracy']:.1f} %")
    for row in rows:
        top = 100 * max(row["scratch"]["mean"] + row["scratch"]["std"],
                        row["distilled"]["mean"] + row["distilled"]["std"])
        gain = row["kd_gain"]
        axes.annotate(
            f"KD {report.format_points(gain)}", xy=(row["parameters"], top),
            xytext=(0, 8), textcoords="offset points", ha="center",
            fontsize=9, color="#2ca02c" if gain >= 0 else "#d62728",
        )
    axes.set_xscale("log")
    axes.xaxis.set_major_locator(FixedLocator(xs))
    axes.xaxis.set_minor_locator(NullLocator())
    widths = {row["parameters"]: row["width"] for row in rows}
    axes.xaxis.set_major_formatter(FuncFormatter(
        lambda value, _: f"{report.format_count(value)}\n"
                         f"width {widths.get(int(round(value)), '?')}"
    ))
    if xs:
        axes.set_xlim(min(xs) / 1.6, max(xs) * 1.6)
    values = [100 * row[arm]["mean"] for row in rows for arm in ARMS]
    values.append(100 * teacher["accuracy"])
    low, high = min(values), max(values)
    span = max(high - low, 2.0)
    axes.set_ylim(low - 0.15 * span, high + 0.2 * span)
    axes.set_xlabel("Student parameters (log scale)")
    axes.set_ylabel("Test accuracy (%)")
    axes.set_title(
        f"How small can the student be? {results['dataset']}, "
        f"preset {results['preset']}"
    )
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best", fontsize=9)
    return figures.save_figure(figure, path)


def _check_widths(widths):
    values = tuple(widths)
    if not values or any(
        not isinstance(w, int) or isinstance(w, bool) or w <= 0 for w in values
    ):
        raise validation.invalid_value(
            "widths",
            "a non-empty sequence of ints > 0",
            widths,
        )
    return tuple(sorted(set(values)))


def main(argv=None, prog=None):
    """Parses the command line, runs the experiment; returns 0."""
    parser = cli.parser(sys.modules[__name__], "capacity", prog)
    parser.add_argument("--temperature", type=float, default=None,
                        help="KD temperature T (default: the preset's, 4.0)")
    parser.add_argument("--alpha", type=float, default=None,
                        help="weight of the hard-label loss (default 0.1)")
    parser.add_argument("--widths", default=None,
                        type=lambda text: [int(w) for w in cli.name_list(text)],
                        help="comma-separated student widths (default 2,4,7,12,22)")
    run(**vars(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
