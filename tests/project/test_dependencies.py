"""Dependencies fit their users: each import declared where its user installs it, the relay free of the extras, and
requirements.lock covering pyproject.toml, hashed, and installed here as locked."""

import ast
import json
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support import ROOT

OWN = {"proxy", "loadtest", "wire", "bench", "tests"}
# Who needs what: the relay and wire/ (which it shares with the load generator) run on the base dependencies alone,
# the relay's tracing on the otel extra, imported only when tracing is on (test_the_relay_runs_without_the_extras);
# the load generator and bench/ add the loadtest extra; the suite adds test on top (it exercises the load generator).
USERS = {"wire": ("base",), "proxy": ("base", "otel"), "loadtest": ("base", "loadtest"),
         "bench": ("base", "loadtest", "otel"), "tests": ("base", "loadtest", "test")}
# pip freeze leaves these out too: the installer's own tools, and the project.
NOT_LOCKED = {"pip", "setuptools", "wheel", "moonrelay"}


def declared() -> dict[str, list[Requirement]]:
    """``base`` and each extra of pyproject.toml -> its requirements."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = {"base": project["dependencies"], **project["optional-dependencies"]}
    return {group: [Requirement(line) for line in lines] for group, lines in groups.items()}


def locked_versions() -> dict[str, str]:
    """Canonical name -> version of every pin in requirements.lock."""
    return {name: version for name, version, _ in lock_entries()}


def lock_entries() -> list[tuple[str, str, int]]:
    """``(name, version, number of hashes)`` per requirement in requirements.lock; a line not ``name==version``
    (an URL, a path, a range) fails here."""
    entries = []
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("--hash=sha256:"):
            name, version, hashes = entries[-1]
            entries[-1] = (name, version, hashes + 1)
            continue
        name, sep, version = stripped.removesuffix("\\").strip().partition("==")
        assert sep and version and " " not in version, f"requirements.lock: not an exact pin: {line!r}"
        entries.append((canonicalize_name(name), version, 0))
    return entries


def third_party_imports(folder: Path) -> dict[str, set[str]]:
    """Top-level module -> the files under ``folder`` that import it (lazily too), outside the stdlib and this
    project."""
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.partition(".")[0]
                if top not in sys.stdlib_module_names and top not in OWN:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def installed_closure(requirements: list[Requirement]) -> set[str]:
    """Canonical names of the installed distributions that ``requirements`` pull in, transitively."""
    extras_seen: dict[str, set[str]] = {}
    todo = list(requirements)
    while todo:
        req = todo.pop()
        name, extras = canonicalize_name(req.name), set(req.extras)
        if name in extras_seen and extras <= extras_seen[name]:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # a marker kept it out of this environment (pip check, in ./dev, vouches for the rest)
        extras_seen[name] = extras_seen.get(name, set()) | extras
        for line in dist.requires or []:
            sub = Requirement(line)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in extras | {""}):
                todo.append(sub)
    return set(extras_seen)


@pytest.mark.parametrize("folder", USERS)
def test_every_import_is_declared_for_its_user(folder):
    groups = declared()
    allowed = {canonicalize_name(r.name) for group in USERS[folder] for r in groups[group]}
    distributions = metadata.packages_distributions()
    undeclared = {
        module: sorted(files)
        for module, files in third_party_imports(ROOT / folder).items()
        if not {canonicalize_name(d) for d in distributions.get(module, [])} & allowed
    }
    assert undeclared == {}, f"{folder}/ imports packages not declared in {' + '.join(USERS[folder])}"


# The modules that only the extras install made unimportable, in a child interpreter.
BLOCK_EXTRAS = """
import importlib.abc, json, pkgutil, runpy, sys

blocked = set(json.loads(sys.argv[1]))


class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"the relay imported {name}, which only an extra installs", name=name)
        return None


sys.meta_path.insert(0, Block())
"""
# Imports every module of the relay and runs `moonrelay --help` (proxy/__main__.py) without the extras: a relay
# module that needs one fails here, at import, as it would for a user.
RELAY_WITHOUT_EXTRAS = BLOCK_EXTRAS + """
import proxy

for info in pkgutil.walk_packages(proxy.__path__, "proxy."):
    if info.name != "proxy.__main__":
        __import__(info.name)
sys.argv = ["moonrelay", "--help"]
runpy.run_module("proxy", run_name="__main__", alter_sys=True)
"""


# A relay started in-process without the extras answers a chat request (relayed to a sim-less upstream that is not
# there: the 502 says the request went all the way through), and tracing asked for says which extra it needs.
RELAY_SERVES_WITHOUT_EXTRAS = BLOCK_EXTRAS + """
from functools import partial

import trio

from proxy.__main__ import main
from proxy.config import Settings
from proxy.edge import serve


async def ask(root, request):
    host, port = root.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(request)
        answer = b""
        while data := await stream.receive_some(65536):
            answer += data
    return answer.split(b"\\r\\n", 1)[0].decode()


async def run():
    body = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}'
    chat = (b"POST /v1/chat/completions HTTP/1.1\\r\\nhost: x\\r\\nconnection: close\\r\\n"
            b"content-type: application/json\\r\\ncontent-length: %d\\r\\n\\r\\n%s" % (len(body), body))
    async with trio.open_nursery() as nursery:
        settings = Settings(bind="127.0.0.1:0", upstream="http://127.0.0.1:9/v1", access_log="off", retries=0)
        root = await nursery.start(partial(serve, settings))
        print(await ask(root, chat))
        nursery.cancel_scope.cancel()


trio.run(run)
print("exit", main(["--bind", "127.0.0.1:0", "--otel-endpoint", "http://127.0.0.1:4318"]))
"""


def extras_only_modules() -> list[str]:
    """Top-level modules that only the extras install."""
    groups = declared()
    extras = [r for group, reqs in groups.items() if group != "base" for r in reqs]
    extras_only = installed_closure(extras) - installed_closure(groups["base"])
    return sorted(
        module for module, dists in metadata.packages_distributions().items()
        if {canonicalize_name(d) for d in dists} & extras_only
    )


def test_the_relay_runs_without_the_extras():
    modules = extras_only_modules()
    blocked = {"matplotlib", "rich", "psutil", "trustme", "pytest", "openai", "opentelemetry", "google"}
    assert blocked <= set(modules)  # the blocker blocks
    proc = subprocess.run(
        [sys.executable, "-c", RELAY_WITHOUT_EXTRAS, json.dumps(modules)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: moonrelay")


def test_the_relay_serves_without_the_extras_and_tracing_names_the_extra_it_needs():
    proc = subprocess.run(
        [sys.executable, "-c", RELAY_SERVES_WITHOUT_EXTRAS, json.dumps(extras_only_modules())],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["HTTP/1.1 502 ", "exit 2"], proc.stdout
    assert "tracing needs the OpenTelemetry SDK" in proc.stderr and "moonrelay[otel]" in proc.stderr


def test_the_lock_pins_every_declared_requirement_with_hashes():
    entries = lock_entries()
    assert all(hashes for _, _, hashes in entries), "pip install --require-hashes needs a hash on every pin"
    locked = locked_versions()
    assert len(locked) == len(entries) and not NOT_LOCKED & set(locked)
    for group, requirements in declared().items():
        for req in requirements:
            name = canonicalize_name(req.name)
            assert name in locked, f"{group}: {req} is not in requirements.lock: run ./dev lock"
            assert req.specifier.contains(locked[name], prereleases=True), f"{group}: {req} vs {locked[name]}"


def test_this_environment_is_the_lock():
    """What pip freeze lists here is requirements.lock, no more and no less: the suite runs on the tested set."""
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    for name in NOT_LOCKED:
        installed.pop(name, None)
    assert installed == locked_versions()


def test_the_license_is_an_spdx_expression_that_the_build_backend_reads_without_a_warning():
    """``license = { text = ... }`` is deprecated since setuptools 77, which warns on every fresh install."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "MIT"
    backend = [Requirement(r) for r in pyproject["build-system"]["requires"] if Requirement(r).name == "setuptools"]
    assert len(backend) == 1 and "76.9" not in backend[0].specifier and "77.0" in backend[0].specifier
