"""No import cycles in tfkd or the benchmarks, not even inside functions.

The graph is read from the source (every `import`, at module level or in a
function body), so an import hidden in a function to dodge a cycle at load
time still counts: when two modules need each other, the shared part
belongs in a third.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("tfkd", "benchmarks")


def _module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules():
    """Module name -> source path, for every module of `PACKAGES`."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


def _imported_names(tree, name, is_package):
    """The absolute dotted names each import of a module reaches for."""
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from a.b import c` reaches for the module a.b.c, or for a
            # name of a.b's face when a.b.c is no module.
            for alias in node.names:
                yield f"{base}.{alias.name}"


def import_graph():
    """Module name -> the set of this repository's modules it imports."""
    known = modules()
    graph = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        targets = set()
        for dotted in _imported_names(tree, name, path.name == "__init__.py"):
            # `from a.b import c`: the module a.b.c if there is one, else a.b.
            while dotted and dotted not in known:
                dotted = dotted.rpartition(".")[0]
            if dotted and dotted != name:
                targets.add(dotted)
        graph[name] = targets
    return graph


def cycles(graph):
    """The strongly connected components of more than one module."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _is_package_face(name):
    return name in PACKAGES or name.count(".") == 0


def test_there_is_no_import_cycle():
    graph = import_graph()
    # A package's __init__ re-exports its modules; a module importing its
    # own package face (`import tfkd` inside tfkd.cache) is what lifts the
    # whole package above it, so package faces count like any module.
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_cycle_finder_finds_a_hidden_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def _import_alone(name, connection):
    import importlib
    import traceback

    try:
        importlib.import_module(name)
    except BaseException:  # reported to the test
        connection.send(traceback.format_exc())
    else:
        connection.send(None)


_FORK_SERVER = []


def _fork_server():
    """A fork server that imported TensorFlow and Keras (not tfkd) once."""
    import multiprocessing

    if not _FORK_SERVER:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["tensorflow", "keras", "numpy"])
        _FORK_SERVER.append(context)
    return _FORK_SERVER[0]


@pytest.mark.parametrize("name", sorted(n for n in modules() if not n.endswith("__main__")))
def test_each_module_imports_on_its_own(name):
    # Each in a fresh child where no module of this repository is loaded
    # yet, so a module that only imports after another one fails here.
    context = _fork_server()
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_import_alone, args=(name, sender))
    process.start()
    sender.close()
    process.join(300)
    assert process.exitcode == 0 and receiver.poll(), f"{name}: exit {process.exitcode}"
    error = receiver.recv()
    assert error is None, error
