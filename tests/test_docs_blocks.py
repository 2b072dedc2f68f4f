"""Every Python block of README.md and of every docs/ page runs.

README's quick start runs exactly as pasted. Then the blocks of each page
(README.md, and each Markdown file under docs/) run in order in one
interpreter per page, as a reader pasting them into one session would,
with tiny sizes (fewer examples, epochs and trials: the numbers are the
reader's to choose). A block that downloads (ImageNet weights) is skipped
without network; the block after it is its offline version. The pages the
site generates at build time (API reference, benchmarks) hold no Python
blocks; the notebook runs in tests/test_notebook.py.
"""

import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README] + sorted(DOCS.rglob("*.md"))

#: What makes a block need a download.
DOWNLOADS = ('weights="imagenet"',)
#: Page value -> tiny value, applied to every block but README's quick start.
TINY_SIZES = (
    (r"train_examples=\d+", "train_examples=256"),
    (r"epochs=\(\d+, \d+\)", "epochs=(0, 1)"),
    (r"epochs=\d+", "epochs=1"),
    (r"max_trials=\d+", "max_trials=2"),
)


def python_blocks(page):
    """The ```python blocks of a Markdown page, dedented, in order."""
    # Blocks may sit inside list items, indented.
    blocks = re.findall(r"^( *)```python\n(.*?)^\1```", page.read_text(),
                        re.S | re.M)
    return [textwrap.dedent(code) for _, code in blocks]


def _run(code, cwd):
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
    )


def _page_id(page):
    return str(page.relative_to(ROOT))


def test_quick_start_runs_as_pasted(tmp_path):
    code = python_blocks(README)[0]
    assert len(code.strip().splitlines()) <= 25
    completed = _run(code, tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "'accuracy'" in completed.stdout
    assert (tmp_path / "student.keras").stat().st_size > 0


def test_the_docs_home_page_opens_with_the_readme_quick_start():
    assert python_blocks(DOCS / "index.md")[0] == python_blocks(README)[0]


def test_every_guide_has_code_that_runs():
    guides = sorted((DOCS / "guides").glob("*.md"))
    assert len(guides) >= 8
    assert all(python_blocks(page) for page in guides), [
        page.name for page in guides if not python_blocks(page)]


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_block_runs_in_order_with_tiny_sizes(page, tmp_path):
    blocks = python_blocks(page)
    if not blocks:
        pytest.skip(f"{_page_id(page)} has no ```python block")
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
