"""The committed benchmark results, as git holds them.

Tests about committed results read `benchmarks/results/*/results.json` from
`HEAD` when the checkout is a git repository, so a local run that rewrote
the files (`make results`, or an experiment pointed there) cannot make
them fail; outside a git checkout they read the files.
"""

import json
import pathlib
import shutil
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def git(*args, root=ROOT):
    """Runs `git -C root *args`; returns the `CompletedProcess`."""
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                          text=True, check=False)


def in_git_checkout(root=ROOT):
    """Whether `root` is a git checkout with a HEAD commit."""
    return (shutil.which("git") is not None
            and git("rev-parse", "HEAD", root=root).returncode == 0)


def results_files():
    """The relative paths of the committed `results.json` files, sorted."""
    if in_git_checkout():
        listed = git("ls-tree", "-r", "--name-only", "HEAD", "--",
                     "benchmarks/results").stdout.split()
        return sorted(p for p in listed if p.endswith("/results.json"))
    return sorted(str(p.relative_to(ROOT)) for p in RESULTS.glob("*/results.json"))


def read_text(relative, root=ROOT):
    """The committed text of `relative` (a path from the repository root)."""
    if in_git_checkout(root):
        shown = git("show", f"HEAD:{relative}", root=root)
        if shown.returncode == 0:
            return shown.stdout
        raise FileNotFoundError(f"{relative} is not committed: {shown.stderr.strip()}")
    return (pathlib.Path(root) / relative).read_text()


def load(relative):
    """The committed JSON at `relative`, parsed."""
    return json.loads(read_text(relative))


def experiment_results(name):
    """The committed `benchmarks/results/<name>/results.json`, parsed."""
    return load(f"benchmarks/results/{name}/results.json")
