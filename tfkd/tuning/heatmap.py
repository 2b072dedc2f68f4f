"""The T x α heatmap of a search: student validation accuracy per trial.

Trials of a random or Bayesian search do not lie on a grid, so the map is
each trial as a coloured point, over a colour field linearly interpolated
between the trials (in log T, α: the scale T is searched on). The field is
a guide for the eye where trials are dense; the points are the data.

matplotlib is imported only when plotting (`tfkd.utils.figures`), so tfkd
itself does not need it (it comes with `pip install "tfkd[plots]"`).
"""

import math
import textwrap

import numpy as np

from tfkd.utils import figures

_COLORMAP = "viridis"


def plot_heatmap(trials, path, title=None, temperature_range=(1.0, 20.0)):
    """Draws student validation accuracy over temperature and α.

    Args:
        trials: Trial dicts as in `TuningResult.trials` (keys
            `temperature`, `alpha`, `val_accuracy`, `status`, and
            `learning_rate`); only completed trials are drawn.
        path: Where to write the PNG.
        title: Title of the plot. Defaults to `None` (a title naming the
            number of trials).
        temperature_range: The searched `(low, high)` of T; the x axis
            spans it (and any trial outside it), so that maps of two
            searches of one space line up. Defaults to `(1.0, 20.0)`.

    Returns:
        `path`, as a string.

    Raises:
        ImportError: if matplotlib is not installed.

    Example:

    >>> import os, tempfile
    >>> rows = [{"status": "COMPLETED", "temperature": t, "alpha": a,
    ...          "val_accuracy": acc, "learning_rate": 1e-3}
    ...         for t, a, acc in [(1, .1, .7), (4, .5, .8), (16, .9, .75)]]
    >>> path = os.path.join(tempfile.mkdtemp(), "heatmap.png")
    >>> plot_heatmap(rows, path) == path
    True
    """
    figure = figures.new_figure((7.5, 5.5), purpose="the tuning heatmap")
    from matplotlib.ticker import FixedLocator, FuncFormatter

    done = [
        row
        for row in trials
        if row.get("status") == "COMPLETED"
        and row.get("val_accuracy") is not None
    ]
    axes = figure.add_subplot()
    axes.set_ylabel("α (weight of the hard-label loss)")
    axes.set_xlabel("Temperature T (log scale)")
    title = title or (
        f"Student validation accuracy over T and α ({len(done)} trials)"
    )
    axes.set_title(textwrap.fill(title, width=70), fontsize=11)
    if not done:
        axes.text(0.5, 0.5, "No finished trial.", ha="center", va="center",
                  transform=axes.transAxes, color="#555555")
        return figures.save_figure(figure, path)

    # Plotted against log10(T) on a linear axis, so that the interpolated
    # field is linear in log T, as the search samples it.
    log_t = np.log10([row["temperature"] for row in done])
    alpha = np.asarray([row["alpha"] for row in done], dtype=float)
    accuracy = 100.0 * np.asarray([row["val_accuracy"] for row in done])
    low, high = float(accuracy.min()), float(accuracy.max())
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    levels = np.linspace(low, high, 12)
    field = _interpolated_field(axes, log_t, alpha, accuracy, levels)
    points = axes.scatter(
        log_t, alpha, c=accuracy, cmap=_COLORMAP, vmin=low, vmax=high,
        s=60, edgecolors="black", linewidths=0.8, zorder=3,
    )
    colorbar = figure.colorbar(field or points, ax=axes, format="%.1f")
    colorbar.set_label("Student validation accuracy (%)")

    best = int(np.argmax(accuracy))
    axes.scatter(log_t[best], alpha[best], marker="*", s=320, c="#d62728",
                 edgecolors="white", linewidths=1.0, zorder=4)
    x_low = min(float(log_t.min()), math.log10(temperature_range[0]))
    x_high = max(float(log_t.max()), math.log10(temperature_range[1]))
    margin = max(x_high - x_low, 0.3) * 0.05
    x_low, x_high = x_low - margin, x_high + margin
    # The label goes towards the middle of the plot, so it stays inside.
    to_left = log_t[best] > (x_low + x_high) / 2
    below = alpha[best] > 0.5
    axes.annotate(
        f"best: T={done[best]['temperature']:.2f}, "
        f"α={done[best]['alpha']:.2f} ({accuracy[best]:.1f} %)",
        xy=(log_t[best], alpha[best]),
        xytext=(-10 if to_left else 10, -12 if below else 12),
        textcoords="offset points", fontsize=9, color="#d62728", zorder=5,
        ha="right" if to_left else "left", va="top" if below else "bottom",
        bbox={"boxstyle": "round,pad=0.2", "facecolor": "white",
              "edgecolor": "none", "alpha": 0.8},
    )
    learning_rates = {row.get("learning_rate") for row in done}
    if len(learning_rates) > 1:
        figure.text(
            0.01, 0.005,
            "Learning rate tuned too: each point is one trial with its own "
            "learning rate (see tuning.json).",
            fontsize=8, color="#555555", ha="left", va="bottom",
        )

    axes.set_xlim(x_low, x_high)
    axes.set_ylim(-0.04, 1.04)
    ticks = [math.log10(v) for v in (0.5, 1, 2, 5, 10, 20, 50, 100)]
    ticks = [t for t in ticks if x_low <= t <= x_high]
    if len(ticks) < 2:
        ticks = [x_low + margin, x_high - margin]
    axes.xaxis.set_major_locator(FixedLocator(ticks))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{10 ** v:.3g}"))
    axes.grid(True, alpha=0.25)
    return figures.save_figure(figure, path)


def _interpolated_field(axes, x, y, values, levels):
    """Filled contours between the points, or `None` when impossible.

    A triangulation needs three points not on one line; fewer trials (or
    trials on a line) get the points alone.
    """
    if len(x) < 3:
        return None
    from matplotlib.tri import Triangulation

    # Scale both axes to [0, 1] first so that the Delaunay triangles are
    # not stretched by the different units of log T and α.
    span_x = max(float(np.ptp(x)), 1e-12)
    span_y = max(float(np.ptp(y)), 1e-12)
    try:
        triangulation = Triangulation(
            (x - x.min()) / span_x, (y - y.min()) / span_y
        )
        triangulation = Triangulation(x, y, triangles=triangulation.triangles)
        return axes.tricontourf(
            triangulation, values, levels=levels, cmap=_COLORMAP, alpha=0.55,
            zorder=1,
        )
    except (RuntimeError, ValueError):  # collinear points: no triangles
        return None
