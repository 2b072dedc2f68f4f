"""Griffe extension: tfkd's doctest examples rendered as code.

tfkd's docstrings follow Keras: `Example:` then `>>>` lines at the
docstring's own indentation. Markdown would read those as nested block
quotes; this wraps every run of doctest lines (the prompt lines and their
expected output, up to a blank line) in a ```pycon fence and drops
`# doctest:` directives, which are for the test runner, not the reader.
The docstrings in tfkd/ are unchanged (tests/test_docstrings.py runs them).
"""

import re

import griffe

_DIRECTIVE = re.compile(r"\s*# doctest:.*$")


def fence_doctests(text):
    lines, out, i, in_fence = text.splitlines(), [], 0, False
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        if in_fence or not line.lstrip().startswith(">>>"):
            out.append(line)
            i += 1
            continue
        indent = line[: len(line) - len(line.lstrip())]
        out.append(f"{indent}```pycon")
        while i < len(lines) and lines[i].strip() and lines[i].startswith(indent):
            out.append(_DIRECTIVE.sub("", lines[i]))
            i += 1
        out.append(f"{indent}```")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    """Fences the doctests of every docstring griffe loads."""

    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(obj.docstring.value)
