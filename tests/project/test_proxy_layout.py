"""proxy/'s layout: dependencies point one way (no import cycle), framework internals stay inside proxy/edge/,
no module reaches into another package's private modules or names, and every module stays small."""

import ast
from pathlib import Path

from tests.support import ROOT

PROXY = ROOT / "proxy"
FRAMEWORKS = ("hypercorn", "quart", "quart_trio", "h11", "werkzeug")
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for path in PROXY.rglob("*.py"):
        parts = list(path.relative_to(PROXY.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _package(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(module, names, level) for every import in the file, at any depth (lazy imports count too; those only for
    type checkers, under ``if TYPE_CHECKING:``, do not run)."""
    out = []
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, [], 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = _package(name, path).split(".")
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            out.append((base, [alias.name for alias in node.names], node.level))
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for base, names, _ in _imports(name, path):
            submodules = {f"{base}.{n}" for n in names} & modules.keys()  # ``from . import _passthrough``
            graph[name] |= submodules
            if base in modules and (not names or len(submodules) < len(names)):
                graph[name].add(base)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_in_proxy():
    assert _cycle(_graph()) is None, " -> ".join(_cycle(_graph()) or [])


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def _private(dotted: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in dotted.split("."))


def test_framework_internals_only_in_proxy_serving():
    found = []
    for name, path in _modules().items():
        if name.startswith("proxy.edge"):
            continue
        for base, names, _ in _imports(name, path):
            if base.split(".")[0] not in FRAMEWORKS:
                continue
            # hypercorn is the serving layer's alone; the other frameworks through their public names only
            if base.startswith("hypercorn") or _private(base) or any(_private(n) for n in names):
                found.append(f"{name}: {base} {names}")
        text = path.read_text()
        found += [f"{name}: reads {attr}" for attr in ("._cstate", "._writer", "._create_request_from_scope")
                  if attr in text]  # fmt: skip
    assert not found


def test_no_module_imports_another_packages_private_name():
    found = []
    for name, path in _modules().items():
        package = _package(name, path)
        for base, names, _ in _imports(name, path):
            if not base.startswith("proxy"):
                continue
            targets = [base] + [f"{base}.{n}" for n in names]
            for target in targets:
                owner, _, last = target.rpartition(".")
                if last.startswith("_") and not last.startswith("__") and owner != package:
                    found.append(f"{name}: {target}")
    assert not found


def test_every_module_is_small():
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert not {name: n for name, n in sizes.items() if n > MAX_LINES}
