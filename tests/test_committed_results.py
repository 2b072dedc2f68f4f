"""The committed benchmark results: each names a commit of this history,
from a clean tree, and `make results` regenerates every one of them.

They are read as git holds them (`tests/committed.py`), so a local
benchmark run cannot make these tests fail.
"""

import pathlib
import re

import pytest

import committed

ROOT = committed.ROOT
RESULTS = [pathlib.PurePosixPath(p) for p in committed.results_files()]


def _load(path):
    return committed.load(str(path))


def _git(*args):
    return committed.git(*args)


def _full_history():
    """Whether this checkout is a git repository with its whole history."""
    if not committed.in_git_checkout():
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
    from benchmarks import experiments

    makefile = (ROOT / "Makefile").read_text()
    results = re.search(r"^results:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE).group(1)
    assert "-m benchmarks --list" in results, "make results must read the registry"
    names = {_load(path).get("experiment") for path in RESULTS}
    # An experiment runs through `python -m benchmarks`, or is a script.
    missing = {name for name in names
               if name not in experiments.REGISTRY and f"scripts/{name}.py" not in results}
    assert not missing, sorted(map(str, missing))


@pytest.mark.parametrize(
    "page", ["README.md"] + sorted(
        str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md")))
def test_the_readme_and_docs_quote_commits_the_results_record(page):
    recorded = {(_load(path).get("git") or {}).get("commit") for path in RESULTS} - {None}
    quoted = set(re.findall(r"from commit\s+`([0-9a-f]{7,40})`",
                            (ROOT / page).read_text()))
    if page == "README.md":
        assert quoted, "the README names no commit"
    for short in quoted:
        assert any(full.startswith(short) for full in recorded), f"{page}: {short}"


def test_a_run_writes_outside_the_committed_results(monkeypatch, tmp_path):
    from benchmarks import results as results_lib

    monkeypatch.delenv(results_lib.OUTPUT_ROOT_ENV, raising=False)
    output = results_lib.default_output("compare", "quick")
    assert output.parent == results_lib.RUNS_DIR
    if committed.in_git_checkout():
        ignored = _git("check-ignore", "-q", "--no-index",
                       str(output.relative_to(ROOT) / "results.json"))
        assert ignored.returncode == 0, f"{output} is not ignored by git"
    monkeypatch.setenv(results_lib.OUTPUT_ROOT_ENV, str(tmp_path))
    assert results_lib.default_output("gain", "quick") == tmp_path.resolve() / "gain-quick"


def test_make_benchmark_leaves_the_committed_results_alone():
    makefile = (ROOT / "Makefile").read_text()
    benchmark = re.search(r"^benchmark:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE).group(1)
    assert "TFKD_BENCHMARK_OUTPUT" not in benchmark and "--output" not in benchmark
    results = re.search(r"^results:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE).group(1)
    assert "TFKD_BENCHMARK_OUTPUT=benchmarks/results" in results


@pytest.mark.skipif(not committed.in_git_checkout(), reason="needs a git checkout")
def test_committed_results_are_read_from_git_not_the_working_tree(tmp_path):
    clone = tmp_path / "clone"
    assert _git("clone", "-q", "--no-checkout", str(ROOT), str(clone)).returncode == 0
    assert committed.git("checkout", "-q", "HEAD", "--", "benchmarks/results",
                         root=clone).returncode == 0
    relative = str(RESULTS[0])
    original = committed.read_text(relative, root=clone)
    (clone / relative).write_text('{"rewritten": "by a local run"}\n')
    assert committed.read_text(relative, root=clone) == original
