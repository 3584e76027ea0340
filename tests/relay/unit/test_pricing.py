"""What a request costs in money, sans I/O (proxy/pricing.py): the config file's [prices] table, its mistakes, the
sum in micro-units; budgets in money in the keys file (proxy/limits/_keys.py), reserved and settled in money by a
client key's windows in a LocalStore (proxy/limits/_keylimits.py, _tokens.py)."""

from __future__ import annotations

import pytest

from proxy.config import load
from proxy.limits import Charge, ClientKey, ClientLimits, KeysFileError, LocalStore, Refusal, parse_keys_file
from proxy.pricing import MICROS, Price, PriceError, PriceTable, parse_money, parse_prices
from tests.relay.unit.test_store import FakeClock

DAY = 86400 * 20_000  # a day boundary since the epoch


def test_the_table_prices_exact_names_then_patterns_in_order_then_star(caplog) -> None:
    table = parse_prices({
        "moonshot-v1-8k": {"input": 0.2, "output": 2, "cached_input": 0.05},
        "kimi-*": {"input": 0.6, "output": 2.5},
        "kimi-k2-*": {"input": 9, "output": 9},  # after kimi-*: never reached
        "*": {"input": 1, "output": 1},
    })  # fmt: skip
    assert table.of("moonshot-v1-8k") == Price(0.2, 2.0, 0.05)
    assert table.of("kimi-k2-0711-preview") == Price(0.6, 2.5, 0.6)  # cached_input defaults to input
    assert table.of("anything") == Price(1.0, 1.0, 1.0)
    assert parse_prices({"gpt-4o": {"input": 2.5, "output": 10}}).of("other") is None
    assert "no entry prices model 'other'" in caplog.text
    assert not PriceTable() and PriceTable().of("x") is None


def test_a_cost_is_whole_micro_units_with_cached_input_at_its_own_price() -> None:
    price = Price(input=0.2, output=2.0, cached_input=0.05)
    # 1,000 prompt tokens (400 of them cached) and 500 completion tokens: 600×0.2 + 400×0.05 + 500×2 micro-units
    assert price.cost(1000, 500, 400) == 120 + 20 + 1000
    assert price.cost(100, 0, 999) == 100 * 0.05  # never more cached than prompt
    assert parse_money("$20", "x") == 20 * MICROS and parse_money("0.5", "x") == MICROS // 2


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ({"m": {"input": 1}}, "'output' is required"),
        ({"m": {"input": -1, "output": 1}}, "must be a number ≥ 0"),
        ({"m": {"input": "1", "output": 1}}, "must be a number ≥ 0"),
        ({"m": {"input": True, "output": 1}}, "must be a number ≥ 0"),
        ({"m": {"input": 1, "output": 1, "cache_input": 1}}, "unknown field(s) cache_input"),
        ({"m": 3}, "expected a table"),
        ({"a model": {"input": 1, "output": 1}}, "without spaces"),
        ([1, 2], "expected a table of models"),
    ],
)
def test_a_table_with_a_mistake_is_refused_naming_it(table, says) -> None:
    with pytest.raises(PriceError, match=None) as raised:
        parse_prices(table)
    assert says in str(raised.value)


def test_the_config_file_carries_prices_and_a_bad_one_stops_startup(tmp_path, capsys) -> None:
    from proxy.__main__ import main

    path = tmp_path / "relay.toml"
    path.write_text('[prices."moonshot-v1-8k"]\ninput = 0.2\noutput = 2.0\n')
    assert load({}, {}, str(path)).prices == {"moonshot-v1-8k": {"input": 0.2, "output": 2.0}}
    path.write_text('[prices."moonshot-v1-8k"]\ninput = 0.2\n')
    assert main(["--config", str(path)]) == 2
    assert "prices.'moonshot-v1-8k': 'output' is required" in capsys.readouterr().err
    path.write_text('[price."moonshot-v1-8k"]\ninput = 0.2\noutput = 1\n')
    assert main(["--config", str(path)]) == 2
    assert "unknown table [price] (did you mean 'prices'?)" in capsys.readouterr().err


def test_a_budget_in_money_in_the_keys_file() -> None:
    ((_, team),) = parse_keys_file("sk-team name=team budget=$20/30d cache=on\n")
    assert (team.money, team.budget, team.budget_s, team.cache) == (20 * MICROS, 0, 30 * 86400, True)
    for bad, says in (("budget=$20", "needs a period"), ("budget=$x/1d", "not an amount of money"),
                      ("budget=$-1/1d", "not an amount of money"), ("cache=yes", "expected on or off")):  # fmt: skip
        with pytest.raises(KeysFileError) as raised:
            parse_keys_file(f"sk-secret {bad}\n")
        assert says in str(raised.value) and "sk-secret" not in str(raised.value)


async def test_a_budget_in_money_reserves_and_settles_in_money() -> None:
    clock = FakeClock(DAY + 60)
    limits = ClientLimits(LocalStore(clock))
    key = ClientKey(id="0123456789abcdef", label="team", money=10_000, budget_s=86400)  # $0.01 a day
    price = Price(input=1000.0, output=2000.0, cached_input=1000.0)  # per million tokens: 1,000 µ$ a prompt token
    first = await limits.admit(key)
    assert not isinstance(first, Refusal)
    charge = Charge.of("/v1/chat/completions", {"max_tokens": 1}, 40, 1024, price)
    assert (charge.reserve, charge.reserve_cost) == (11, 10 * 1000 + 1 * 2000)
    assert await limits.reserve(first, charge.reserve, charge.reserve_cost) is None
    await first.settle(charge.tokens(), 7_000)  # what the answer cost
    second = await limits.admit(key)  # 7,000 of 10,000 spent
    assert not isinstance(second, Refusal)
    await second.settle(6, 7_000)
    refused = await limits.admit(key)
    assert isinstance(refused, Refusal) and refused.limit == "budget"
    error = refused.body()["error"]
    assert error["code"] == "insufficient_quota" and "$0.01 for this period ($0.01 used)" in error["message"]
