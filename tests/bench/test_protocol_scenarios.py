"""The token-rate scenario in Anthropic Messages and OpenAI Responses: its flags, the relays that answer it natively
and by translation, and a whole run against the sim's native routes (``direct``) over real sockets."""

import dataclasses
import tomllib

import pytest

from bench.archive import _shape
from bench.peers import DEFAULT_TARGETS, PEERS
from bench.run import one_run
from bench.scenarios import SCENARIOS

SIM = "http://127.0.0.1:1/v1"


def test_the_protocol_scenarios_are_token_rate_in_another_protocol():
    chat = SCENARIOS["token-rate"]
    for api in ("messages", "responses"):
        sc = SCENARIOS[f"token-rate-{api}"]
        assert dataclasses.replace(sc, name=chat.name, goal=chat.goal, api="chat") == chat
        assert sc.sim_flags() == chat.sim_flags()
        flags = sc.loadtest_flags()
        assert flags[flags.index("--api") + 1] == api
    # Messages requires max_tokens, and the sim answers with exactly that many: the shape's 300 tokens.
    messages = SCENARIOS["token-rate-messages"].loadtest_flags()
    assert messages[messages.index("--max-tokens") + 1] == "300"
    assert "--api" not in chat.loadtest_flags()
    assert "--max-tokens" not in SCENARIOS["token-rate-responses"].loadtest_flags()


def test_runs_from_before_the_api_field_keep_their_scenario():
    stored = dataclasses.asdict(SCENARIOS["token-rate"])
    del stored["api"]
    assert _shape(stored) == _shape(dataclasses.asdict(SCENARIOS["token-rate"]))
    assert _shape(dataclasses.asdict(SCENARIOS["token-rate-messages"]))["api"] == "messages"


@pytest.mark.parametrize("name, api, base", [("moonrelay-anthropic", "anthropic", "http://127.0.0.1:1/anthropic"),
                                             ("moonrelay-responses", "responses", SIM)])
def test_a_native_relay_declares_the_sims_protocol_upstream(tmp_path, name, api, base):
    launch = PEERS[name].launch(SIM, tmp_path, 1, 100)
    config = launch.argv[launch.argv.index("--config") + 1]
    with open(config, "rb") as f:
        (table,) = tomllib.load(f)["upstreams"]
    assert (table["api"], table["base_url"], table["default"]) == (api, base, True)
    assert launch.argv[: launch.argv.index("--config")] == PEERS["moonrelay"].launch(SIM, tmp_path, 1, 100).argv
    assert name not in DEFAULT_TARGETS  # run only when named


@pytest.mark.slow
@pytest.mark.parametrize("api", ["messages", "responses"])
async def test_a_protocol_scenario_runs_against_the_sims_native_route(tmp_path, api):
    """The plumbing of ``bench.run --scenarios token-rate-API``: warm-up, the load generator's --api, the figures."""
    sc = dataclasses.replace(SCENARIOS[f"token-rate-{api}"], streams=3, ttft_s=0.05, ttft_jitter_s=0, chunks=20,
                             interval_s=0.005)
    record = await one_run(sc, "direct", tmp_path / "run")
    assert "error" not in record, record.get("error")
    assert f"--api {api}" in record["loadtest_command"] and record["loadtest_exit"] == 0
    s = record["summary"]
    # A chunk is an event that carries output: 20 tokens a stream, every event stamped by the sim.
    assert (s["completed"], s["verified"], s["failed"], s["chunks"]) == (3, 3, 0, 60)
    assert record["figures"]["completed"] == 3
