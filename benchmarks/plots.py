"""Plots of a benchmark's results: each function writes one PNG.

Pure functions over a results dict (see `benchmarks.schema`) and NumPy
arrays; nothing here needs TensorFlow. Figures are built as
`matplotlib.figure.Figure` objects and rendered by the Agg canvas, never
through `pyplot`: there is no global figure list to leak into, and
importing this module does not change the backend of a notebook.
"""

import collections
import math
import os

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

from benchmarks import report

DPI = 120
PREDICTION_GRID = report.PREDICTION_GRID

# One color per arm, the same in every plot; unknown arm ids take the
# leftover colors in order.
_ARM_COLORS = {
    "teacher": "#222222",
    "scratch": "#8c8c8c",
    "tfkd": "#1f77b4",
    "tfkd_cached": "#17becf",
    "keras_distillation": "#ff7f0e",
    "keras_distillation_kl": "#9467bd",
    "autokeras": "#2ca02c",
}
_SPARE_COLORS = ("#8c564b", "#e377c2", "#bcbd22", "#d62728", "#7f7f7f")
_ROLE_MARKERS = {"teacher": "s", "student": "o", "automl": "D"}
_DISAGREE = "#d62728"
_HISTORY_KEYS = ("accuracy", "val_accuracy", "loss", "val_loss")

PredictionGrid = collections.namedtuple(
    "PredictionGrid", ["path", "disagreements", "student_errors", "teacher_errors"]
)
PredictionGrid.__doc__ = """What `plot_prediction_grid` drew.

Attributes:
    path: Path of the PNG.
    disagreements: Indices (into the images) where student and teacher
        predict different classes; these cells are framed in red.
    student_errors: Indices where the student is wrong (marked ✗).
    teacher_errors: Indices where the teacher is wrong (marked ✗).
"""


def pareto_front(xs, ys):
    """Indices of the points no other point beats on both cost and accuracy.

    A point is on the front when every point with a lower or equal cost `x`
    has a strictly lower accuracy `y`.

    Args:
        xs: Costs (lower is better), e.g. parameters or latency.
        ys: Accuracies (higher is better), same length.

    Returns:
        A list of indices, in order of increasing cost.

    Example:

    >>> pareto_front([1.0, 2.0, 3.0, 2.0], [0.80, 0.90, 0.85, 0.70])
    [0, 1]
    """
    order = sorted(range(len(xs)), key=lambda i: (xs[i], -ys[i]))
    front, best = [], -math.inf
    for index in order:
        if ys[index] > best:
            front.append(index)
            best = ys[index]
    return front


def plot_pareto(results, path, x="parameters"):
    """Plots test accuracy against model size or latency, one point per arm.

    Each finished arm is a point with error bars (± std over seeds) and its
    label; the Pareto front (the best accuracy reachable at each cost) is
    drawn as a dashed step line.

    Args:
        results: A results dict (see `benchmarks.schema`).
        path: Where to write the PNG.
        x: `"parameters"` (log scale) or `"latency"` (batch-1 p50, ms).
            Defaults to `"parameters"`.

    Returns:
        `path`, as a string.

    Raises:
        ValueError: if `x` is not one of the two choices.

    Example:

    >>> import os, tempfile
    >>> from benchmarks import plots, sample_results
    >>> path = os.path.join(tempfile.mkdtemp(), "pareto.png")
    >>> plots.plot_pareto(sample_results.example_results(), path) == path
    True
    """
    if x not in ("parameters", "latency"):
        raise ValueError(
            "Invalid value for argument `x`. Expected 'parameters' or "
            f"'latency'. Received: x={x!r}"
        )
    points = []
    for arm_id, arm in _done_arms(results):
        accuracy = arm.get("accuracy") or {}
        if x == "parameters":
            cost = arm.get("parameters")
        else:
            cost = (arm.get("latency_ms") or {}).get("p50")
        if accuracy.get("mean") is None or cost is None or cost <= 0:
            continue
        points.append((arm_id, arm, float(cost), 100 * accuracy["mean"],
                       100 * (accuracy.get("std") or 0.0)))

    figure = Figure(figsize=(8, 5.5), layout="constrained")
    axes = figure.add_subplot()
    colors = _arm_colors(results)
    if x == "parameters":
        axes.set_xscale("log")
        axes.xaxis.set_major_formatter(FuncFormatter(_tick_count))
        axes.set_xlabel("Parameters (log scale)")
        axes.set_title(f"Test accuracy vs model size: {_run_name(results)}")
    else:
        axes.set_xlabel("Batch-1 inference latency, p50 (ms)")
        axes.set_title(f"Test accuracy vs latency: {_run_name(results)}")
    axes.set_ylabel("Test accuracy (%)")
    axes.grid(True, which="major", alpha=0.3)

    if not points:
        _no_data(axes, f"No finished arm reports accuracy and {x}.")
        return _save(figure, path)

    for arm_id, arm, cost, mean, std in points:
        axes.errorbar(
            cost, mean, yerr=std, fmt=_ROLE_MARKERS.get(arm.get("role"), "o"),
            color=colors[arm_id], markersize=8, capsize=4, zorder=3,
        )
    front = pareto_front([p[2] for p in points], [p[3] for p in points])
    front_x = [points[i][2] for i in front]
    front_y = [points[i][3] for i in front]
    # Extend the last step to the costliest point: beyond the front's last
    # point, the best reachable accuracy stays the same.
    front_x.append(max(p[2] for p in points))
    front_y.append(front_y[-1])
    axes.step(front_x, front_y, where="post", color="#555555", linestyle="--",
              linewidth=1.2, zorder=2,
              label="Pareto front (best accuracy at this cost)")
    axes.legend(loc="lower right", fontsize=9)
    _pad_limits(axes, [p[2] for p in points], [p[3] for p in points], x == "parameters")
    _label_points(axes, figure, points, colors, log_x=x == "parameters")
    return _save(figure, path)


def plot_training_curves(results, path):
    """Plots accuracy and loss per epoch for every arm that has a history.

    Left panel: validation accuracy (solid) and training accuracy (dashed);
    right panel: the same for the loss. Each arm keeps its color from the
    other plots. Arms without a history are named in a footnote.

    Args:
        results: A results dict (see `benchmarks.schema`).
        path: Where to write the PNG.

    Returns:
        `path`, as a string.

    Example:

    >>> import os, tempfile
    >>> from benchmarks import plots, sample_results
    >>> path = os.path.join(tempfile.mkdtemp(), "curves.png")
    >>> plots.plot_training_curves(sample_results.example_results(), path) == path
    True
    """
    figure = Figure(figsize=(12, 5.5), layout="constrained")
    accuracy_axes, loss_axes = figure.subplots(1, 2)
    colors = _arm_colors(results)
    without_history = []
    handles = []
    for arm_id, arm in _done_arms(results):
        history = arm.get("history") or {}
        if not any(_has_values(history.get(key)) for key in _HISTORY_KEYS):
            without_history.append(arm.get("label", arm_id))
            continue
        color = colors[arm_id]
        panels = ((accuracy_axes, "accuracy", 100.0), (loss_axes, "loss", 1.0))
        for axes, key, scale in panels:
            for prefix, style in (("val_", "-"), ("", "--")):
                values = history.get(prefix + key)
                if _has_values(values):
                    epochs = np.arange(1, len(values) + 1)
                    axes.plot(epochs, np.asarray(values, dtype=float) * scale,
                              linestyle=style, color=color, linewidth=1.6,
                              marker="o" if style == "-" else None, markersize=3)
        handles.append(
            Line2D([], [], color=color, linewidth=2, label=arm.get("label", arm_id))
        )

    accuracy_axes.set_title("Accuracy")
    accuracy_axes.set_ylabel("Accuracy (%)")
    loss_axes.set_title("Loss (each arm's own training objective)")
    loss_axes.set_ylabel("Loss")
    for axes in (accuracy_axes, loss_axes):
        axes.set_xlabel("Epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(True, alpha=0.3)
    figure.suptitle(f"Training curves (first seed): {_run_name(results)}")

    if not handles:
        _no_data(accuracy_axes, "No arm recorded a training history.")
        _no_data(loss_axes, "")
        return _save(figure, path)

    styles = [
        Line2D([], [], color="black", linestyle="-", marker="o", markersize=3,
               label="validation"),
        Line2D([], [], color="black", linestyle="--", label="training"),
    ]
    accuracy_axes.legend(handles=styles, loc="lower right", fontsize=9)
    figure.legend(handles=handles, loc="outside lower center",
                  ncol=min(len(handles), 3), fontsize=9, frameon=False)
    notes = [
        "Distilled arms' loss includes the distillation term, so loss levels "
        "are not comparable across arms."
    ]
    if without_history:
        notes.append("No history: " + ", ".join(without_history) + ".")
    loss_axes.text(0.0, -0.14, "\n".join(notes), transform=loss_axes.transAxes,
                   fontsize=8, color="#555555", va="top")
    return _save(figure, path)


def plot_confusion_matrices(results, path, arm_ids=("teacher", "tfkd")):
    """Plots the test-set confusion matrices of some arms side by side.

    Rows are normalized to percentages of the true class, so the diagonal
    is the per-class recall; every non-empty cell is annotated. An arm that
    is missing or has no matrix gets an empty panel saying so.

    Args:
        results: A results dict (see `benchmarks.schema`).
        path: Where to write the PNG.
        arm_ids: Arms to show, left to right. Defaults to
            `("teacher", "tfkd")`.

    Returns:
        `path`, as a string.

    Example:

    >>> import os, tempfile
    >>> from benchmarks import plots, sample_results
    >>> path = os.path.join(tempfile.mkdtemp(), "confusion.png")
    >>> plots.plot_confusion_matrices(sample_results.example_results(), path) == path
    True
    """
    arm_ids = list(arm_ids)
    if not arm_ids:
        raise ValueError("Invalid value for argument `arm_ids`. Expected at "
                         "least one arm id. Received: arm_ids=()")
    class_names = _class_names(results)
    arms = results.get("arms") or {}
    size = max(len(class_names), 2)
    panel = 2.0 + 0.42 * size
    figure = Figure(
        figsize=(panel * len(arm_ids) + 1.2, panel + 0.6), layout="constrained"
    )
    axes_list = np.atleast_1d(figure.subplots(1, len(arm_ids)))
    image = None
    for axes, arm_id in zip(axes_list, arm_ids):
        arm = arms.get(arm_id) or {}
        matrix = arm.get("confusion_matrix")
        if matrix is None:
            axes.set_axis_off()
            axes.text(0.5, 0.5, f"No confusion matrix for\n{arm.get('label', arm_id)}",
                      ha="center", va="center", fontsize=11, transform=axes.transAxes)
            continue
        counts = np.asarray(matrix, dtype=float)  # (true class, predicted class)
        totals = counts.sum(axis=1, keepdims=True)
        percent = 100 * np.divide(
            counts, totals, out=np.zeros_like(counts), where=totals > 0
        )
        image = axes.imshow(percent, cmap="Blues", vmin=0, vmax=100)
        for (true_class, predicted), value in np.ndenumerate(percent):
            text = f"{value:.0f}"
            # Cells that show 0 are greyed out so the eye finds the real
            # confusions first.
            if text == "0":
                color = "#b5b5b5"
            else:
                color = "white" if value >= 55 else "black"
            axes.text(predicted, true_class, text, ha="center", va="center",
                      fontsize=7 if size > 8 else 9, color=color)
        names = class_names if len(class_names) == counts.shape[0] else [
            str(i) for i in range(counts.shape[0])
        ]
        axes.set_xticks(range(len(names)), names, rotation=45, ha="right",
                        rotation_mode="anchor", fontsize=8)
        axes.set_yticks(range(len(names)), names, fontsize=8)
        axes.set_xlabel("Predicted class")
        axes.set_ylabel("True class")
        accuracy = (arm.get("accuracy") or {}).get("mean")
        caption = arm.get("label", arm_id)
        if accuracy is not None:
            caption += f"\nmean accuracy {report.format_percent(accuracy)}"
        axes.set_title(caption, fontsize=10)
    if image is not None:
        colorbar = figure.colorbar(image, ax=list(axes_list), shrink=0.8)
        colorbar.set_label("Share of the true class (%)")
    figure.suptitle(
        "Test-set confusion matrices, rows normalized (first seed): "
        + _run_name(results)
    )
    return _save(figure, path)


def plot_prediction_grid(
    images,
    true_labels,
    teacher_predictions,
    student_predictions,
    class_names,
    path,
    columns=8,
):
    """Shows test images with the true class and both models' predictions.

    Each cell is titled "true / T: teacher / S: student". Cells where the
    student and the teacher disagree get a red frame and a red title; a
    prediction that differs from the true class is marked with ✗.

    Args:
        images: Array `(n, height, width)`, `(n, height, width, 1)` or
            `(n, height, width, 3)`, uint8 or float in [0, 1]. The caller
            picks which images to show.
        true_labels: Class indices, shape `(n,)`.
        teacher_predictions: Predicted class indices `(n,)`, or scores
            `(n, classes)` (the arg-max is taken).
        student_predictions: Same for the student.
        class_names: Names indexed by class.
        path: Where to write the PNG.
        columns: Images per row. Defaults to `8`.

    Returns:
        A `PredictionGrid` with the path and the flagged cell indices.

    Raises:
        ValueError: if the arrays have unsupported shapes or different
            lengths, a label has no class name, or `columns` < 1.

    Example:

    >>> import os, tempfile
    >>> import numpy as np
    >>> from benchmarks import plots
    >>> grid = plots.plot_prediction_grid(
    ...     np.zeros((4, 28, 28), "uint8"), [0, 1, 1, 0], [0, 1, 0, 0],
    ...     [0, 0, 0, 0], ["zero", "one"],
    ...     os.path.join(tempfile.mkdtemp(), "grid.png"), columns=4)
    >>> grid.disagreements, grid.student_errors, grid.teacher_errors
    ((1,), (1, 2), (2,))
    """
    images = _as_images(images)
    count = images.shape[0]
    true_labels = _as_labels(true_labels, "true_labels", count)
    teacher = _as_labels(teacher_predictions, "teacher_predictions", count)
    student = _as_labels(student_predictions, "student_predictions", count)
    class_names = [str(name) for name in class_names]
    for name, labels in (("true_labels", true_labels), ("teacher_predictions", teacher),
                         ("student_predictions", student)):
        if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise ValueError(
                f"Invalid value for argument `{name}`. Expected class indices "
                f"in [0, {len(class_names)}) (one per class name). "
                f"Received: values from {labels.min()} to {labels.max()}"
            )
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError("Invalid value for argument `columns`. Expected an "
                         f"int >= 1. Received: columns={columns!r}")

    disagreements = tuple(int(i) for i in np.flatnonzero(student != teacher))
    student_errors = tuple(int(i) for i in np.flatnonzero(student != true_labels))
    teacher_errors = tuple(int(i) for i in np.flatnonzero(teacher != true_labels))

    columns = min(columns, count)
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(1.55 * columns, 1.95 * rows + 0.9), layout="constrained")
    axes_grid = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    grayscale = images.ndim == 3
    top = 255 if images.dtype == np.uint8 else 1.0
    for index, axes in enumerate(axes_grid):
        if index >= count:
            axes.set_axis_off()
            continue
        if grayscale:
            axes.imshow(images[index], cmap="gray", vmin=0, vmax=top)
        else:
            axes.imshow(images[index])
        axes.set_xticks([])
        axes.set_yticks([])
        disagree = index in disagreements
        title = "\n".join([
            class_names[true_labels[index]],
            "T: " + class_names[teacher[index]] + _mark(index in teacher_errors),
            "S: " + class_names[student[index]] + _mark(index in student_errors),
        ])
        axes.set_title(title, fontsize=7.5, color=_DISAGREE if disagree else "black",
                       fontweight="bold" if disagree else "normal")
        for spine in axes.spines.values():
            spine.set_edgecolor(_DISAGREE if disagree else "#bbbbbb")
            spine.set_linewidth(3.5 if disagree else 0.8)
    figure.suptitle("Test images: true class / T: teacher / S: student", fontsize=12)
    figure.text(
        0.5, 0.0,
        f"Red: student and teacher disagree ({len(disagreements)} of {count}).   "
        "✗: prediction differs from the true class.",
        ha="center", va="bottom", fontsize=9,
    )
    return PredictionGrid(
        _save(figure, path), disagreements, student_errors, teacher_errors
    )


def write_all_plots(results, directory, grid=None):
    """Writes every plot of a results dict into `directory`.

    The files are `report.STANDARD_PLOTS` (both Pareto plots, the training
    curves, the teacher and tfkd confusion matrices) and, when `grid` is
    given, `prediction_grid.png`. Pass the returned paths to
    `benchmarks.report.write_report(..., plot_files=paths)` so the Markdown
    links exactly these files.

    Args:
        results: A results dict (see `benchmarks.schema`).
        directory: Output directory, created if needed.
        grid: Optional dict of `plot_prediction_grid` arguments: `images`,
            `true_labels`, `teacher_predictions`, `student_predictions`
            (required), `class_names` (defaults to `results["class_names"]`)
            and `columns`. Defaults to `None` (no grid).

    Returns:
        The list of written paths.

    Raises:
        ValueError: if `grid` misses a required key or has an unknown one.

    Example:

    >>> import tempfile
    >>> from benchmarks import plots, sample_results
    >>> paths = plots.write_all_plots(sample_results.example_results(), tempfile.mkdtemp())
    >>> [p.rsplit("/", 1)[-1] for p in paths][:2]
    ['pareto_parameters.png', 'pareto_latency.png']
    """
    if grid is not None:
        # Checked before anything is drawn, so a bad grid fails fast.
        required = {
            "images", "true_labels", "teacher_predictions", "student_predictions"
        }
        allowed = required | {"class_names", "columns"}
        missing, unknown = required - set(grid), set(grid) - allowed
        if missing or unknown:
            raise ValueError(
                "Invalid value for argument `grid`. Expected a dict with keys "
                f"{sorted(required)} and optionally 'class_names', 'columns'. "
                f"Missing: {sorted(missing)}; unknown: {sorted(unknown)}"
            )
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)

    def target(name):
        return os.path.join(directory, name)

    parameters, latency, curves, confusion = report.STANDARD_PLOTS
    paths = [
        plot_pareto(results, target(parameters), x="parameters"),
        plot_pareto(results, target(latency), x="latency"),
        plot_training_curves(results, target(curves)),
        plot_confusion_matrices(results, target(confusion)),
    ]
    if grid is not None:
        arguments = dict(grid)
        arguments.setdefault("class_names", _class_names(results))
        grid_plot = plot_prediction_grid(path=target(PREDICTION_GRID), **arguments)
        paths.append(grid_plot.path)
    return paths


def _save(figure, path):
    # One atomic writer for every figure (tfkd.utils.figures): a crash
    # never leaves a torn PNG next to a finished results.json. Imported
    # here: importing tfkd imports TensorFlow, which plotting does not need.
    from tfkd.utils import figures

    return figures.save_figure(figure, path, dpi=DPI)


def _tick_count(value, _):
    """Axis ticks as "10 k", "1 M": `format_count` without trailing zeros."""
    for threshold, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if value >= threshold:
            return f"{value / threshold:g}{suffix}"
    return f"{value:g}"


def _run_name(results):
    return f"{results.get('dataset', '?')}, preset {results.get('preset', '?')}"


def _done_arms(results):
    # The teacher first, as in the report's table.
    return [
        (arm_id, arm)
        for arm_id, arm in report.ordered_arms(results.get("arms") or {})
        if arm.get("status") == "done"
    ]


def _class_names(results):
    names = results.get("class_names")
    return [] if names is None else [str(name) for name in names]


def _has_values(values):
    # `len`, not truthiness: a history may hold NumPy arrays.
    return values is not None and len(values) > 0


def _mark(wrong):
    return " ✗" if wrong else ""


def _arm_colors(results):
    colors, spare = {}, iter(_SPARE_COLORS * 4)
    for arm_id in results.get("arms") or {}:
        colors[arm_id] = _ARM_COLORS.get(arm_id) or next(spare, "#000000")
    return colors


def _no_data(axes, message):
    axes.text(0.5, 0.5, message, ha="center", va="center", fontsize=11,
              color="#555555", transform=axes.transAxes)


def _pad_limits(axes, xs, ys, log_x):
    """Leaves room around the points for their labels."""
    low, high = min(ys), max(ys)
    span = max(high - low, 1.0)
    axes.set_ylim(low - 0.35 * span, high + 0.25 * span)
    if log_x:
        left, right = math.log10(min(xs)), math.log10(max(xs))
        margin = max(right - left, 0.5) * 0.35
        axes.set_xlim(10 ** (left - margin), 10 ** (right + margin))
    else:
        left, right = min(xs), max(xs)
        margin = max(right - left, 0.1 * right) * 0.35
        axes.set_xlim(max(left - margin, 0.0), right + margin)


def _label_points(axes, figure, points, colors, log_x):
    """Writes each arm's label next to its point without overlaps.

    Students often share one size (same architecture), so their points
    stack vertically; labels are spread apart vertically and tied to their
    point with a thin line.
    """
    x_low, x_high = axes.get_xlim()
    y_low, y_high = axes.get_ylim()

    def x_fraction(value):
        if log_x:
            return (math.log10(value) - math.log10(x_low)) / (
                math.log10(x_high) - math.log10(x_low)
            )
        return (value - x_low) / (x_high - x_low)

    # The minimum gap between labels, as a fraction of the axes height:
    # about one 9-point line on an axes of roughly 75 % of the figure.
    gap = 16.0 / (figure.get_figheight() * 72 * 0.75)
    sides = {"left": [], "right": []}
    for point in points:
        sides["left" if x_fraction(point[2]) > 0.6 else "right"].append(point)
    for side, group in sides.items():
        group.sort(key=lambda p: p[3])
        placed = []
        for point in group:
            wanted = (point[3] - y_low) / (y_high - y_low)
            placed.append(max(wanted, placed[-1] + gap) if placed else wanted)
        # Push back down if the stack ran off the top.
        overflow = (placed[-1] - 0.97) if placed else 0
        if overflow > 0:
            placed = [value - overflow for value in placed]
        for point, label_y in zip(group, placed):
            arm_id, arm, cost, mean, _ = point
            offset = 0.05 if side == "right" else -0.05
            axes.annotate(
                f"{arm.get('label', arm_id)} ({mean:.1f} %)",
                xy=(cost, mean),
                xytext=(x_fraction(cost) + offset, label_y),
                textcoords="axes fraction",
                ha="left" if side == "right" else "right",
                va="center",
                fontsize=9,
                color=colors[arm_id],
                # The line leaves the text from its near end, not its middle.
                arrowprops={"arrowstyle": "-", "color": colors[arm_id],
                            "linewidth": 0.6, "shrinkA": 2, "shrinkB": 6,
                            "relpos": (0.0, 0.5) if side == "right" else (1.0, 0.5)},
            )


def _as_images(images):
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3):
        raise ValueError(
            "Invalid value for argument `images`. Expected shape (n, height, "
            "width), (n, height, width, 1) or (n, height, width, 3). "
            f"Received: shape {images.shape}"
        )
    if images.shape[0] == 0:
        raise ValueError("Invalid value for argument `images`. Expected at least "
                         "one image. Received: 0 images")
    if images.dtype != np.uint8:
        # imshow reads float RGB in [0, 1]; clip rather than let it warn.
        images = np.clip(images.astype(np.float32), 0.0, 1.0)
    return images


def _as_labels(values, name, count):
    values = np.asarray(values)
    if values.ndim == 2:
        values = values.argmax(axis=-1)
    if values.ndim != 1 or values.shape[0] != count:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected {count} class "
            f"indices (one per image). Received: shape {values.shape}"
        )
    return values.astype(np.int64)
