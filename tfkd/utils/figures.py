"""Figures off `pyplot`, saved atomically as PNG.

matplotlib is an optional extra (`pip install 'tfkd[plots]'`): it is
imported here, and only when a figure is made, so that `import tfkd` never
needs it. Figures are `matplotlib.figure.Figure` objects rendered with Agg,
never `pyplot`, so plotting works in threads and on machines without a
display, and leaves no global state behind.
"""

import os
import tempfile

#: Resolution of every PNG tfkd and its benchmarks write.
DPI = 120


def require_matplotlib(purpose="plotting"):
    """Imports matplotlib, or raises an `ImportError` naming the extra.

    Args:
        purpose: What needs it, for the message. Defaults to `"plotting"`.

    Returns:
        The `matplotlib` module.

    Raises:
        ImportError: if matplotlib is not installed.
    """
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError(
            f"{purpose} needs matplotlib, an optional extra of tfkd: "
            "`pip install 'tfkd[plots]'`."
        ) from error
    return matplotlib


def new_figure(size, purpose="plotting"):
    """A constrained-layout `matplotlib.figure.Figure` of `size` inches.

    Args:
        size: `(width, height)` in inches.
        purpose: What the figure is for, named if matplotlib is missing.
            Defaults to `"plotting"`.

    Returns:
        A `matplotlib.figure.Figure`.
    """
    require_matplotlib(purpose)
    from matplotlib.figure import Figure

    return Figure(figsize=size, layout="constrained")


def save_figure(figure, path, dpi=DPI):
    """Renders `figure` with Agg to a PNG at `path`, atomically.

    The PNG is written to a temporary file in the target directory and
    moved over `path`, so a crash never leaves a torn image behind.

    Args:
        figure: A `matplotlib.figure.Figure`.
        path: Target `.png` path; its directory is created if needed.
        dpi: Resolution. Defaults to `DPI`.

    Returns:
        `path`, as a str.

    Example:

    >>> import os, tempfile
    >>> figure = new_figure((2, 2))
    >>> _ = figure.add_subplot().plot([0, 1], [1, 0])
    >>> path = os.path.join(tempfile.mkdtemp(), "line.png")
    >>> save_figure(figure, path) == path
    True
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    FigureCanvasAgg(figure)
    handle, temporary = tempfile.mkstemp(
        dir=directory, prefix=".tmp-", suffix=".png"
    )
    os.close(handle)
    try:
        figure.savefig(temporary, dpi=dpi, facecolor="white", format="png")
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return path
