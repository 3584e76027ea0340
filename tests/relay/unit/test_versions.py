"""The version gate: the tested-versions table, its agreement with pyproject.toml and the lock, and the one warning."""

import logging
import subprocess
import sys
import tomllib
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from proxy.edge import versions
from tests.project.test_dependencies import locked_versions
from tests.support import ROOT


@pytest.fixture
def installed(monkeypatch):
    """Fake installed metadata: the tested versions, editable per test; the warning not yet given in this process."""
    fake = {"hypercorn": "0.18.0", "quart": "0.22.0", "quart-trio": "0.12.0", "h11": "0.16.0", "httpx": "0.29.3",
            "trio": "0.35.0"}

    def version(name: str) -> str:
        if name not in fake:
            raise metadata.PackageNotFoundError(name)
        return fake[name]

    monkeypatch.setattr(versions.metadata, "version", version)
    monkeypatch.setattr(versions, "_warned", False)
    return fake


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "moonrelay" and r.levelno == logging.WARNING]


def test_tested_versions_allow_fast_paths_quietly(installed, caplog):
    assert versions.untested_frameworks() == []
    assert versions.mode_allows("auto") is True
    assert versions.mode_allows("") is True  # unset means auto
    assert warnings_of(caplog) == []


def test_one_bumped_framework_turns_fast_paths_off_with_one_warning_line(installed, caplog):
    installed["hypercorn"] = "0.19.0"
    assert versions.untested_frameworks() == ["hypercorn 0.19.0 (tested ==0.18.0)"]
    assert versions.mode_allows("auto") is False
    assert versions.mode_allows("auto") is False  # asked again (another worker start): no second line
    [line] = warnings_of(caplog)
    assert "\n" not in line
    assert "hypercorn 0.19.0 (tested ==0.18.0)" in line and "fast paths off" in line and "force" in line


def test_every_untested_framework_is_named_in_the_one_line(installed, caplog):
    installed["h11"] = "0.17.0"
    installed["trio"] = "0.36.0"  # past the tested minor
    installed["httpx"] = "0.29.9"  # a patch of the tested minor: still tested
    del installed["quart-trio"]
    assert versions.untested_frameworks() == [
        "quart-trio not installed (tested ==0.12.0)",
        "h11 0.17.0 (tested ==0.16.0)",
        "trio 0.36.0 (tested >=0.35.0,<0.36)",
    ]
    assert versions.mode_allows("auto") is False
    [line] = warnings_of(caplog)
    assert "quart-trio not installed" in line and "h11 0.17.0" in line and "trio 0.36.0" in line


def test_a_prerelease_is_untested(installed):
    installed["trio"] = "0.35.1rc1"  # inside the tested minor, but nobody tested a prerelease
    installed["hypercorn"] = "0.18.0.post1"  # a post-release is a different build: untested under an exact pin
    assert versions.untested_frameworks() == [
        "hypercorn 0.18.0.post1 (tested ==0.18.0)",
        "trio 0.35.1rc1 (tested >=0.35.0,<0.36)",
    ]


def test_forced_off_is_off_without_a_warning(installed, caplog):
    assert versions.mode_allows("off") is False
    installed["quart"] = "0.23.0"
    assert versions.mode_allows("off") is False
    assert versions.mode_allows(" OFF ") is False
    assert warnings_of(caplog) == []


def test_force_ignores_the_gate(installed, caplog):
    installed["quart"] = "0.23.0"
    assert versions.mode_allows("force") is True
    assert warnings_of(caplog) == []


def test_an_unknown_setting_is_refused(installed):
    with pytest.raises(ValueError, match="MOONRELAY_FAST_PATHS='yes'.*auto, off, force"):
        versions.mode_allows("yes")


def test_pyproject_pins_are_the_tested_table():
    """One truth in two places: pyproject.toml's pins (what pip installs) and TESTED (what the gate allows)."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = {canonicalize_name(r.name): r.specifier for r in map(Requirement, deps)}
    for name, spec in versions.TESTED.items():
        assert pinned[canonicalize_name(name)] == SpecifierSet(spec), name


def test_the_lock_pins_tested_versions():
    locked = locked_versions()
    for name, spec in versions.TESTED.items():
        assert SpecifierSet(spec).contains(locked[canonicalize_name(name)]), name


def test_this_environment_runs_the_tested_frameworks():
    """The suite's own venv (./dev, from the lock) is the tested set, so the contract tests see the fast paths."""
    assert versions.untested_frameworks() == []


_BUMPED_RELAY = """
import sys
from importlib import metadata
real = metadata.version
metadata.version = lambda name: "0.99.0" if name == "hypercorn" else real(name)
from proxy.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
async def test_a_bumped_framework_warns_once_per_relay_and_serves_on_the_plain_path(monkeypatch, tmp_path):
    """Two forked workers, one warning line: the gate runs in the parent before the fork."""
    import httpx
    import trio

    monkeypatch.delenv(versions.FAST_PATHS_ENV, raising=False)
    argv = [sys.executable, "-c", _BUMPED_RELAY, "--bind", "127.0.0.1:0", "--workers", "2",
            "--upstream", "http://127.0.0.1:9/v1"]  # fmt: skip
    with open(tmp_path / "stderr", "wb") as log:  # noqa: ASYNC230 - the child writes to it
        proc = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, stderr=log, cwd=ROOT)
        try:
            seen = b""
            with trio.fail_after(30):
                while b"moonrelay listening on " not in seen or not seen.endswith(b"\n"):
                    data = await proc.stdout.receive_some(4096)
                    assert data, seen
                    seen += data
            root = seen.split(b"moonrelay listening on ", 1)[1].split()[0].decode()
            async with httpx.AsyncClient(timeout=10) as client:
                assert (await client.get(root + "/healthz")).status_code == 200
        finally:
            proc.terminate()
            with trio.fail_after(20):
                await proc.wait()
    err = (tmp_path / "stderr").read_text()
    lines = [line for line in err.splitlines() if "fast paths off" in line]
    assert len(lines) == 1, err
    assert "hypercorn 0.99.0 (tested ==0.18.0)" in lines[0]
