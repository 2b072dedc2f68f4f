"""Experiment `transfer`: do T and α tuned on one task carry over to another?

`tfkd.tuning.search` tunes the temperature T and α on a source task A,
then again on a target task B; on B's test set three distilled students
are compared, each from the same initial weights: (i) tfkd's defaults
(T=4, α=0.1), (ii) the values tuned on A, transferred, and (iii) the values
tuned on B itself, with the student trained from scratch as reference.
If (ii) is as good as (iii), tuning once is enough.

Offline, A and B are both Fashion-MNIST and differ by what changes most
between real tasks of one user: the student size and the data budget
(`quick`: A = width-4 student, 6.8 k parameters, 1,000 examples;
B = width-8 student, 26.7 k parameters, 4,000 examples). With internet,
`--source mnist --target cifar10` runs the same code on two datasets
(tensorflow-datasets downloads them once).

    python -m benchmarks transfer --preset quick   # ~15 min on 2 CPU cores
    python -m benchmarks transfer --source mnist --target cifar10 --preset full

Presets: `smoke` (what the tests run: 2 trials per side, 1 epoch),
`quick` (8 trials per side of 6 epochs, 2 seeds; 16 minutes measured on
2 CPU cores shared with other jobs, the target search stopped by its
4-minute budget after 7 trials) and `full` (30 trials, whole training
split, 3 seeds; for a GPU). Every trial and every final student trains
for the same `student_epochs`, so the values are tuned for the regime
they are used in. Both searches use the same seed, so they propose the
same (T, α) candidates: the comparison shows whether the *ranking* of
settings carries over, not the luck of two different samples.
Output: `benchmarks/results/transfer-<preset>/` with `results.json`,
`results.md`, `transfer.png` and the two T x α heatmaps; a rerun resumes
(keras-tuner reloads finished trials, finished students are loaded);
`--fresh` starts over.
"""

import dataclasses
import sys

import numpy as np

from benchmarks import measure
from benchmarks import report
from benchmarks.experiments import common
from tfkd import tuning

SIDES = ("source", "target")
#: Final arms on the target, in table order.
ARMS = ("scratch", "defaults", "transferred", "tuned")
LABELS = {
    "scratch": "Student from scratch",
    "defaults": "Distilled, tfkd defaults",
    "transferred": "Distilled, tuned on source",
    "tuned": "Distilled, tuned on target",
}
_ARM_COLORS = {
    "scratch": common.SCRATCH_COLOR,
    "defaults": "#ff7f0e",
    "transferred": "#9467bd",
    "tuned": common.DISTILLED_COLOR,
}
PLOT_NAME = "transfer.png"
HEATMAP_NAMES = {side: f"heatmap_{side}.png" for side in SIDES}


@dataclasses.dataclass(frozen=True)
class TransferPreset:
    """Sizes of one transfer run.

    Attributes:
        name: Preset name.
        source_train_examples: Training examples of the source task, or
            `None` for the whole training split.
        target_train_examples: Training examples of the target task.
        source_width: `student_cnn` width of the source task's student.
        target_width: `student_cnn` width of the target task's student.
        test_examples: Target test examples evaluated, or `None` for all.
        validation_fraction: Share of each training split held out; the
            searches score on it, never on the test set.
        batch_size: Batch size.
        teacher_width: Width of each side's `teacher_cnn`.
        teacher_epochs: Epochs of each teacher.
        student_epochs: Epochs of every trial and every final student.
        trials: Trials of each search.
        tuning_seconds: Time budget of each search.
        seeds: Seeds of the final students (mean ± std).
        tuner: `"random"` or `"bayesian"` (needs scipy).
        default_temperature: T of the "defaults" arm (`tfkd.Distiller`'s).
        default_alpha: α of the "defaults" arm (`tfkd.Distiller`'s).
        learning_rate: Adam learning rate of every model.
    """

    name: str
    source_train_examples: int | None
    target_train_examples: int | None
    source_width: int
    target_width: int
    test_examples: int | None
    validation_fraction: float
    batch_size: int
    teacher_width: int
    teacher_epochs: int
    student_epochs: int
    trials: int
    tuning_seconds: float | None
    seeds: tuple = (0,)
    tuner: str = "random"
    default_temperature: float = 4.0
    default_alpha: float = 0.1
    learning_rate: float = 2e-3


PRESETS = {
    "smoke": TransferPreset(
        name="smoke",
        source_train_examples=192,
        target_train_examples=256,
        source_width=2,
        target_width=4,
        test_examples=256,
        validation_fraction=0.01,
        batch_size=64,
        teacher_width=8,
        teacher_epochs=1,
        student_epochs=1,
        trials=2,
        tuning_seconds=300.0,
    ),
    "quick": TransferPreset(
        name="quick",
        source_train_examples=1_000,
        target_train_examples=4_000,
        source_width=4,
        target_width=8,
        test_examples=None,
        validation_fraction=0.1,
        batch_size=128,
        teacher_width=16,
        teacher_epochs=4,
        student_epochs=6,
        trials=8,
        tuning_seconds=240.0,
        seeds=(0, 1),
    ),
    "full": TransferPreset(
        name="full",
        source_train_examples=6_000,
        target_train_examples=None,
        source_width=4,
        target_width=8,
        test_examples=None,
        validation_fraction=0.1,
        batch_size=128,
        teacher_width=32,
        teacher_epochs=20,
        student_epochs=20,
        trials=30,
        tuning_seconds=3 * 3600.0,
        seeds=(0, 1, 2),
    ),
}


def run(
    preset="quick",
    source="fashion_mnist",
    target="fashion_mnist",
    output=None,
    fresh=False,
    verbose=0,
    log=print,
):
    """Runs the transfer experiment; writes results.json, results.md, PNGs.

    Both datasets are loaded first, so a dataset that needs a download
    fails at once, before anything is trained.

    Args:
        preset: `"smoke"`, `"quick"` or `"full"`. Defaults to `"quick"`.
        source: Dataset of the source task A. Defaults to
            `"fashion_mnist"`.
        target: Dataset of the target task B. Defaults to
            `"fashion_mnist"`.
        output: Output directory. Defaults to
            `benchmarks/results/transfer-<preset>` (with the dataset names
            when one is not Fashion-MNIST).
        fresh: Start over: delete finished teachers, students and searches
            of an earlier run. Defaults to `False` (resume).
        verbose: Keras-tuner and teacher verbosity. Defaults to `0`.
        log: Where progress lines go. Defaults to `print`.

    Returns:
        The results dict (also written as `results.json`).

    Raises:
        ValueError: for an unknown preset.
        RuntimeError: if a dataset cannot be loaded (the message says why
            and what to do offline).
    """
    preset = common.get_preset(PRESETS, preset)
    store = common.open_store("transfer", preset.name, [source, target],
                              output, fresh, log,
                              f"source {source}, target {target}")
    names = {"source": source, "target": target}
    examples = {"source": preset.source_train_examples,
                "target": preset.target_train_examples}
    widths = {"source": preset.source_width, "target": preset.target_width}
    data = {
        side: common.load_data(
            names[side], batch_size=preset.batch_size,
            train_examples=examples[side],
            validation_fraction=preset.validation_fraction,
        )
        for side in SIDES
    }
    test = common.arrays(data["target"].test, preset.test_examples)

    sides, searches, teachers = {}, {}, {}
    for side in SIDES:
        side_test = test if side == "target" else common.arrays(
            data[side].test, preset.test_examples)
        teachers[side], teacher_record = common.teacher(
            data[side], width=preset.teacher_width,
            epochs=preset.teacher_epochs, learning_rate=preset.learning_rate,
            store=store, key=f"teacher_{side}", test=side_test, log=log,
            verbose=verbose,
        )
        log(f"{side}: tuning T and α, {preset.trials} trials of "
            f"{common.plural(preset.student_epochs, 'epoch')}, student width "
            f"{widths[side]}")
        searches[side] = tuning.search(
            teachers[side],
            common.student_builder(data[side], widths[side]),
            data[side].train,
            data[side].validation,
            epochs=preset.student_epochs,
            max_trials=preset.trials,
            max_seconds=preset.tuning_seconds,
            learning_rate=preset.learning_rate,
            tuner=preset.tuner,
            directory=str(store.directory / "tuning"),
            project_name=side,
            overwrite=fresh,
            verbose=verbose,
            log=lambda line, side=side: log(f"  {side} {line}"),
        )
        tuning.plot_heatmap(
            searches[side].trials,
            store.directory / HEATMAP_NAMES[side],
            title=f"{side.capitalize()} ({names[side]}, width {widths[side]}, "
                  f"{data[side].num_examples['train']} examples): student "
                  "val. accuracy",
            temperature_range=tuple(searches[side].settings["temperature_range"]),
        )
        sides[side] = {
            "dataset": names[side],
            "train_examples": data[side].num_examples["train"],
            "validation_examples": data[side].num_examples["validation"],
            "student_width": widths[side],
            "student_parameters": common.student_parameters(data[side], widths[side]),
            "teacher": {key: teacher_record[key] for key in
                        ("accuracy", "parameters", "train_seconds", "width")},
            "search": {
                "temperature": searches[side].temperature,
                "alpha": searches[side].alpha,
                "val_accuracy": searches[side].val_accuracy,
                "trials": len(searches[side].trials),
                "completed_trials": sum(
                    t["status"] == "COMPLETED" for t in searches[side].trials),
                "budget_exhausted": searches[side].budget_exhausted,
                "search_seconds": searches[side].search_seconds,
                "tuning_json": f"tuning/{side}/tuning.json",
            },
        }

    settings = {
        "scratch": (None, None),
        "defaults": (preset.default_temperature, preset.default_alpha),
        "transferred": (searches["source"].temperature, searches["source"].alpha),
        "tuned": (searches["target"].temperature, searches["target"].alpha),
    }
    arms = _final_arms(preset, data["target"], teachers["target"], test,
                       settings, store, log)
    results = common.results_skeleton("transfer", preset)
    results.update(
        source=source,
        target=target,
        sides=sides,
        test_examples_evaluated=int(len(test[1])),
        arms=arms,
        target_trials=list(searches["target"].trials),
    )
    results["derived"] = derive(results)
    paths = [plot_transfer(results, store.directory / PLOT_NAME)]
    paths += [store.directory / HEATMAP_NAMES[side] for side in SIDES]
    common.write_outputs(results, markdown(results, paths), store.directory)
    log(f"transfer: wrote {store.directory / 'results.md'}")
    return results


def _final_arms(preset, data, teacher, test, settings, store, log):
    """Trains the four target arms per seed (or loads them); returns them."""
    build = common.student_builder(data, preset.target_width)
    cache = None
    per_arm = {arm: [] for arm in ARMS}
    for seed in preset.seeds:
        weights = None
        for arm in ARMS:
            temperature, alpha = settings[arm]
            key = f"{arm}__seed{seed}"
            record = store.load(key)
            # A record is reused only for the values it was trained with: a
            # resumed search may have found new best values since.
            if (record is not None and record.get("status") == "done"
                    and record.get("temperature") == temperature
                    and record.get("alpha") == alpha):
                per_arm[arm].append(record)
                continue
            if weights is None:
                weights = common.initial_weights(build, seed)
            if cache is None and arm != "scratch":
                cache = common.teacher_logits(teacher, data, log)
            student, seconds = common.train_student(
                "scratch" if arm == "scratch" else "distilled", build, weights,
                data=data, cache=cache, epochs=preset.student_epochs,
                learning_rate=preset.learning_rate, seed=seed,
                temperature=temperature, alpha=alpha,
            )
            accuracy, _ = measure.accuracy_and_predictions(student, *test)
            record = {"status": "done", "accuracy": accuracy,
                      "train_seconds": seconds, "temperature": temperature,
                      "alpha": alpha}
            store.save(key, record)
            per_arm[arm].append(record)
            log(f"target, seed {seed}: {LABELS[arm]} test accuracy {accuracy:.4f}")
    return {
        arm: {
            "label": LABELS[arm],
            "temperature": settings[arm][0],
            "alpha": settings[arm][1],
            "accuracy": common.mean_std([r["accuracy"] for r in per_arm[arm]]),
            "train_seconds": float(np.mean([r["train_seconds"] for r in per_arm[arm]])),
        }
        for arm in ARMS
    }


def derive(results):
    """Differences of mean test accuracy between the target arms.

    Args:
        results: A transfer results dict (its `arms`).

    Returns:
        A dict of differences, as fractions: `transferred_minus_defaults`,
        `tuned_minus_defaults`, `tuned_minus_transferred` and
        `defaults_minus_scratch`.

    Example:

    >>> arms = {a: {"accuracy": {"mean": m}} for a, m in
    ...         [("scratch", .80), ("defaults", .82), ("transferred", .83),
    ...          ("tuned", .84)]}
    >>> round(derive({"arms": arms})["tuned_minus_transferred"], 4)
    0.01
    """
    mean = {arm: results["arms"][arm]["accuracy"]["mean"] for arm in ARMS}
    return {
        "transferred_minus_defaults": mean["transferred"] - mean["defaults"],
        "tuned_minus_defaults": mean["tuned"] - mean["defaults"],
        "tuned_minus_transferred": mean["tuned"] - mean["transferred"],
        "defaults_minus_scratch": mean["defaults"] - mean["scratch"],
    }


def markdown(results, plot_files=(PLOT_NAME, *HEATMAP_NAMES.values())):
    """The transfer report as Markdown.

    Args:
        results: A transfer results dict.
        plot_files: Plots to link (by base name). Defaults to the
            comparison and the two heatmaps.

    Returns:
        The report, ending with a newline.
    """
    import os

    config = results["config"]
    lines = common.header("transfer of T and α", results["preset"],
                          results["environment"], results["created"])
    lines += ["## Tasks and searches", "",
              "| Task | Dataset | Training examples | Student | Teacher "
              "| Trials | Best T | Best α | Best val. accuracy | Search time |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for side in SIDES:
        entry = results["sides"][side]
        search = entry["search"]
        teacher = entry["teacher"]
        budget = " (budget)" if search["budget_exhausted"] else ""
        lines.append(
            f"| {side.capitalize()} | {entry['dataset']} "
            f"| {entry['train_examples']} "
            f"| width {entry['student_width']}, "
            f"{report.format_count(entry['student_parameters'])} "
            f"| {report.format_count(teacher['parameters'])}, "
            f"{report.format_percent(teacher['accuracy'])} "
            f"| {search['completed_trials']}/{search['trials']}{budget} "
            f"| {search['temperature']:.2f} | {search['alpha']:.2f} "
            f"| {report.format_percent(search['val_accuracy'])} "
            f"| {report.format_duration(search['search_seconds'])} |"
        )
    lines += [
        "",
        f"Each trial and each final student: "
        f"{common.plural(config['student_epochs'], 'epoch')}, "
        f"Adam {config['learning_rate']:g}, batch {config['batch_size']}; "
        f"{config['tuner']} search over T in [1, 20] (log) and α in [0, 1], "
        "scored on the validation split (student accuracy after the last "
        "epoch). Teacher: test accuracy of that task's teacher.",
        "",
        f"## On the target task ({results['test_examples_evaluated']} test examples)",
        "",
        "| Setting | T | α | Test accuracy | vs defaults |",
        "|---|---:|---:|---:|---:|",
    ]
    defaults = results["arms"]["defaults"]["accuracy"]["mean"]
    for arm in ARMS:
        entry = results["arms"][arm]
        t = "—" if entry["temperature"] is None else f"{entry['temperature']:.2f}"
        a = "—" if entry["alpha"] is None else f"{entry['alpha']:.2f}"
        versus = "—" if arm in ("scratch", "defaults") else report.format_points(
            entry["accuracy"]["mean"] - defaults)
        lines.append(f"| {entry['label']} | {t} | {a} "
                     f"| {common.format_accuracy(entry['accuracy'])} | {versus} |")
    derived = results["derived"]
    lines += [
        "",
        f"Accuracy: mean ± std over seeds {config['seeds']}, same initial "
        "weights for every setting of a seed.",
        "",
        f"- Transferred vs defaults: "
        f"{report.format_points(derived['transferred_minus_defaults'])}; tuned "
        f"on target vs defaults: {report.format_points(derived['tuned_minus_defaults'])}; "
        f"tuned on target vs transferred: "
        f"{report.format_points(derived['tuned_minus_transferred'])}.",
        "",
        "## Plots",
        "",
    ]
    captions = {PLOT_NAME: "Target test accuracy and where each setting lies",
                **{name: f"{side.capitalize()} search: T x α heatmap"
                   for side, name in HEATMAP_NAMES.items()}}
    for path in plot_files:
        name = os.path.basename(str(path))
        lines += [f"![{captions.get(name, name)}]({name})", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def plot_transfer(results, path):
    """Two panels: target test accuracy per setting, and the target search.

    Left: one bar per setting (± std over seeds), labelled with its
    accuracy. Right: the target search's trials over T (log) and α,
    coloured by validation accuracy, with the defaults, the transferred
    values and the target's own best marked.

    Args:
        results: A transfer results dict.
        path: Where to write the PNG.

    Returns:
        `path`, as a string.
    """
    import math

    from matplotlib.ticker import FixedLocator, FuncFormatter

    figure = common.new_figure((13, 5.5))
    bars_axes, map_axes = figure.subplots(1, 2, width_ratios=(1, 1.15))
    means = [100 * results["arms"][arm]["accuracy"]["mean"] for arm in ARMS]
    stds = [100 * results["arms"][arm]["accuracy"]["std"] for arm in ARMS]
    positions = np.arange(len(ARMS))
    bars_axes.bar(positions, means, yerr=stds, capsize=5,
                  color=[_ARM_COLORS[arm] for arm in ARMS], width=0.65)
    for x, mean, std in zip(positions, means, stds):
        bars_axes.text(x, mean + std + 0.15, f"{mean:.2f} %", ha="center",
                       va="bottom", fontsize=9)
    bars_axes.set_xticks(positions, [LABELS[arm].replace(", ", ",\n") for arm in ARMS],
                         fontsize=9)
    low = min(m - s for m, s in zip(means, stds))
    high = max(m + s for m, s in zip(means, stds))
    span = max(high - low, 1.0)
    bars_axes.set_ylim(low - 0.6 * span, high + 0.35 * span)
    bars_axes.set_ylabel("Target test accuracy (%)")
    bars_axes.set_title(f"Target task: {results['target']}, "
                        f"width {results['sides']['target']['student_width']}")
    bars_axes.grid(True, axis="y", alpha=0.3)

    trials = [t for t in results["target_trials"]
              if t["status"] == "COMPLETED" and t["val_accuracy"] is not None]
    if trials:
        log_t = [math.log10(t["temperature"]) for t in trials]
        scatter = map_axes.scatter(
            log_t, [t["alpha"] for t in trials],
            c=[100 * t["val_accuracy"] for t in trials], cmap="viridis",
            s=70, edgecolors="black", linewidths=0.6, zorder=2,
        )
        figure.colorbar(scatter, ax=map_axes).set_label(
            "Target search: student val. accuracy (%)")
    for arm, marker in (("defaults", "X"), ("transferred", "^"), ("tuned", "*")):
        entry = results["arms"][arm]
        map_axes.scatter(math.log10(entry["temperature"]), entry["alpha"],
                         marker=marker, s=260, c=_ARM_COLORS[arm],
                         edgecolors="white", linewidths=1.0, zorder=3,
                         label=f"{LABELS[arm]} (T={entry['temperature']:.2f}, "
                               f"α={entry['alpha']:.2f})")
    map_axes.set_xlim(math.log10(0.9), math.log10(22))
    map_axes.set_ylim(-0.05, 1.05)
    map_axes.xaxis.set_major_locator(FixedLocator([math.log10(v) for v in (1, 2, 5, 10, 20)]))
    map_axes.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{10 ** v:.3g}"))
    map_axes.set_xlabel("Temperature T (log scale)")
    map_axes.set_ylabel("α (weight of the hard-label loss)")
    map_axes.set_title("Where the settings lie on the target's search")
    map_axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8,
                    ncol=1, frameon=False)
    map_axes.grid(True, alpha=0.25)
    figure.suptitle(
        f"Do T and α transfer? {results['source']} (width "
        f"{results['sides']['source']['student_width']}, "
        f"{results['sides']['source']['train_examples']} ex.) → "
        f"{results['target']} (width {results['sides']['target']['student_width']}, "
        f"{results['sides']['target']['train_examples']} ex.), preset {results['preset']}",
        fontsize=12,
    )
    return common.save_figure(figure, path)


def add_arguments(parser):
    """Adds the transfer experiment's options to an argparse parser."""
    common.add_common_arguments(
        parser, experiment="transfer", presets=PRESETS,
        preset_help="smoke: about a minute; quick: ~15 min on 2 CPU cores; "
                    "full: GPU",
        verbose_help="keras-tuner and teacher verbosity", dataset=False,
    )
    parser.add_argument("--source", default="fashion_mnist",
                        help="dataset tuned on first (default fashion_mnist; "
                             "e.g. mnist, with internet)")
    parser.add_argument("--target", default="fashion_mnist",
                        help="dataset the values are transferred to (default "
                             "fashion_mnist; e.g. cifar10, with internet)")
    return parser


def run_from_args(args):
    """Calls `run` with parsed command-line arguments."""
    return run(preset=args.preset, source=args.source, target=args.target,
               output=args.output, fresh=args.fresh, verbose=args.verbose)


main = common.make_main(
    "transfer",
    "Tune T and α on a source task, transfer them to a "
    "target task, and compare with defaults and target tuning.",
    add_arguments,
    run_from_args,
)


if __name__ == "__main__":
    sys.exit(main())
