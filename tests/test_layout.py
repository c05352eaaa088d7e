"""Package layout rules for brainseg_d2 (read from the source with ``ast``; nothing is imported).

* No module is over :data:`MAX_LINES` lines: a longer one holds more than one job.
* No ``from X import _name``: a name starting with ``_`` is private to its module,
  whether the module is this project's or a dependency's (dunders such as
  ``__version__`` are public). Checked in ``brainseg_d2/`` and ``tools/``, at
  every level (function-level imports too).
* No import cycle among brainseg_d2 modules through their top-level imports
  (those that run when the module is imported). Imports inside functions
  (deliberately lazy) and under ``if TYPE_CHECKING:`` (never run) are not edges.

Each rule's finder is also run on a small made-up input, so a finder that could
never report anything fails too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "brainseg_d2"
MAX_LINES = 400


def _module_name(path: Path) -> str:
    """Dotted name of a file under ``ROOT`` (a package's ``__init__.py`` is the package)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the package."""
    return {_module_name(p): p for p in sorted((ROOT / PACKAGE).rglob("*.py"))}


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The module an ``ImportFrom`` names, relative imports resolved against ``module``."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]  # a module's relative imports start from its package
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def private_imports(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, name) of every ``from X import _name`` anywhere in ``tree`` (dunders excepted)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                name = alias.name
                if name.startswith("_") and not (name.startswith("__") and name.endswith("__")):
                    yield node.lineno, f"{node.module or '.' * node.level}.{name}"


def _top_level_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports that run when the module is imported: module level, ``if``/``try``/``with``
    blocks and class bodies included; ``if TYPE_CHECKING:`` and function bodies excluded."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.ClassDef, ast.With)):
            yield from _top_level_imports(node.body)
        elif isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name != "TYPE_CHECKING":
                yield from _top_level_imports(node.body)
            yield from _top_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _top_level_imports(block)
            for handler in node.handlers:
                yield from _top_level_imports(handler.body)


def import_graph(sources: Mapping[str, tuple[ast.Module, bool]]) -> dict[str, set[str]]:
    """Module -> the modules of ``sources`` its top-level imports load.

    Args:
        sources: dotted module name -> (parsed source, whether it is a package).

    ``from pkg import name`` is an edge to ``pkg.name`` when that is a module of
    ``sources``, else to ``pkg``.
    """
    graph: dict[str, set[str]] = {m: set() for m in sources}
    for module, (tree, is_package) in sources.items():
        for node in _top_level_imports(tree.body):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = _absolute(node, module, is_package)
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in sources else base
                    for a in node.names
                ]
            graph[module].update(t for t in targets if t in sources and t != module)
    return graph


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or None when it has none."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path, on_path = [start], {start}
        stack = [iter(sorted(graph[start]))]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:  # every edge of path[-1] followed: no cycle through it
                stack.pop()
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
            elif nxt in on_path:
                return path[path.index(nxt) :] + [nxt]
            elif nxt not in done:
                path.append(nxt)
                on_path.add(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


# ---------------------------------------------------------------------------
# the rules, on the package
# ---------------------------------------------------------------------------


def test_no_module_is_over_400_lines():
    long = {
        name: n
        for name, path in _modules().items()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines (split them by job): {long}"


def test_no_private_name_is_imported_from_another_module():
    files = sorted((ROOT / PACKAGE).rglob("*.py")) + sorted((ROOT / "tools").rglob("*.py"))
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in files
        for line, name in private_imports(_parse(path))
    ]
    assert not found, "private names imported across modules:\n" + "\n".join(found)


def test_no_import_cycle_among_top_level_imports():
    sources = {
        name: (_parse(path), path.name == "__init__.py") for name, path in _modules().items()
    }
    graph = import_graph(sources)
    assert sum(map(len, graph.values())) > len(graph) // 2  # the graph was built at all
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# ---------------------------------------------------------------------------
# the finders, on made-up input
# ---------------------------------------------------------------------------


def _sources(**code: str) -> dict[str, tuple[ast.Module, bool]]:
    """Made-up modules ``pkg.<key>``; a key ``init`` is the package ``pkg`` itself."""
    return {
        ("pkg" if key == "init" else f"pkg.{key}"): (ast.parse(text), key == "init")
        for key, text in code.items()
    }


def test_private_imports_are_found_at_any_level_but_dunders_are_not():
    tree = ast.parse(
        "from a import public, _hidden\n"
        "from b import __version__\n"
        "from .c import x as _x\n"
        "def f():\n"
        "    from d.e import (\n"
        "        ok,\n"
        "        _lazy,\n"
        "    )\n"
    )
    assert [name for _, name in private_imports(tree)] == ["a._hidden", "d.e._lazy"]


def test_import_graph_resolves_absolute_relative_and_submodule_imports():
    graph = import_graph(
        _sources(
            init="from pkg import a\n",
            a="from .b import thing\nimport pkg.c\n",
            b="def f():\n    from pkg import a\n",  # lazy: no edge
            c="from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import X\n",
        )
    )
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.b", "pkg.c"}, "pkg.b": set(), "pkg.c": set()}


def test_find_cycle_reports_a_cycle_and_only_a_cycle():
    acyclic = {"a": {"b", "c"}, "b": {"c"}, "c": set(), "d": {"a"}}
    assert find_cycle(acyclic) is None
    cyclic = {**acyclic, "c": {"d"}}
    assert find_cycle(cyclic) == ["a", "b", "c", "d", "a"]
    graph = import_graph(_sources(a="from pkg.b import x\n", b="from pkg import a\n"))
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.a"]
