"""README.md's quick start runs as pasted."""

import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _first_python_block():
    match = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert match, "README.md has no ```python block"
    return match.group(1)


def test_quick_start_runs_as_pasted(tmp_path):
    code = _first_python_block()
    assert len(code.strip().splitlines()) <= 25
    completed = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "'accuracy'" in completed.stdout
    assert (tmp_path / "student.keras").stat().st_size > 0


def _block_under(heading):
    text = README.read_text()
    start = text.index(f"\n## {heading}\n")
    match = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert match, f"no ```python block under {heading!r}"
    return match.group(1)


def test_deploying_the_student_runs_as_pasted(tmp_path):
    import pytest

    pytest.importorskip("ai_edge_litert", reason="needs the `litert` extra")
    code = _block_under("Deploying the student (LiteRT)")
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
        text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "'accuracy'" in completed.stdout and "'latency_ms'" in completed.stdout
    assert (tmp_path / "student_int8.tflite").stat().st_size > 0
