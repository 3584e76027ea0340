"""Client keys' limits without sockets: the keys file (proxy/limits/_keys.py), the checks and their settling in a
LocalStore on a fake clock (proxy/limits/_keylimits.py), the headers' formats, the usage both shapes report."""

from __future__ import annotations

import re

import pytest

from proxy import auth
from proxy.auth import load_client_keys
from proxy.config import Settings
from proxy.limits import (
    ClientKey,
    ClientLimits,
    KeysFileError,
    LocalStore,
    Refusal,
    defaults,
    openai_duration,
    parse_keys_file,
)
from proxy.observability import scan_tail
from tests.relay.unit.test_store import FakeClock
from tests.support import ROOT

MINUTE_START = 1_000_020.0  # a multiple of 60: a minute starts here


def key(**limits) -> ClientKey:
    return ClientKey(id="0123456789abcdef", label="web", **limits)


def test_keys_file_fields_and_defaults():
    text = "# team\nsk-web  name=web rpm=60 tpm=40000 concurrent=5 budget=1000000/1d\n\nsk-plain\nsk-free rpm=0\n"
    base = defaults(rpm=10, budget="500/6h")
    (k1, web), (k2, plain), (k3, free) = parse_keys_file(text, base)
    assert (k1, k2, k3) == ("sk-web", "sk-plain", "sk-free")
    assert (web.label, web.rpm, web.tpm, web.concurrent) == ("web", 60, 40000, 5)
    assert (web.budget, web.budget_s) == (10**6, 86400)
    assert plain.rpm == 10 and plain.budget == 500 and plain.budget_s == 6 * 3600  # the defaults
    assert plain.label == plain.id[:8] and "sk-plain" not in plain.id  # unnamed: its fingerprint
    assert free.rpm == 0 and free.budget == 500 and free.limited  # rpm=0 lifts the default for this key only
    assert not ClientKey().limited and web.counts_tokens and not key(rpm=1, concurrent=1).counts_tokens
    assert parse_keys_file("k budget=7/h\nj budget=7/30d")[0][1].budget_s == 3600
    assert parse_keys_file("k budget=7/h\nj budget=7/30d")[1][1].budget_s == 30 * 86400


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("sk-secret-1 rmp=5", "unknown field 'rmp'"),
        ("sk-secret-1 rpm=5 rpm=6", "rpm given twice"),
        ("sk-secret-1 rpm=-1", "expected a whole number"),
        ("sk-secret-1 tpm=1e3", "expected a whole number"),
        ("sk-secret-1 budget=1000", "needs a period"),
        ("sk-secret-1 budget=1000/1w", "expected h, d, Nh or Nd"),
        ("sk-secret-1 budget=1000/0d", "expected h, d, Nh or Nd"),
        ("sk-secret-1 name=a\nsk-secret-2 name=a", "line 2: name 'a' is already"),
        ("sk-secret-1\n# x\nsk-secret-1", "line 3: this key is already"),
        ("name=web sk-secret-1", "starts with its key"),
        ("sk-secret-1 name=has/slash", "name="),
        ("sk-secret-1 rpm", "unknown field 'rpm'"),
    ],
)
def test_keys_file_typos_are_errors_that_never_show_the_key(text, says):
    with pytest.raises(KeysFileError, match=re.escape(says)) as err:
        parse_keys_file(text, source="keys")
    assert "secret" not in str(err.value)


def test_bad_defaults_stop_startup(tmp_path):
    with pytest.raises(KeysFileError):
        load_client_keys(Settings(api_keys="k", key_budget="100"))
    with pytest.raises(KeysFileError):
        load_client_keys(Settings(api_keys="k", key_rpm=-1))
    keys = load_client_keys(Settings(api_keys="a,b", key_rpm=5))
    assert keys.identify("a").rpm == 5 and keys.identify("b").id != keys.identify("a").id
    assert keys.identify("c") is None and keys.limited == 2


def test_a_bad_keys_file_is_refused_without_showing_a_key(tmp_path):
    """A reload that meets it keeps the keys in force (tests/relay/functional/test_reload.py)."""
    path = tmp_path / "keys"
    path.write_text("sk-two name=two rpm=two\n")
    with pytest.raises(KeysFileError) as refused:
        load_client_keys(Settings(api_keys_file=str(path)))
    assert "sk-two" not in str(refused.value)
    path.unlink()
    with pytest.raises(KeysFileError):
        load_client_keys(Settings(api_keys_file=str(path)))


def test_a_file_that_changes_while_it_is_read_is_refused_until_it_holds_still(tmp_path, monkeypatch):
    """A writer that rewrites the keys file in place while a reload reads it: half a file must never become the
    keys in force (a cut key would lock its client out, or let a prefix in)."""
    path = tmp_path / "keys"
    path.write_text("sk-two-0123")  # the first half of what the writer means to write...
    read = auth._read

    def read_while_written(f):
        text = read(f)
        with open(path, "a") as rest:  # ...and the rest, written while the relay reads
            rest.write("456789 name=two\n")
        return text

    monkeypatch.setattr(auth, "_read", read_while_written)
    settings = Settings(api_keys_file=str(path))
    with pytest.raises(KeysFileError) as refused:
        load_client_keys(settings)
    assert "changed while it was read" in str(refused.value) and "sk-two" not in str(refused.value)
    monkeypatch.setattr(auth, "_read", read)
    keys = load_client_keys(settings)  # the next reload reads the whole file
    assert keys is not None and keys.identify("sk-two-0123456789") is not None and keys.identify("sk-two-0123") is None


def test_a_keys_file_that_cannot_be_read_says_which_and_why(tmp_path):
    with pytest.raises(KeysFileError, match=r"api_keys_file '.*missing': No such file or directory$"):
        load_client_keys(Settings(api_keys_file=str(tmp_path / "missing")))


def test_openai_durations():
    assert [openai_duration(s) for s in (0.0169, 0.0001, 1, 1.2, 59.5, 60, 360, 3723)] == [
        "17ms", "1ms", "1s", "2s", "1m0s", "1m0s", "6m0s", "1h2m3s"
    ]  # fmt: skip


async def test_rpm_refuses_past_its_number_until_the_next_minute():
    clock = FakeClock(MINUTE_START + 15)
    limits = ClientLimits(LocalStore(clock))
    k = key(rpm=3)
    got = [await limits.admit(k) for _ in range(3)]
    assert [a.headers["x-ratelimit-remaining-requests"] for a in got] == ["2", "1", "0"]
    assert got[0].headers["x-ratelimit-limit-requests"] == "3" and got[0].headers["x-ratelimit-reset-requests"] == "45s"
    refused = await limits.admit(k)
    assert isinstance(refused, Refusal) and refused.limit == "rpm" and refused.status == 429
    assert refused.response_headers()["retry-after"] == "45"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.body()["error"]["code"] == "rate_limit_exceeded" and refused.body()["error"]["type"] == "requests"
    assert isinstance(await limits.admit(k), Refusal)  # a refusal does not count itself
    clock.now = MINUTE_START + 60
    assert not isinstance(await limits.admit(k), Refusal)


async def test_concurrent_leases_and_release():
    store = LocalStore(FakeClock(MINUTE_START))
    limits = ClientLimits(store)
    k = key(concurrent=2, rpm=100)
    a, b = await limits.admit(k), await limits.admit(k)
    refused = await limits.admit(k)
    assert isinstance(refused, Refusal) and refused.limit == "concurrent"
    assert refused.response_headers()["retry-after"] == "1"
    assert refused.headers["x-ratelimit-remaining-requests"] == "98"  # the refused one did not count as a request
    await a.settle(None)
    await a.settle(None)  # twice: one slot back, not two
    c = await limits.admit(k)
    assert not isinstance(c, Refusal) and isinstance(await limits.admit(k), Refusal)
    await b.settle(None)
    await c.settle(None)
    assert await store.held(f"key:{k.id}:concurrent") == 0


async def test_a_refusal_by_a_window_gives_the_slot_back():
    store = LocalStore(FakeClock(MINUTE_START))
    limits = ClientLimits(store)
    k = key(concurrent=5, rpm=1)
    await limits.admit(k)
    assert isinstance(await limits.admit(k), Refusal)
    assert await store.held(f"key:{k.id}:concurrent") == 1  # the admitted one only


async def test_tpm_counts_reported_tokens_after_the_response():
    clock = FakeClock(MINUTE_START + 50)
    limits = ClientLimits(LocalStore(clock))
    k = key(tpm=100)
    first = await limits.admit(k)
    assert first.headers["x-ratelimit-remaining-tokens"] == "100" and first.headers["x-ratelimit-reset-tokens"] == "10s"
    await first.settle(99)
    second = await limits.admit(k)
    assert second.headers["x-ratelimit-remaining-tokens"] == "1"  # under the limit: let through
    await second.settle(5)  # tokens are only known afterwards: a window may end over its limit
    refused = await limits.admit(k)
    assert isinstance(refused, Refusal) and refused.limit == "tpm" and refused.body()["error"]["type"] == "tokens"
    assert refused.response_headers()["retry-after"] == "10" and refused.headers["x-ratelimit-remaining-tokens"] == "0"
    clock.now = MINUTE_START + 60
    assert not isinstance(await limits.admit(k), Refusal)


async def test_budget_refuses_until_its_period_ends():
    hour = 3600 * 300  # an hour boundary since the epoch
    clock = FakeClock(hour + 600)
    limits = ClientLimits(LocalStore(clock))
    k = key(budget=1000, budget_s=3600)
    await (await limits.admit(k)).settle(1000)
    clock.now = hour + 1800  # other minutes: the budget remembers
    refused = await limits.admit(k)
    assert isinstance(refused, Refusal) and refused.limit == "budget"
    assert refused.body()["error"]["code"] == "insufficient_quota"
    assert refused.response_headers()["retry-after"] == "1800"
    clock.now = hour + 3600
    assert not isinstance(await limits.admit(k), Refusal)


def test_usage_of_both_shapes_counts_total_tokens():
    moonshot = (b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop","usage":{"prompt_tokens":3,'
                b'"completion_tokens":4,"total_tokens":7}}]}\n\ndata: [DONE]\n\n')  # fmt: skip
    openai = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}\n\n'
    assert scan_tail(moonshot, whole_json=False).total_tokens == 7
    assert scan_tail(openai, whole_json=False).total_tokens == 8
    whole = b'{"choices":[{"message":{}}],"usage":{"prompt_tokens":2,"completion_tokens":2}}'
    assert scan_tail(whole, whole_json=True).total_tokens == 4  # no total_tokens: prompt + completion


def test_the_reference_example_loads():
    """docs/reference.md's keys file example is a real one."""
    text = (ROOT / "docs" / "reference.md").read_text()
    block = re.search(r"```text\n(# moonrelay keys file.*?)```", text, re.S)
    assert block is not None
    keys = parse_keys_file(block.group(1), defaults(rpm=600))
    assert len(keys) >= 3 and all(limits.limited for _, limits in keys)


def test_a_typo_in_the_keys_file_stops_startup(tmp_path, capsys):
    from proxy.__main__ import main

    path = tmp_path / "keys"
    path.write_text("mr-secret-web name=web rpm=60\nmr-secret-ops name=ops tmp=100\n")
    assert main(["--api-keys-file", str(path)]) == 2
    err = capsys.readouterr().err
    assert "line 2: unknown field 'tmp'" in err and "mr-secret" not in err
