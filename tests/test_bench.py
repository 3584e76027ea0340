"""bench/ pieces that need no peer: log trimming, the target lists, scenario flags."""

from bench.peers import DEFAULT_TARGETS, PEERS, TARGETS
from bench.run import trim_log
from bench.scenarios import SCENARIOS


def test_trim_log_keeps_head_and_tail(tmp_path):
    log = tmp_path / "moonrelay.log"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(10_000)))
    trim_log(log, limit=1_000, head=3, tail=2)
    assert log.read_bytes() == b"line 0\nline 1\nline 2\n[bench: 9,995 lines cut of 10,000]\nline 9998\nline 9999\n"


def test_trim_log_leaves_small_logs(tmp_path):
    log = tmp_path / "sim.log"
    log.write_bytes(b"sim listening on http://127.0.0.1:1\n")
    trim_log(log, limit=1_000)
    assert log.read_bytes() == b"sim listening on http://127.0.0.1:1\n"


def test_quiet_moonrelay_runs_only_on_request():
    assert "moonrelay-quiet" in TARGETS and "moonrelay-quiet" not in DEFAULT_TARGETS
    quiet = PEERS["moonrelay-quiet"].launch("http://127.0.0.1:1/v1", None, 2)
    loud = PEERS["moonrelay"].launch("http://127.0.0.1:1/v1", None, 2)
    assert quiet.argv == loud.argv
    assert quiet.env["MOONRELAY_ACCESS_LOG"] == "off" and quiet.env["MOONRELAY_METRICS"] == "off"
    assert "MOONRELAY_ACCESS_LOG" not in loud.env


def test_hold_scenario_flags():
    hold = SCENARIOS["hold"]
    assert hold.loadtest_flags() == ["-c", "10000", "--duration", "60", "--ramp-up", "10"]
    assert hold.scaled(0.1).streams == 1_000
