"""Every Python block of README.md and of every docs/ page runs.

README's quick start runs exactly as pasted. Then the blocks of each page
(README.md, and each Markdown file under docs/) run in order in a fresh
namespace of their own, as a reader pasting them into one session would
(the pages share one interpreter, so TensorFlow is imported once),
with tiny sizes (fewer examples, epochs and trials: the numbers are the
reader's to choose). A block that downloads (ImageNet weights) is skipped
without network; the block after it is its offline version. The pages the
site generates at build time (API reference, benchmarks) hold no Python
blocks; the notebook runs in tests/test_notebook.py.
"""

import json
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
def test_relative_links_lead_to_files_of_the_repository(page):
    # Links between docs pages are checked by `make docs` (strict); this
    # also covers README.md, which the site does not build.
    text = re.sub(r"^( *)```.*?^\1```", "", page.read_text(), flags=re.S | re.M)
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if "://" not in t and not t.startswith("mailto:")]
    generated = {"benchmarks.md", "distillation_walkthrough.ipynb"}
    missing = [t for t in local
               if not (page.parent / t).exists()
               and not (page.parent / t).name in generated
               and not (t.startswith("../api/") or t.startswith("api/"))]
    assert not missing, missing


#: Runs each page's blocks in order in a fresh namespace and working
#: directory, one page after another in one interpreter (importing
#: TensorFlow once, not once per page), and prints what ran and what failed.
_DRIVER = """
import json, os, sys, traceback
import keras
pages = json.loads(sys.stdin.read())
for page, directory, blocks in pages:
    os.makedirs(directory)
    os.chdir(directory)
    keras.utils.clear_session()
    namespace = {"__name__": "__main__"}
    for index, code in blocks:
        try:
            exec(compile(code, f"{page}, block {index}", "exec"), namespace)
        except BaseException:
            print(f"=== failed {page} {index}", flush=True)
            traceback.print_exc(file=sys.stdout)
            break
        print(f"=== ran {page} {index}", flush=True)
"""


def _tiny(code):
    for pattern, tiny in TINY_SIZES:
        code = re.sub(pattern, tiny, code)
    return code


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """{page id: (blocks expected to run, blocks that ran, failure output)}."""
    root = tmp_path_factory.mktemp("pages")
    pages, expected = [], {}
    for number, page in enumerate(PAGES):
        blocks = [(index, _tiny(code)) for index, code in enumerate(python_blocks(page))
                  if not any(marker in code for marker in DOWNLOADS)]
        expected[_page_id(page)] = [index for index, _ in blocks]
        pages.append((_page_id(page), str(root / str(number)), blocks))
    completed = subprocess.run(
        [sys.executable, "-c", _DRIVER], input=json.dumps(pages), cwd=root,
        capture_output=True, text=True, timeout=3600)
    output = completed.stdout
    runs = {}
    for page, indices in expected.items():
        ran = [int(i) for i in re.findall(rf"^=== ran {re.escape(page)} (\d+)$", output, re.M)]
        failure = re.search(rf"^=== failed {re.escape(page)} .*?(?=^=== |\Z)", output,
                            re.M | re.S)
        detail = failure.group(0) if failure else (
            output[-2000:] + completed.stderr[-3000:])
        runs[page] = (indices, ran, detail)
    return runs


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_block_runs_in_order_with_tiny_sizes(page, tiny_runs):
    expected, ran, detail = tiny_runs[_page_id(page)]
    if not expected:
        pytest.skip(f"{_page_id(page)} has no ```python block")
    assert ran == expected, detail[-5000:]
