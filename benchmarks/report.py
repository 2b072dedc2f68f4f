"""Turns a benchmark's results dict into derived numbers, JSON and Markdown.

Pure functions over plain Python/NumPy data: nothing here trains or needs
TensorFlow, so a report can be rebuilt from an old `results.json`. The
layout of the results dict is documented in `benchmarks.schema`.
"""

import datetime
import json
import math
import os

import numpy as np

from benchmarks import schema
from benchmarks import stats

TEACHER = "teacher"
SCRATCH = "scratch"
TFKD = "tfkd"
TFKD_CACHED = "tfkd_cached"
KERAS_DISTILLATION = "keras_distillation_kl"

# The plots `benchmarks.plots.write_all_plots` always writes, then the one it
# writes when given test images; the report links all of them by default
# because the runner writes the report before the plots.
STANDARD_PLOTS = (
    "pareto_parameters.png",
    "pareto_latency.png",
    "training_curves.png",
    "confusion_matrices.png",
)
PREDICTION_GRID = "prediction_grid.png"
DEFAULT_PLOT_LINKS = STANDARD_PLOTS + (PREDICTION_GRID,)
PLOT_CAPTIONS = {
    "pareto_parameters.png": "Accuracy vs parameters",
    "pareto_latency.png": "Accuracy vs batch-1 latency",
    "training_curves.png": "Training curves",
    "confusion_matrices.png": "Confusion matrices",
    "prediction_grid.png": "Teacher and student predictions on test images",
}

_DASH = "—"


def derive(results):
    """Computes the `derived` block of a results dict from its `arms`.

    For every arm: accuracy kept vs the teacher (arm mean accuracy / teacher
    mean accuracy), compression ratio (teacher parameters / arm parameters),
    speed-up (teacher p50 latency / arm p50 latency) and, for distilled
    students (role `"student"`, id not `"scratch"`), the KD gain over the
    student trained from scratch (difference of mean accuracies). Plus the
    ratios of median epoch times tfkd / scratch, tfkd / keras.distillation
    (the `keras_distillation_kl` arm) and cached tfkd / scratch.

    A number is `None` whenever an input is missing: an arm absent, not
    `"done"`, without the metric, or a zero denominator. It never raises for
    missing data.

    Args:
        results: A results dict; only `results["arms"]` is read.

    Returns:
        A dict `{arm_id: {...}, "epoch_time_ratios": {...}}` as described in
        `benchmarks.schema`.

    Example:

    >>> from benchmarks import report, sample_results, schema
    >>> derived = report.derive(sample_results.example_results())
    >>> derived["teacher"]["compression_ratio"]
    1.0
    >>> round(derived["tfkd"]["kd_gain_over_scratch"], 4)
    0.0214
    """
    arms = results.get("arms") or {}
    teacher_accuracy = _accuracy(arms.get(TEACHER))
    scratch_accuracy = _accuracy(arms.get(SCRATCH))
    teacher_parameters = _metric(arms.get(TEACHER), "parameters")
    teacher_latency = _metric(arms.get(TEACHER), "latency_ms", "p50")
    derived = {}
    for arm_id, arm in arms.items():
        accuracy = _accuracy(arm)
        # A student is compared with its own scratch baseline: `baseline`
        # names it (a few-labels arm with the scratch student of the same
        # few labels), `None` for a baseline itself; default `scratch`.
        baseline = (arm or {}).get("baseline", SCRATCH)
        is_distilled = ((arm or {}).get("role") == "student" and arm_id != SCRATCH
                        and baseline is not None)
        baseline_accuracy = (scratch_accuracy if baseline == SCRATCH
                             else _accuracy(arms.get(baseline)))
        kd_gain = paired = None
        if is_distilled and accuracy is not None and baseline_accuracy is not None:
            kd_gain = float(accuracy - baseline_accuracy)
            paired = stats.paired_difference(
                arm["accuracy"].get("per_seed") or [],
                arms[baseline]["accuracy"].get("per_seed") or [],
            )
        derived[arm_id] = {
            "accuracy_kept_vs_teacher": _ratio(accuracy, teacher_accuracy),
            "compression_ratio": _ratio(
                teacher_parameters, _metric(arm, "parameters")
            ),
            "speedup_vs_teacher": _ratio(
                teacher_latency, _metric(arm, "latency_ms", "p50")
            ),
            "kd_gain_over_scratch": kd_gain,
            # Same seeds, same initial weights, same batches: paired.
            "paired_difference_vs_scratch": paired,
        }
        if is_distilled and baseline != SCRATCH:
            derived[arm_id]["baseline"] = baseline

    def epoch_ratio(numerator, denominator):
        return _ratio(
            _metric(arms.get(numerator), "epoch_seconds", "median"),
            _metric(arms.get(denominator), "epoch_seconds", "median"),
        )

    derived["epoch_time_ratios"] = {
        "tfkd_over_scratch": epoch_ratio(TFKD, SCRATCH),
        "tfkd_over_keras_distillation": epoch_ratio(TFKD, KERAS_DISTILLATION),
        "cached_over_scratch": epoch_ratio(TFKD_CACHED, SCRATCH),
    }
    return derived


def markdown(results, plot_files=None):
    """Renders a results dict as a human-readable Markdown report.

    The report has a title (dataset, preset, date), the environment, one
    table of every finished arm (accuracy, share kept vs the teacher,
    parameters, size, latency, throughput, train and epoch time), a
    "Derived" section (KD gain over scratch, compression, speed-up, epoch
    time ratios), the arms that failed or were skipped with their error,
    and links to the plots.

    Args:
        results: A results dict (see `benchmarks.schema`). Its `derived`
            block is used when present, else computed with `derive`.
        plot_files: Plot file names or paths to link; each is linked by its
            base name, relative to the report. Defaults to `None`, which
            links `DEFAULT_PLOT_LINKS` (every file `write_all_plots` writes
            when given a prediction grid).

    Returns:
        The report as a string ending with a newline.

    Example:

    >>> from benchmarks import report, sample_results, schema
    >>> text = report.markdown(sample_results.example_results())
    >>> text.splitlines()[0]
    '# tfkd benchmark: fashion_mnist, preset `quick`'
    >>> "| Teacher (CNN) | 91.23 % |" in text
    True
    """
    derived = results.get("derived") or derive(results)
    arms = ordered_arms(results.get("arms") or {})
    done = [(arm_id, arm) for arm_id, arm in arms if arm.get("status") == "done"]
    not_done = [(arm_id, arm) for arm_id, arm in arms if arm.get("status") != "done"]
    lines = [
        f"# tfkd benchmark: {results.get('dataset', '?')}, "
        f"preset `{results.get('preset', '?')}`",
        "",
        f"Run {_format_created(results.get('created'))}"
        f"{_format_git(results.get('git'))}. "
        + _environment_line(results.get("environment") or {}),
        "",
    ]
    config = results.get("config") or {}
    if config:
        settings = ", ".join(f"{key}={_format_setting(v)}" for key, v in config.items())
        lines += [f"Settings: {settings}.", ""]

    lines += ["## Results", ""]
    if done:
        lines += _results_table(done, derived)
        lines += [
            "",
            "Accuracy: test set, mean ± sample std over seeds. Latency: one "
            "example per call; latency and throughput measured after "
            "training, all models in turn, repeated. Throughput: batches of "
            "256. Epoch time: median training time of one epoch.",
        ]
    else:
        lines.append("No arm finished.")
    lines.append("")

    lines += _derived_section(done, derived)
    lines += few_labels_section(results)

    if not_done:
        lines += ["## Failed or skipped", ""]
        for arm_id, arm in not_done:
            error = _first_line(arm.get("error")) or "no reason recorded"
            lines.append(
                f"- {_cell(arm.get('label', arm_id))} (`{arm_id}`): "
                f"{arm.get('status', '?')}, {error}"
            )
        lines.append("")

    if plot_files is None:
        plot_files = DEFAULT_PLOT_LINKS
    names = [os.path.basename(os.fspath(p)) for p in plot_files]
    if names:
        lines += ["## Plots", ""]
        for name in names:
            caption = PLOT_CAPTIONS.get(name, os.path.splitext(name)[0])
            lines += [f"![{caption}]({name})", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def write_report(results, directory, plot_files=None):
    """Validates `results` and writes `results.json` and `results.md`.

    The `derived` block is recomputed with `derive`, so it always agrees
    with `arms`. NumPy scalars and arrays are converted to plain JSON
    values. Each file is written to a temporary file and moved into place
    with `os.replace`, so a crash never leaves a half-written file. If the
    results do not validate, they are still saved as
    `results.invalid.json`, so a long run's numbers are never lost, and the
    `ValueError` is raised.

    Args:
        results: A results dict (see `benchmarks.schema`); not modified.
        directory: Output directory, created if needed.
        plot_files: Plots to link from the Markdown, as for `markdown`.
            Defaults to `None` (the `DEFAULT_PLOT_LINKS`).

    Returns:
        A tuple `(json_path, markdown_path)`.

    Raises:
        ValueError: if `results` does not follow the schema.

    Example:

    >>> import tempfile
    >>> from benchmarks import report, sample_results, schema
    >>> directory = tempfile.mkdtemp()
    >>> json_path, md_path = report.write_report(sample_results.example_results(), directory)
    >>> report.load_results(json_path)["dataset"]
    'fashion_mnist'
    """
    # Here, not at the top: reading and rendering results needs no tfkd
    # (nor TensorFlow, which `import tfkd` loads).
    from tfkd.utils.files import write_text_atomically as write

    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    plain = _to_plain(results)
    plain["derived"] = derive(plain)
    try:
        schema.validate(plain)
    except ValueError as error:
        invalid_path = os.path.join(directory, "results.invalid.json")
        write(invalid_path, json.dumps(plain, indent=2, default=repr))
        raise ValueError(
            f"Invalid results, saved unvalidated to {invalid_path}: {error}"
        ) from error
    json_path = os.path.join(directory, "results.json")
    markdown_path = os.path.join(directory, "results.md")
    write(json_path, json.dumps(plain, indent=2, allow_nan=False) + "\n")
    write(markdown_path, markdown(plain, plot_files=plot_files))
    return json_path, markdown_path


def load_results(path):
    """Reads a `results.json` and checks it against the schema.

    Args:
        path: Path of the JSON file.

    Returns:
        The results dict.

    Raises:
        ValueError: if the file is not JSON, was written by another schema
            version, or does not follow the schema; the message names the
            file and the offending key path.

    Example:

    >>> import tempfile
    >>> from benchmarks import report, sample_results, schema
    >>> json_path, _ = report.write_report(sample_results.example_results(), tempfile.mkdtemp())
    >>> report.load_results(json_path)["schema_version"]
    1
    """
    # Imported here: importing tfkd imports TensorFlow, which reading
    # results does not need otherwise.
    from tfkd.utils import files

    path = os.fspath(path)
    results = files.read_versioned_json(
        path, schema.SCHEMA_VERSION, "benchmark results",
        hint="Re-run the benchmark, or read the file with the tfkd version "
        "that wrote it.",
    )
    try:
        return schema.validate(results)
    except ValueError as error:
        raise ValueError(
            f"{path} does not follow the results schema: {error}"
        ) from error


# Human-readable number formats, shared with `benchmarks.plots`.


def format_percent(fraction, digits=2):
    """Formats a fraction as a percentage: `0.91234` -> `"91.23 %"`.

    Args:
        fraction: A number in [0, 1], or `None`.
        digits: Decimals shown. Defaults to `2`.

    Returns:
        The formatted string, or `"—"` for `None`.

    Example:

    >>> format_percent(0.91234)
    '91.23 %'
    """
    if fraction is None:
        return _DASH
    return f"{100 * fraction:.{digits}f} %"


def format_count(value):
    """Formats a count with a k/M/G suffix and three significant digits.

    Args:
        value: A number, or `None`.

    Returns:
        The formatted string, e.g. `"1.23 M"`, `"52.3 k"`, `"999"`, or
        `"—"` for `None`.

    Example:

    >>> format_count(1_234_890), format_count(52_314), format_count(640)
    ('1.23 M', '52.3 k', '640')
    """
    if value is None:
        return _DASH
    for threshold, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            return f"{_three_digits(value / threshold)} {suffix}"
    return _three_digits(value)


def format_bytes(size):
    """Formats a size in bytes with binary units, as `model.summary` does.

    Args:
        size: Bytes, or `None`.

    Returns:
        The formatted string, e.g. `"4.73 MB"`, `"228 KB"`, or `"—"`.

    Example:

    >>> format_bytes(4_963_000), format_bytes(233_832), format_bytes(512)
    ('4.73 MB', '228 KB', '512 B')
    """
    if size is None:
        return _DASH
    for threshold, suffix in ((1024**3, "GB"), (1024**2, "MB"), (1024, "KB")):
        if size >= threshold:
            return f"{_three_digits(size / threshold)} {suffix}"
    return f"{int(size)} B"


def format_milliseconds(value):
    """Formats milliseconds with three significant digits: `"3.42 ms"`.

    Args:
        value: Milliseconds, or `None`.

    Returns:
        The formatted string, or `"—"` for `None`.

    Example:

    >>> format_milliseconds(3.4211), format_milliseconds(0.6)
    ('3.42 ms', '0.60 ms')
    """
    if value is None:
        return _DASH
    return f"{_three_digits(value)} ms"


def format_duration(seconds):
    """Formats a duration: `"8.1 s"`, `"4 min 12 s"`, `"1 h 03 min"`.

    Args:
        seconds: Seconds, or `None`.

    Returns:
        The formatted string, or `"—"` for `None`.

    Example:

    >>> format_duration(8.14), format_duration(252), format_duration(3790)
    ('8.1 s', '4 min 12 s', '1 h 03 min')
    """
    if seconds is None:
        return _DASH
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds >= 1 else f"{seconds:.2f} s"
    total = int(round(seconds))
    if total < 3600:
        return f"{total // 60} min {total % 60:02d} s"
    return f"{total // 3600} h {total % 3600 // 60:02d} min"


def format_ratio(value):
    """Formats a ratio as a multiplier: `1.354` -> `"1.35×"`.

    Args:
        value: The ratio, or `None`.

    Returns:
        The formatted string, or `"—"` for `None`.

    Example:

    >>> format_ratio(23.6), format_ratio(1.354)
    ('23.6×', '1.35×')
    """
    if value is None:
        return _DASH
    return f"{_three_digits(value)}×"


def format_points(difference):
    """Formats an accuracy difference in percentage points: `"+2.14 pp"`.

    Args:
        difference: Difference of two accuracies as fractions, or `None`.

    Returns:
        The signed string (a true minus sign for losses), or `"—"`.

    Example:

    >>> format_points(0.02143), format_points(-0.0105)
    ('+2.14 pp', '−1.05 pp')
    """
    if difference is None:
        return _DASH
    text = f"{100 * abs(difference):.2f} pp"
    return ("−" if difference < 0 else "+") + text


def _three_digits(value):
    """About three significant digits, without scientific notation."""
    magnitude = abs(value)
    if magnitude >= 100 or magnitude == 0:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.01:
        # Two decimals below 10 keep a column aligned: "0.60", "3.42".
        return f"{value:.2f}"
    return f"{value:.2g}"


def _results_table(done, derived):
    # The data column appears when the runner says what each arm saw.
    data_column = any(arm.get("trained_on") for _, arm in done)
    rows = [
        "| Arm | Accuracy | Kept vs teacher | Params | Size "
        "| Latency p50 / p95 | Throughput | Train time | Epoch time |"
        + (" Trained on |" if data_column else ""),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---|" if data_column else ""),
    ]
    for arm_id, arm in done:
        kept = (derived.get(arm_id) or {}).get("accuracy_kept_vs_teacher")
        latency = arm.get("latency_ms") or {}
        throughput = arm.get("throughput_per_s")
        cells = [
            _cell(arm.get("label", arm_id)),
            _format_accuracy(arm.get("accuracy")),
            format_percent(kept, 1),
            format_count(arm.get("parameters")),
            format_bytes(arm.get("size_bytes")),
            _format_latency(latency.get("p50"), latency.get("p95")),
            _DASH if throughput is None else f"{format_count(throughput)}/s",
            format_duration(arm.get("train_seconds")),
            format_duration((arm.get("epoch_seconds") or {}).get("median")),
        ]
        if data_column:
            cells.append(_cell(arm.get("trained_on") or _DASH))
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _derived_section(done, derived):
    lines = ["## Derived", ""]
    students = [
        (arm_id, arm) for arm_id, arm in done if arm_id != TEACHER
    ]
    if students:
        lines += [
            "| Arm | KD gain over scratch | Paired difference, 95 % CI "
            "| Compression vs teacher | Speed-up vs teacher |",
            "|---|---:|---:|---:|---:|",
        ]
        labels = dict(done)
        for arm_id, arm in students:
            entry = derived.get(arm_id) or {}
            gain = format_points(entry.get("kd_gain_over_scratch"))
            if entry.get("baseline") not in (None, SCRATCH):
                other = labels.get(entry["baseline"], {}).get("label", entry["baseline"])
                gain += f" (vs {_cell(other)})"
            lines.append(
                f"| {_cell(arm.get('label', arm_id))} "
                f"| {gain} "
                f"| {stats.format_interval(entry.get('paired_difference_vs_scratch'))} "
                f"| {format_ratio(entry.get('compression_ratio'))} "
                f"| {format_ratio(entry.get('speedup_vs_teacher'))} |"
            )
        lines += [
            "",
            "KD gain: accuracy difference with the student trained from "
            "scratch (on the same data, unless another baseline is named), "
            "in percentage points. Paired difference: mean over "
            "seeds of (arm - scratch) on the same seed, with its 95 % "
            "Student-t interval. Speed-up: ratio of batch-1 p50 latencies.",
            "",
        ]
    ratios = derived.get("epoch_time_ratios") or {}
    lines += [
        "Epoch time ratios (median epoch times; below 1× is faster):",
        "",
        f"- tfkd (online teacher) / student from scratch: "
        f"{format_ratio(ratios.get('tfkd_over_scratch'))}",
        f"- tfkd (online teacher) / keras.distillation (KLDivergence): "
        f"{format_ratio(ratios.get('tfkd_over_keras_distillation'))}",
        f"- tfkd (cached teacher) / student from scratch: "
        f"{format_ratio(ratios.get('cached_over_scratch'))}",
        "",
    ]
    return lines


def few_labels_section(results):
    """The Markdown lines of a run's few-labels block (none without one).

    Says what data the teacher and each few-labels student saw, how they
    were trained, and the recipe's paired gain over its scratch baseline.
    """
    few = results.get("few_labels")
    if not few:
        return []
    arms = results.get("arms") or {}
    recipe = (arms.get(few["recipe"]) or {}).get("label", few["recipe"])
    baseline = (arms.get(few["baseline"]) or {}).get("label", few["baseline"])
    augmentation = ("with random 1-pixel shifts" if few.get("scratch_augmentation")
                    else "without augmentation")
    return [
        "## Few labels: a transfer set", "",
        f"Teacher: {few['teacher_examples']:,} labelled images. "
        f"{_cell(baseline)}: {few['labelled']:,} labelled images only "
        f"({augmentation}, as measured better for it). "
        f"{_cell(recipe)}: the same {few['labelled']:,} labelled images plus "
        f"the other {few['unlabelled']:,} without labels, learning from the "
        f"teacher's soft targets (T={few['temperature']:g}, α={few['alpha']:g}). "
        f"Both: {few['epochs']} epochs over the {few['labelled'] + few['unlabelled']:,}"
        f" images ({few['steps']:,} steps of batch {few['batch_size']}; scratch "
        "cycles through its labelled images), "
        f"{few['learning_rate_schedule']} learning-rate decay, the same initial "
        "weights and batch order per seed.", "",
        f"Recipe vs scratch on the same labels, paired over seeds: "
        f"{stats.format_interval(few.get('gain'))}.", "",
    ]


def _format_accuracy(accuracy):
    if not accuracy or accuracy.get("mean") is None:
        return _DASH
    per_seed = accuracy.get("per_seed")
    if per_seed is None or len(per_seed) < 2:
        # One seed has no spread to report.
        return format_percent(accuracy["mean"])
    return f"{100 * accuracy['mean']:.2f} ± {100 * accuracy.get('std', 0.0):.2f} %"


def _format_git(git):
    if not git or not git.get("commit"):
        return ""
    dirty = "" if git.get("clean") else " with uncommitted changes"
    return f" from commit {git['commit'][:10]}{dirty}"


def _format_latency(p50, p95):
    if p50 is None:
        return _DASH
    if p95 is None:
        return format_milliseconds(p50)
    return f"{_three_digits(p50)} / {format_milliseconds(p95)}"


def _format_created(created):
    if not created:
        return "at an unknown date"
    try:
        moment = datetime.datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return created
    if moment.utcoffset() == datetime.timedelta(0):
        return moment.strftime("%Y-%m-%d %H:%M UTC")
    return moment.isoformat(timespec="minutes")


def _environment_line(environment):
    parts = []
    for key, name in (
        ("tensorflow", "TensorFlow"),
        ("keras", "Keras"),
        ("autokeras", "AutoKeras"),
        ("python", "Python"),
    ):
        if environment.get(key):
            parts.append(f"{name} {environment[key]}")
    device = environment.get("device")
    cpu = environment.get("cpu")
    count = environment.get("cpu_count")
    if device or cpu:
        details = (cpu or "") + (f", {count} cores" if count else "")
        parts.append(f"{device or 'device unknown'}" + (f" ({details})" if cpu else ""))
    if environment.get("platform"):
        parts.append(environment["platform"])
    return " · ".join(parts) + ("." if parts else "")


def _format_setting(value):
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def _first_line(text, limit=300):
    """The first line of an error, shortened: tracebacks stay in the JSON."""
    if not text:
        return ""
    line = str(text).strip().splitlines()[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _cell(text):
    # A "|" inside a label would split the table cell.
    return str(text).replace("|", "\\|")


def ordered_arms(arms):
    """The arms in report order: teacher, students, AutoML.

    The order within a role is kept, so the runner decides it.

    Args:
        arms: The `arms` dict of a results dict.

    Returns:
        A list of `(arm_id, arm)` pairs.

    Example:

    >>> ordered_arms({"a": {"role": "automl"}, "t": {"role": "teacher"}})
    [('t', {'role': 'teacher'}), ('a', {'role': 'automl'})]
    """

    def rank(item):
        role = item[1].get("role")
        return schema.ROLES.index(role) if role in schema.ROLES else len(schema.ROLES)

    return sorted(arms.items(), key=rank)


def _accuracy(arm):
    return _metric(arm, "accuracy", "mean")


def _metric(arm, key, sub_key=None):
    """A metric of a finished arm, or `None` when it is not available."""
    if not arm or arm.get("status") != "done":
        return None
    value = arm.get(key)
    if sub_key is not None:
        value = value.get(sub_key) if isinstance(value, dict) else None
    return None if value is None else float(value)


def _ratio(numerator, denominator):
    if numerator is None or denominator is None or denominator == 0:
        return None
    value = numerator / denominator
    return float(value) if math.isfinite(value) else None


def _to_plain(value):
    """A deep copy of `value` with NumPy scalars/arrays as JSON values."""
    if isinstance(value, dict):
        return {key: _to_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return _to_plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value
