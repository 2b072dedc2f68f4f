"""Every Python block of README.md runs.

The quick start runs exactly as pasted. Then every block runs in order in
one interpreter, as a reader pasting them into one session would, with
tiny sizes (fewer examples, epochs and trials: the numbers are the
reader's to choose). A block that downloads (ImageNet weights) is skipped
without network; the block after it is its offline version.
"""

import pathlib
import re
import subprocess
import sys
import textwrap

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"

#: What makes a block need a download.
DOWNLOADS = ('weights="imagenet"',)
#: README value -> tiny value, applied to every block but the quick start.
TINY_SIZES = (
    (r"train_examples=\d+", "train_examples=256"),
    (r"epochs=\(\d+, \d+\)", "epochs=(0, 1)"),
    (r"epochs=\d+", "epochs=1"),
    (r"max_trials=\d+", "max_trials=2"),
)


def _python_blocks():
    # Blocks may sit inside list items, indented.
    blocks = re.findall(r"^( *)```python\n(.*?)^\1```", README.read_text(),
                        re.S | re.M)
    assert blocks, "README.md has no ```python block"
    return [textwrap.dedent(code) for _, code in blocks]


def _run(code, cwd):
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_quick_start_runs_as_pasted(tmp_path):
    code = _python_blocks()[0]
    assert len(code.strip().splitlines()) <= 25
    completed = _run(code, tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "'accuracy'" in completed.stdout
    assert (tmp_path / "student.keras").stat().st_size > 0


def test_every_block_runs_in_order_with_tiny_sizes(tmp_path):
    blocks = _python_blocks()
    assert len(blocks) >= 6
    session = []
    for index, code in enumerate(blocks):
        if any(marker in code for marker in DOWNLOADS):
            continue
        for pattern, tiny in TINY_SIZES:
            code = re.sub(pattern, tiny, code)
        session.append(f"print('--- block {index}')\n{code}")
    completed = _run("\n".join(session), tmp_path)
    assert completed.returncode == 0, (
        completed.stdout[-2000:] + completed.stderr[-3000:]
    )
    ran = re.findall(r"^--- block (\d+)$", completed.stdout, re.M)
    assert len(ran) == len(session)
