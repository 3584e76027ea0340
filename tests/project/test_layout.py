"""The layout's rules, checked on the source: the load generator shares no code with the relay it measures.

``loadtest/`` judges the relay's output, so it may start the relay (``python -m proxy``) but never import
from ``proxy/``: a bug in shared code would grade itself. Checked two ways: an AST scan of every module
(``import``, ``from ... import``, ``importlib.import_module`` / ``__import__`` with a literal name), and
importing every loadtest module in a fresh interpreter, which catches an import through any path.
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
