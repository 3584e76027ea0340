"""The layout's rules, checked on the source: the load generator shares no code with the relay it measures.

``loadtest/`` judges the relay's output, so it may start the relay (``python -m proxy``) but never import
from ``proxy/``: a bug in shared code would grade itself. Checked two ways: an AST scan of every module
(``import``, ``from ... import``, ``importlib.import_module`` / ``__import__`` with a literal name), and
importing every loadtest module in a fresh interpreter, which catches an import through any path.

Its modules are layered: no import circle among them, counting the imports inside functions too (a circle
hidden in a function works only as long as nobody moves the import to the top).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

FORBIDDEN = "proxy"


def _is_forbidden(name: str | None) -> bool:
    return name is not None and (name == FORBIDDEN or name.startswith(FORBIDDEN + "."))


def forbidden_imports(source: str, filename: str = "<source>") -> list[str]:
    """``file:line name`` of every import of ``proxy`` (or below) in ``source``."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        found += [f"{filename}:{node.lineno} {name}" for name in names if _is_forbidden(name)]
    return found


def _loadtest_modules() -> list[Path]:
    return sorted((ROOT / "loadtest").rglob("*.py"))


def test_loadtest_imports_nothing_from_proxy() -> None:
    found: list[str] = []
    for path in _loadtest_modules():
        found += forbidden_imports(path.read_text(), str(path.relative_to(ROOT)))
    assert found == []


def test_the_scan_sees_every_form_of_import() -> None:
    source = "\n".join([
        "import proxy",
        "import os, proxy.sse as s",
        "from proxy.limits import raise_nofile_limit",
        "def f():",
        "    from proxy import sse",
        "    importlib.import_module('proxy.sse')",
        "    __import__('proxy')",
        "import proxyish, loadtest.proxy_check",  # not the package
        "from . import proxy",  # a relative import is loadtest's own module
        "run(['python', '-m', 'proxy'])",  # starting the relay is not importing it
    ])
    assert [f.split(" ", 1)[1] for f in forbidden_imports(source)] == [
        "proxy", "proxy.sse", "proxy.limits", "proxy", "proxy.sse", "proxy",
    ]


def test_importing_every_loadtest_module_loads_no_proxy_module() -> None:
    modules = []
    for path in _loadtest_modules():
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__main__":
            continue  # running it would start a CLI; its imports are in the AST scan
        modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    assert "loadtest.session" in modules and "loadtest.ssereader" in modules
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(sorted(m for m in sys.modules if m == 'proxy' or m.startswith('proxy.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def module_imports(package: str) -> dict[str, set[str]]:
    """Each module of ``package`` (a folder under the root) and the modules of the package it imports, at any
    depth of its code; importing one's own parent package does not count (Python has imported it already)."""
    paths = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                found = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in paths else base for alias in node.names]
            else:
                continue
            graph[name] |= {m for m in found if m in paths and m != name and not name.startswith(m + ".")}
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The modules of every import circle (strongly connected components of more than one), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return circles


def test_loadtest_modules_import_in_layers() -> None:
    graph = module_imports("loadtest")
    assert "loadtest.reportmd" in graph["loadtest.report"]
    assert import_circles(graph) == []


def test_import_circles_names_each_circle_once() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_circles(graph) == [["a", "b", "c"]]
    assert import_circles({"a": {"b"}, "b": set()}) == []
