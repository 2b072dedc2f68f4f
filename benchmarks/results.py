"""Where results go and what every results file records.

Every experiment writes `results.json`, `results.md` and its PNGs to
`<output root>/<experiment>-<preset>/`, each atomically (see
`tfkd.utils.files`), and every `results.json` says which commit produced
it and whether the working tree had uncommitted changes.

The output root is `benchmarks/runs/` (ignored by git) unless the
environment variable `TFKD_BENCHMARK_OUTPUT` names another directory: a
local run never rewrites the results committed in `benchmarks/results/`,
which only `make results` (it sets that variable) regenerates.
"""

import datetime
import functools
import json
import os
import pathlib
import subprocess

from tfkd.utils import files
from benchmarks import presets as presets_lib

#: Where the committed `<experiment>-<preset>` directories live.
RESULTS_DIR = pathlib.Path(__file__).resolve().parent / "results"
#: Where a run writes by default: ignored by git, never the committed ones.
RUNS_DIR = pathlib.Path(__file__).resolve().parent / "runs"
#: The environment variable that names another output root.
OUTPUT_ROOT_ENV = "TFKD_BENCHMARK_OUTPUT"
#: Version of the experiments' `results.json` layout.
SCHEMA_VERSION = 1
#: Line colours shared by the experiments' plots.
SCRATCH_COLOR = "#8c8c8c"
DISTILLED_COLOR = "#1f77b4"
TEACHER_COLOR = "#222222"


def output_root():
    """Where runs write: `$TFKD_BENCHMARK_OUTPUT`, else `benchmarks/runs`.

    Returns:
        An absolute `pathlib.Path`.

    Example:

    >>> output_root().is_absolute()
    True
    """
    configured = os.environ.get(OUTPUT_ROOT_ENV, "").strip()
    return pathlib.Path(configured).resolve() if configured else RUNS_DIR


def default_output(experiment, preset_name, datasets=()):
    """`<output root>/<experiment>[-<datasets>]-<preset>`.

    Dataset names appear only when one is not the offline default; the
    root is `output_root()`.
    """
    offline = presets_lib.OFFLINE_DATASET
    names = list(datasets) if any(n != offline for n in datasets) else []
    return output_root() / "-".join([experiment, *names, preset_name])


def git_provenance(directory=None):
    """`{"commit", "clean"}` of the repository holding `directory`.

    `commit` is `git rev-parse HEAD` and `clean` whether `git status
    --porcelain` printed nothing; both `None` outside a git checkout.
    Read once per process, at the first call (`protocol.start` makes it at
    the start of a run): a commit made while a long run trains must not be
    recorded as the code that produced its results.
    """
    return dict(_git_provenance_at_first_call(directory))


@functools.lru_cache(maxsize=None)
def _git_provenance_at_first_call(directory):
    directory = directory or pathlib.Path(__file__).resolve().parent

    def git(*arguments):
        return subprocess.run(
            ["git", *arguments], cwd=directory, capture_output=True,
            text=True, check=True, timeout=30,
        ).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        # Results written by this run must not make the tree look dirty.
        status = git("status", "--porcelain", "--", ":/",
                     ":(top,exclude)benchmarks/results",
                     ":(top,exclude)benchmarks/runs")
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "clean": None}
    return {"commit": commit, "clean": not status.strip()}


def skeleton(experiment, preset):
    """The common top of every experiment's results dict."""
    from benchmarks import environment

    return {
        "schema_version": SCHEMA_VERSION,
        "experiment": experiment,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"),
        "preset": preset.name,
        "git": git_provenance(),
        "environment": environment.describe(),
        "config": preset.to_dict(),
    }


def write(results, markdown_text, directory):
    """Writes `results.json` and `results.md` atomically; returns the paths."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path = directory / "results.json", directory / "results.md"
    files.write_text_atomically(
        json_path, json.dumps(results, indent=1, allow_nan=False) + "\n")
    files.write_text_atomically(markdown_path, markdown_text)
    return json_path, markdown_path


def header(title, results):
    """The first lines of an experiment's Markdown report."""
    info = results["environment"]
    parts = [f"{name} {info[key]}" for key, name in (
        ("tensorflow", "TensorFlow"), ("keras", "Keras"), ("python", "Python"))
        if info.get(key)]
    device = info.get("device", "?")
    if info.get("cpu"):
        device += f" ({info['cpu']}, {info.get('cpu_count', '?')} cores)"
    git = results.get("git") or {}
    commit = "unknown commit" if not git.get("commit") else (
        f"commit {git['commit'][:10]}" + ("" if git.get("clean") else
                                          " with uncommitted changes"))
    created = results["created"][:16].replace("T", " ")
    return [
        f"# tfkd experiment: {title}, preset `{results['preset']}`", "",
        f"Run {created} UTC from {commit}. " + " · ".join(parts + [device]) + ".",
        "",
    ]


def image_links(plot_files, captions):
    """Markdown image lines for `plot_files` (base names), with captions."""
    import os

    lines = []
    for path in plot_files:
        name = os.path.basename(str(path))
        lines += [f"![{captions.get(name, name)}]({name})", ""]
    return lines


def plural(count, noun):
    """`"1 epoch"`, `"6 epochs"`."""
    return f"{count} {noun}" + ("" if count == 1 else "s")
