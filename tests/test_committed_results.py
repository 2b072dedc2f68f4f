"""The committed benchmark results: each names a commit of this history,
from a clean tree, and `make results` regenerates every one of them."""

import json
import pathlib
import re
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = sorted((ROOT / "benchmarks" / "results").glob("*/results.json"))


def _load(path):
    return json.loads(path.read_text())


def _git(*args):
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True,
                          text=True, check=False)


def _full_history():
    """Whether this checkout is a git repository with its whole history."""
    if shutil.which("git") is None or _git("rev-parse", "HEAD").returncode:
        return False
    return _git("rev-parse", "--is-shallow-repository").stdout.strip() == "false"


def test_there_are_committed_results():
    assert len(RESULTS) >= 5


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: p.parent.name)
def test_each_result_names_the_clean_commit_it_came_from(path):
    git = _load(path).get("git") or {}
    assert re.fullmatch(r"[0-9a-f]{40}", git.get("commit") or ""), (
        f"{path.parent.name}: no commit recorded; rerun it with `make results`")
    assert git.get("clean") is True, f"{path.parent.name}: run from a dirty tree"


@pytest.mark.skipif(not _full_history(), reason="needs a git clone with its history")
@pytest.mark.parametrize("path", RESULTS, ids=lambda p: p.parent.name)
def test_that_commit_is_on_this_branch(path):
    commit = (_load(path).get("git") or {}).get("commit")
    assert commit, f"{path.parent.name}: no commit recorded"
    ancestry = _git("merge-base", "--is-ancestor", commit, "HEAD")
    assert ancestry.returncode == 0, f"{path.parent.name}: {commit} is not in HEAD's history"


def test_make_results_reruns_every_committed_experiment():
    makefile = (ROOT / "Makefile").read_text()
    listed = re.search(r"^EXPERIMENTS \?= (.+)$", makefile, re.MULTILINE).group(1).split()
    experiments = {_load(path).get("experiment") for path in RESULTS}
    # An experiment runs through `python -m benchmarks`, or is a script.
    missing = {name for name in experiments
               if name not in listed and f"scripts/{name}.py" not in makefile}
    assert not missing, sorted(map(str, missing))


def test_the_readme_quotes_commits_the_results_record():
    recorded = {(_load(path).get("git") or {}).get("commit") for path in RESULTS} - {None}
    quoted = set(re.findall(r"from commit `([0-9a-f]{7,40})`",
                            (ROOT / "README.md").read_text()))
    assert quoted, "the README names no commit"
    for short in quoted:
        assert any(full.startswith(short) for full in recorded), short
