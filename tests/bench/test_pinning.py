"""bench/pinning.py: which core runs what, and the command lines that apply it."""

import pytest

from bench.pinning import Pinning, pinned, plan


def test_proxy_gets_its_core_and_the_rig_every_other():
    p = plan(0, {0, 1})
    assert p == Pinning(proxy=(0,), rig=(1,))
    assert plan(2, [3, 0, 2, 1]) == Pinning(proxy=(2,), rig=(0, 1, 3))
    assert "proxy on core 0" in p.describe() and "core(s) 1" in p.describe()


def test_no_core_no_pinning():
    assert plan(None, {0, 1}) is None
    assert pinned(["python", "-m", "x"], None) == ["python", "-m", "x"]


def test_pinned_command_runs_under_taskset():
    assert pinned(["python", "-m", "proxy"], (0,)) == ["taskset", "-c", "0", "python", "-m", "proxy"]
    assert pinned(["python"], (1, 3)) == ["taskset", "-c", "1,3", "python"]


@pytest.mark.parametrize("core, available", [(5, {0, 1}), (0, {0})])
def test_impossible_pinning_is_refused(core, available):
    with pytest.raises(ValueError):
        plan(core, available)
