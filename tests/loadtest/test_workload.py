"""Workloads, sans I/O: length distributions, datasets (ShareGPT, JSON lines), requests as a function of (seed, i)."""

import random
import statistics
from collections import Counter
from pathlib import Path

import pytest

from loadtest.simcontent import prompt_tokens
from loadtest.workload import Distribution, Prompt, Workload, load_dataset, parse_dataset, parse_distribution

DATA = Path(__file__).parent / "data"


def test_distribution_specs_parse_and_print_back():
    for spec in ("fixed:256", "uniform:64,512", "normal:256,64", "lognormal:200,150,max=4096",
                 "normal:100,30,min=16,max=300"):
        assert str(parse_distribution(spec)) == spec
    assert parse_distribution("128") == Distribution("fixed", 128)
    assert parse_distribution(" Uniform:1,3 ") == Distribution("uniform", 1, 3)


@pytest.mark.parametrize("spec", [
    "", "fixed", "fixed:0", "fixed:1.5", "uniform:5", "uniform:9,3", "uniform:0,3", "normal:10", "normal:10,-1",
    "lognormal:0,1", "gamma:1,2", "normal:10,2,min=0", "normal:10,2,min=5,max=4", "normal:10,2,mode=3",
    "normal:nan,1",
])
def test_bad_distribution_specs_are_refused(spec):
    with pytest.raises(ValueError):
        parse_distribution(spec)


def _draw(spec: str, n: int = 20_000) -> list[int]:
    d, rng = parse_distribution(spec), random.Random(7)
    return [d.sample(rng) for _ in range(n)]


def test_samples_follow_their_distribution():
    assert set(_draw("fixed:33", 50)) == {33}
    u = _draw("uniform:3,6")
    assert set(u) == {3, 4, 5, 6} and min(Counter(u).values()) > 4500
    n = _draw("normal:500,50")
    assert statistics.fmean(n) == pytest.approx(500, abs=2) and statistics.pstdev(n) == pytest.approx(50, rel=0.03)
    # lognormal is given by the lengths' own mean and sd: a long right tail, median below the mean
    ln = _draw("lognormal:200,150")
    assert statistics.fmean(ln) == pytest.approx(200, rel=0.03) and statistics.pstdev(ln) == pytest.approx(150, rel=0.1)
    assert statistics.median(ln) < 180 and min(ln) >= 1
    clamped = _draw("normal:10,40,min=5,max=20")
    assert min(clamped) == 5 and max(clamped) == 20


def test_sharegpt_fixture():
    prompts = load_dataset(str(DATA / "sharegpt_small.json"))
    assert len(prompts) == 5
    first, system, gpt_first, no_reply, cjk = prompts
    # The first human turn is the prompt; its reply's length (as the sim counts tokens) is the output length.
    assert first.messages == [{"role": "user", "content": "What is the far side of the moon like?"}]
    assert first.output_tokens == 14
    assert [m["role"] for m in system.messages] == ["system", "user"] and system.output_tokens == 9
    assert gpt_first.messages == [{"role": "user", "content": "Name the lunar phases."}]
    assert no_reply.output_tokens is None
    assert cjk.output_tokens == len("月の裏側は地球から見えません")  # CJK: one token per character


def test_jsonl_fixture():
    prompts = load_dataset(str(DATA / "prompts_small.jsonl"))
    assert prompts == [
        Prompt([{"role": "user", "content": "Summarise the Apollo program."}], 64),
        Prompt([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why are there tides?"}], 12),
        Prompt([{"role": "user", "content": "What is regolith?"}], None),
        Prompt([{"role": "user", "content": "Is there water on the moon?"}], 7),
    ]


@pytest.mark.parametrize(("text", "where"), [
    ('{"prompt": 5}\n', "x:1"),
    ('"ok"\n{"max_tokens": 0, "prompt": "a"}\n', "x:2"),
    ('"ok"\nnot json\n', "x:2"),
    ('[{"conversations": [{"from": "alien", "value": "hi"}]}]', "x[0]"),
    ('[{"conversations": [{"from": "gpt", "value": "hi"}]}]', "x[0]"),
    ('[{"messages": []}]', "x[0]"),
    ("\n\n", "x: no prompts"),
])
def test_bad_datasets_name_the_item(text, where):
    with pytest.raises(ValueError, match=where.replace("[", r"\[").replace("]", r"\]")):
        parse_dataset(text, "x")


def test_dataset_order_is_seeded_and_uses_each_prompt_once_per_round():
    prompts = [Prompt([{"role": "user", "content": f"p{k}"}], k + 1) for k in range(7)]
    w = Workload(prompts=prompts, seed=3)
    first = [w.request(i).key for i in range(7)]
    assert sorted(first) == list(range(7)) and first != list(range(7))
    assert [w.request(i).key for i in range(7, 14)] == first
    assert [w.request(i).max_tokens for i in range(7)] == [k + 1 for k in first]
    assert [Workload(prompts=prompts, seed=3).request(i).key for i in range(7)] == first
    assert [Workload(prompts=prompts, seed=4).request(i).key for i in range(7)] != first


def test_synthetic_requests_are_a_function_of_seed_and_index():
    w = Workload(input_tokens=parse_distribution("uniform:4,2000"), output_tokens=parse_distribution("normal:50,10"),
                 seed=11)
    reqs = [w.request(i) for i in range(200)]
    again = Workload(input_tokens=w.input_tokens, output_tokens=w.output_tokens, seed=11)
    assert [again.request(i) for i in reversed(range(200))] == reqs[::-1]  # any order: the same requests
    other = Workload(input_tokens=w.input_tokens, output_tokens=w.output_tokens, seed=12)
    assert [other.request(i).max_tokens for i in range(200)] != [r.max_tokens for r in reqs]
    rng = random.Random("11/5")
    assert prompt_tokens(reqs[5].messages) == w.input_tokens.sample(rng)  # the sim counts what was drawn
    assert all(r.key is None for r in reqs)
    assert len({r.messages[0]["content"][:200] for r in reqs}) == 200  # no shared prefixes to cache


def test_synthetic_prompts_longer_than_the_corpus_wrap():
    from loadtest.workload import CORPUS_WORDS, synthetic_messages

    msgs = synthetic_messages(CORPUS_WORDS + 1000, random.Random(1))
    assert prompt_tokens(msgs) == CORPUS_WORDS + 1000
    assert prompt_tokens(synthetic_messages(1, random.Random(1))) == 4  # one word is the least


def test_fixed_output_keeps_dataset_requests_cacheable():
    w = Workload.of_messages([[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]], max_tokens=9)
    assert {(w.request(i).key, w.request(i).max_tokens) for i in range(4)} == {(0, 9), (1, 9)}
    assert w.describe() == {"source": "prompt", "seed": 0, "input_tokens": None, "output_tokens": "fixed:9",
                            "prompts": 2, "prompts_with_output_length": 0}
    with pytest.raises(ValueError):
        Workload()
