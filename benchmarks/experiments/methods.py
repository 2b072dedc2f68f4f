"""Experiment `methods`: feature, attention, relation and decoupled KD.

Where distillation pays: the gain map (`benchmarks.experiments.gain`)
measured distilled students ahead of scratch when few of the images are
labelled, and level with it with every label. So, with the reference CNN
teacher and student (`benchmarks.models`), the teacher trained on every
training image, the students get a few of the labels (`labels`) and the
rest of the images unlabelled (`protocol.Setup.with_labels`; pool rows
carry the label -1, which the `Distiller` leaves out of the hard term).
It trains these student arms from one start, on the same batches,
interleaved (`benchmarks.protocol`):

- `scratch`: `student.fit` on the labels, as many steps as the others
  (cycling through the labelled images), with 1-pixel random shifts.
- one `tfkd.Distiller` arm per method of the registry
  (`tfkd.terms.methods.registered()`), T and α as in the preset: each term
  module registers its method(s) next to its classes, with the label and
  paper, whether it replaces the KL term (then CE + terms,
  `Distiller(alpha=1.0)`, as DKD and DIST are published) and how its
  terms are built on the reference CNNs' layers (`reference_layers`).
  `logit_kd` (Hinton et al., 2015) and `logit_std` (Sun et al., 2024) add
  no term. A method registered in a term module is an arm here, with no
  edit to this file; `--help` lists them.

Teacher ensembles (`Distiller(teacher=[...])`) need several trained
teachers and are not an arm of this one-teacher protocol.

How the arms get the teacher (`teacher`, a preset option and `--teacher`):
`"precomputed"` (every preset) runs the teacher once over the epoch's rows
before training, for the logits and every teacher layer an arm's terms
read (`tfkd.Distiller.precompute_targets`), as tfkd advises wherever the
teacher sees no random augmentation (the distilled arms see none here);
each such pass is timed and reported, once, apart from the epochs. So an
arm's epoch ratio is the price of its loss terms, not of a teacher
forward pass that every arm pays alike. `"online"` runs the teacher in
every step instead: then each distilled arm also pays for the teacher
(about 1.3 scratch epochs here, commit 0f902c7). The accuracies are the
same either way, up to float rounding: the teacher's outputs are.

The term weights are those of each registration (mostly the CRD
benchmark code, Tian et al., 2020, github.com/HobbitLong/RepDistiller),
not tuned here. It reports each arm's
test accuracy (and its paired difference with scratch), its median epoch
time (each seed's first, tracing epoch excluded) with min/max, and that
median divided by scratch's: the feature arms read intermediate layers
from one forward pass per model, so the ratio to `logit_kd` is the price
of the extra loss terms alone.

    python -m benchmarks methods --preset quick   # 37 min measured on 2 shared CPU cores
    python -m benchmarks methods --preset smoke   # seconds; what tests run

(The 37 minutes: 11 arms, before CRD scored its bank whole; CRD was 11.7x
scratch of it.)

Output: `benchmarks/runs/methods-<preset>/` with `results.json` and
`results.md`; a rerun resumes (`--fresh` starts over).
"""

import os
import sys

import keras

from benchmarks import arms as arms_lib
from benchmarks import cli
from benchmarks import presets as presets_lib
from benchmarks import protocol
from benchmarks import stats
# Importing a tfkd.terms module runs tfkd.terms' __init__ first, which
# imports every term module: every method is registered.
from tfkd.terms import methods as registry
from tfkd.utils import figures
from tfkd.utils import validation

PLOT_NAME = "methods.png"
SCRATCH_LABEL = "Student from scratch"

#: Options: `labels`, the students' labelled examples (class-balanced,
#: among `train_examples`; the rest is an unlabelled pool every distilled
#: arm reads, labelled -1). The quick preset is the gain map's reference
#: point (`benchmarks.experiments.gain`), where distillation measured +3.0
#: points [+1.5, +4.4] over scratch: 10 % of 4,000 labels, the width-16
#: teacher on all 4,000, width-8 students for 10 epochs, T = 2, α = 0,
#: cosine decay. One arm per method x 10 epochs x 3 seeds of 63 steps.
#: `teacher`: `"precomputed"` or `"online"` (see the module docstring).
PRESETS = {
    "smoke": presets_lib.Preset(
        name="smoke", train_examples=256, test_examples=256,
        batch_size=64, teacher_epochs=1, student_epochs=2, teacher_width=4,
        student_width=2, validation_fraction=0.01, seeds=(0, 1),
        temperature=2.0, alpha=0.0, options=dict(labels=64, teacher="precomputed")),
    "quick": presets_lib.Preset(
        name="quick", train_examples=4_000, test_examples=None, batch_size=64,
        teacher_width=16, teacher_dense_units=512, teacher_epochs=6,
        student_epochs=10, student_width=8, seeds=(0, 1, 2), temperature=2.0,
        alpha=0.0, learning_rate_schedule="cosine",
        options=dict(labels=400, teacher="precomputed")),
    "full": presets_lib.Preset(
        name="full", train_examples=None, test_examples=None, batch_size=128,
        teacher_width=32, teacher_epochs=20, student_epochs=20, seeds=(0, 1, 2),
        temperature=2.0, alpha=0.0, learning_rate_schedule="cosine",
        options=dict(labels=5_400, teacher="precomputed")),
}


def layer_names(model, layer_type):
    """Names of `model`'s top-level layers of `layer_type`, in order."""
    return [layer.name for layer in model.layers if isinstance(layer, layer_type)]


def reference_layers(teacher, student, num_data=None):
    """The `tfkd.terms.methods.ReferenceLayers` of the reference CNNs.

    Teacher convs: 28x28 (w), 28x28 (2w), 14x14 (4w); student convs:
    28x28 (v), 14x14 (2v); each has a penultimate dense layer. `num_data`:
    the rows of the epoch (`crd`'s memory bank).
    """
    return registry.ReferenceLayers(
        teacher_convs=layer_names(teacher, keras.layers.Conv2D),
        student_convs=layer_names(student, keras.layers.Conv2D),
        teacher_embedding=layer_names(teacher, keras.layers.Dense)[-2],
        student_embedding=layer_names(student, keras.layers.Dense)[-2],
        num_data=num_data)


def arm_ids():
    """`scratch`, then every registered method's id (`registry.registered`)."""
    return ("scratch",) + tuple(method.id for method in registry.registered())


def label(arm_id):
    """The human name of `arm_id`, with its paper."""
    return SCRATCH_LABEL if arm_id == "scratch" else registry.get(arm_id).label


def extra_losses(arm_id, teacher, student, num_data=None):
    """The `extra_losses` of a method's arm, built on the reference CNNs."""
    return registry.get(arm_id).terms(reference_layers(teacher, student, num_data))


#: The ways an arm can get the teacher's outputs (option `teacher`).
TEACHER_MODES = ("precomputed", "online")


def make_arm(arm_id, teacher="precomputed"):
    """The `protocol.Arm` of `arm_id`; `teacher`: one of `TEACHER_MODES`."""
    if arm_id == "scratch":
        # As the gain map's scratch: every step on the labels, 1-pixel shifts.
        return arms_lib.scratch(label=SCRATCH_LABEL, augmentation=arms_lib.small_shift)
    method = registry.get(arm_id)
    return arms_lib.distilled(
        arm_id, method.label,
        # A method that replaces the KL term trains on CE + its terms.
        alpha=1.0 if method.replaces_kl else None,
        extra_losses=(None if method.build is None else lambda setup, student: method.terms(
            reference_layers(setup.teacher, student, num_data=setup.epoch_size()))),
        soft_targets="precomputed" if teacher == "precomputed" else None,
        with_index=method.needs_example_indices and teacher == "online",
        distiller_options=dict(method.distiller_options) or None)


def check_arms(arms):
    """`scratch` first (the ratios are relative to it), then `arms`."""
    known = arm_ids()
    arms = ("scratch",) + tuple(a for a in (arms or known) if a != "scratch")
    unknown = [a for a in arms if a not in known]
    if unknown:
        raise ValueError(f"Invalid value for argument `arms`. Expected ids from "
                         f"{known}. Received: {unknown[0]!r}")
    return arms


def arm_result(records, scratch_records, scratch_median):
    """One arm's entry of the results from its per-seed records."""
    summary = protocol.summarize(records, scratch_records)
    median = summary["epoch_seconds"]["median"]
    return {
        "accuracy": summary["accuracy"],
        "vs_scratch": summary["vs_baseline"],
        "epoch_time": summary["epoch_seconds"],
        "epoch_time_vs_scratch": (None if median is None or not scratch_median
                                  else median / scratch_median),
        "train_seconds": summary["train_seconds"],
        "history": records[0]["history"],
    }


def run(preset="quick", dataset=None, arms=None, output=None, fresh=False,
        seeds=None, verbose=0, log=print, teacher=None):
    """Trains the teacher and the student arms; writes and returns results.

    Args:
        preset: A name of `PRESETS` or a `Preset`. Defaults to `"quick"`.
        dataset: Dataset name. Defaults to `None` (the preset's).
        arms: Arm ids to train; `scratch` is always added. Defaults to all.
        output: Output directory. Defaults to
            `benchmarks/runs/methods-<preset>`.
        fresh: Start over instead of resuming. Defaults to `False`.
        seeds: Seeds instead of the preset's. Defaults to `None`.
        verbose: Keras verbosity of the teacher. Defaults to `0`.
        log: Where progress lines go. Defaults to `print`.
        teacher: `"precomputed"` or `"online"` instead of the preset's
            option (see the module docstring). Defaults to `None`.

    Returns:
        The results dict: per arm `label`, `accuracy` (mean, sample std,
        per seed), `vs_scratch` (paired difference, 95 % CI),
        `epoch_time` (median, min, max), `epoch_time_vs_scratch`,
        `history`; the teacher's `pass_seconds` with precomputed outputs.
    """
    from benchmarks import results as results_lib

    arm_ids = check_arms(arms)
    if teacher is not None:
        validation.check_choice("teacher", teacher, TEACHER_MODES)
        preset = presets_lib.get_preset(PRESETS, preset).replace(teacher=teacher)
    setup = protocol.start("methods", PRESETS, preset, seeds=seeds, dataset=dataset,
                           output=output, fresh=fresh, log=log, verbose=verbose)
    preset, output = setup.preset, setup.store.directory
    mode = preset.option("teacher")
    validation.check_choice("teacher", mode, TEACHER_MODES)
    _, teacher = protocol.train_teacher(setup)
    setup = setup.with_labels(preset.option("labels"))
    # Stored apart per mode: a rerun with the other `--teacher` never
    # resumes records of this one.
    records = protocol.run_seeds(setup, [make_arm(a, mode) for a in arm_ids],
                                 prefix=f"teacher-{mode}__")
    scratch = protocol.summarize(records["scratch"])["epoch_seconds"]["median"]
    results = results_lib.skeleton("methods", preset)
    results.update(
        dataset=setup.data.name, data=setup.data.num_examples,
        teacher={**{k: teacher[k] for k in ("accuracy", "parameters", "fingerprint")},
                 "outputs": mode, "pass_seconds": dict(setup.teacher_pass_seconds)},
        arms={a: {"label": label(a), "parameters": int(setup.build_student().count_params()),
                  **arm_result(records[a], records["scratch"], scratch)}
              for a in arm_ids})
    write_report(results, output)
    log(f"methods: wrote {output}/results.md")
    return results


def write_report(results, output):
    """Writes `results.json`, `results.md` and the plot into `output`.

    A pure function of `results`: the report of a finished run can be
    drawn again from its `results.json`.
    """
    from benchmarks import results as results_lib

    plot_path = plot_methods(results, os.path.join(str(output), PLOT_NAME))
    results_lib.write(results, markdown(results, [plot_path]), output)


def plot_methods(results, path):
    """Paired gain over scratch (95 % interval) and epoch time ÷ scratch.

    Two panels, one row per distilled arm, ordered by gain: the mean of
    the per-seed differences with scratch and its t-interval, and the
    median epoch time relative to scratch's.

    Args:
        results: A methods results dict.
        path: Where to write the PNG.

    Returns:
        `path`, as a string.
    """
    arms = sorted((a for a in results["arms"].items()
                   if a[0] != "scratch" and a[1].get("vs_scratch")),
                  key=lambda item: item[1]["vs_scratch"]["mean"])
    figure = figures.new_figure((11, 0.45 * len(arms) + 2.2))
    gain_axes, time_axes = figure.subplots(1, 2, sharey=True,
                                           gridspec_kw={"width_ratios": [3, 2]})
    rows = range(len(arms))
    for row, (_, values) in zip(rows, arms):
        gain = values["vs_scratch"]
        mean = 100 * gain["mean"]
        if gain.get("low") is not None:
            gain_axes.errorbar(mean, row, xerr=[[mean - 100 * gain["low"]],
                                                [100 * gain["high"] - mean]],
                               fmt="o", color="#2ca02c" if gain["low"] > 0 else "#7f7f7f",
                               capsize=4)
        else:
            gain_axes.plot(mean, row, "o", color="#7f7f7f")
        ratio = values.get("epoch_time_vs_scratch")
        if ratio is not None:
            time_axes.barh(row, ratio, color="#1f77b4", alpha=0.7)
            time_axes.annotate(f"{ratio:.2f}×", xy=(ratio, row), xytext=(3, 0),
                               textcoords="offset points", va="center", fontsize=8)
    gain_axes.axvline(0.0, color="black", linewidth=1.0)
    gain_axes.set_yticks(list(rows), [values["label"] for _, values in arms], fontsize=8)
    gain_axes.set_xlabel("Test accuracy gain over scratch (points, 95 % interval)")
    time_axes.axvline(1.0, color="black", linewidth=1.0)
    time_axes.set_xlabel("Median epoch time ÷ scratch")
    gain_axes.grid(True, axis="x", alpha=0.3)
    time_axes.grid(True, axis="x", alpha=0.3)
    figure.suptitle(f"Distillation methods, {results['dataset']}, preset "
                    f"{results['preset']}, seeds {results['config']['seeds']}")
    return figures.save_figure(figure, path)


def markdown(results, plot_files=(PLOT_NAME,)):
    """The methods report as Markdown, one row per arm, then the plot."""
    from benchmarks import results as results_lib

    config, data = results["config"], results["data"]
    lines = results_lib.header("distillation methods", results) + [
        f"{results['dataset']}: the students get {data['train']} labelled "
        f"training images and {data['pool']} unlabelled ones, which only the "
        f"distilled arms read (label -1); the teacher was trained on "
        f"{data['teacher']} labelled images; {data['test']} test images; "
        f"{config['student_epochs']} epochs, seeds {config['seeds']}; teacher "
        f"accuracy {results['teacher']['accuracy']:.4f} "
        f"({results['teacher']['parameters']:,} parameters).", "",
        teacher_sentence(results), "",
        "| Arm | Accuracy | vs scratch, paired, 95 % CI | Epoch s (median) "
        "| min-max | ÷ scratch |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for values in results["arms"].values():
        time_, ratio = values["epoch_time"], values["epoch_time_vs_scratch"]
        lines.append(
            f"| {values['label']} | {stats.format_accuracy(values['accuracy'])} "
            f"| {stats.format_interval(values['vs_scratch'])} "
            f"| {time_['median']:.2f} | {time_['min']:.2f}-{time_['max']:.2f} "
            f"| {'n/a' if ratio is None else f'{ratio:.2f}'} |")
    lines += ["", "Accuracy: mean ± sample std over the seeds. vs scratch: mean of the "
              "per-seed differences (same initial weights, same batches) with its "
              "95 % t-interval. Epoch s: median over seeds and epochs, each seed's "
              "first (tracing) epoch excluded; ÷ scratch: that median over "
              "scratch's, the arms trained interleaved.", "", "## Plot", ""]
    lines += results_lib.image_links(plot_files, {PLOT_NAME: "Gain and epoch time per method"})
    return "\n".join(lines) + "\n"


def teacher_sentence(results):
    """How the distilled arms got the teacher's outputs, and what it cost."""
    teacher = results["teacher"]
    if teacher.get("outputs", "online") == "online":
        return ("Teacher online: every distilled step runs the teacher, so "
                "each distilled arm's epoch time includes a teacher pass.")
    passes = teacher.get("pass_seconds", {})
    parts = ", ".join(f"{name.replace(',', ' + ')} {seconds:.1f} s"
                      for name, seconds in passes.items())
    return ("Teacher precomputed (`Distiller.precompute_targets`): before "
            "training, the teacher ran once over the epoch's rows for the "
            "logits and the layers each arm's terms read, and no distilled "
            f"step runs it; those passes took {parts or 'nothing'}, once for "
            "every arm and seed that reads them, and are not in the epoch "
            "times. The accuracies are those of an online teacher: without "
            "augmentation its outputs are the same every epoch.")


def main(argv=None, prog=None):
    """Parses the command line, runs the experiment; returns 0."""
    parser = cli.parser(sys.modules[__name__], "methods", prog)
    parser.add_argument("--arms", default=None, type=cli.name_list,
                        help=f"comma-separated subset of {','.join(arm_ids())}")
    parser.add_argument("--teacher", default=None, choices=TEACHER_MODES,
                        help="teacher outputs computed once before training "
                             "(precomputed) or in every step (online); "
                             "defaults to the preset's")
    run(**vars(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
