"""Every `Example:` in tfkd's docstrings runs, as a user would paste it.

The examples are documentation; a refactoring that breaks one fails here.
Examples that need a download or a GPU carry `# doctest: +SKIP`.
"""

import doctest
import importlib
import pkgutil

import pytest

import tfkd

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(tfkd.__path__, prefix="tfkd.")
    if not info.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        verbose=False,
    )
    assert result.failed == 0, f"{result.failed} example(s) failed in {name}"
