"""What each session asks, sans I/O: prompts from a dataset or synthetic ones, output lengths, seeded.

A run's requests are numbered ``0, 1, 2, ...`` across all its load processes and shards, and request ``i`` is a
pure function of ``(seed, i)`` (:meth:`Workload.request`): the same seed sends the same requests, whatever the
timing, the number of ``--workers`` or shards; a run of M sessions sends requests ``0 .. M-1``.

- **Dataset** (``--prompts FILE``): one JSON array or JSON lines, each item a ShareGPT conversation
  (``{"conversations": [{"from": "human", "value": ...}, {"from": "gpt", ...}]}``), ``{"messages": [...]}``,
  ``{"prompt": "..."}`` or a bare string; ``"max_tokens"`` / ``"output_tokens"`` on an item, or the length of a
  ShareGPT conversation's first reply, is that prompt's output length. The prompts are taken in an order shuffled
  by the seed, each once before any repeats.
- **Synthetic** (``--input-tokens DIST``): a user message of that many tokens as the simulator counts them (one per
  whitespace word, plus 3 for the message: :func:`loadtest.simcontent.prompt_tokens`), cut at a seeded offset from
  a fixed random text, so no two requests share a prefix a server could cache.
- **Output length** (``--output-tokens DIST``, or ``--max-tokens N`` = ``fixed:N``): sent as ``max_tokens``; the
  simulator answers with exactly that many tokens.

Distributions (:func:`parse_distribution`): ``N`` / ``fixed:N``, ``uniform:LO,HI`` (integers, both included),
``normal:MEAN,SD``, ``lognormal:MEAN,SD`` (the mean and standard deviation of the lengths themselves, not of their
logarithm), each optionally followed by ``,min=A`` and ``,max=B``; a sample is rounded to an integer and clamped to
``[min, max]`` (``min`` defaults to 1).
"""

from __future__ import annotations

import functools
import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from loadtest.simcontent import VOCABULARY, prompt_tokens

__all__ = [
    "DISTRIBUTIONS", "Distribution", "Prompt", "Request", "Workload", "load_dataset", "parse_dataset",
    "parse_distribution", "synthetic_messages",
]

DISTRIBUTIONS = ("fixed", "uniform", "normal", "lognormal")
MESSAGE_TOKENS = 3  # what the simulator adds per message (loadtest.simcontent.prompt_tokens)
CORPUS_WORDS = 1 << 16  # the random text synthetic prompts are cut from; longer prompts wrap around it
_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
          "bard": "assistant", "bing": "assistant", "model": "assistant", "system": "system"}


@dataclass(frozen=True)
class Distribution:
    """A length distribution; :meth:`sample` draws an integer in ``[lo, hi]`` from a ``random.Random``."""

    kind: str
    a: float
    b: float = 0.0
    lo: int = 1
    hi: int | None = None

    def sample(self, rng: random.Random) -> int:
        kind = self.kind
        if kind == "fixed":
            x = self.a
        elif kind == "uniform":
            x = rng.randint(int(self.a), int(self.b))
        elif kind == "normal":
            x = rng.normalvariate(self.a, self.b)
        else:  # lognormal, from the lengths' own mean and sd
            sigma2 = math.log1p((self.b / self.a) ** 2)
            x = rng.lognormvariate(math.log(self.a) - sigma2 / 2, math.sqrt(sigma2))
        return self.clamp(x)

    def clamp(self, x: float) -> int:
        """``x`` rounded and held to ``[lo, hi]``."""
        n = max(self.lo, round(x))
        return n if self.hi is None else min(n, self.hi)

    def __str__(self) -> str:
        args = {"fixed": f"{self.a:g}", "uniform": f"{self.a:g},{self.b:g}"}.get(self.kind, f"{self.a:g},{self.b:g}")
        bounds = (f",min={self.lo}" if self.lo != 1 else "") + (f",max={self.hi}" if self.hi is not None else "")
        return f"{self.kind}:{args}{bounds}"


def parse_distribution(spec: str) -> Distribution:
    """A distribution from its spec: ``"256"``, ``"fixed:256"``, ``"uniform:64,512"``, ``"normal:256,64,min=16"``,
    ``"lognormal:200,150,max=4096"`` (the module docstring has the rules)."""
    text = spec.strip()
    kind, sep, rest = text.partition(":")
    if not sep:
        kind, rest = "fixed", text
    kind = kind.strip().lower()
    if kind not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {kind!r} in {spec!r}; known: {', '.join(DISTRIBUTIONS)}")
    numbers: list[float] = []
    bounds: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        try:
            if eq:
                if key.strip() not in ("min", "max"):
                    raise ValueError
                bounds[key.strip()] = int(value)
            else:
                numbers.append(float(part))
        except ValueError:
            raise ValueError(f"bad distribution {spec!r}: {part!r}") from None
    want = 1 if kind == "fixed" else 2
    if len(numbers) != want or not all(math.isfinite(x) for x in numbers):
        shape = {"fixed": "fixed:N", "uniform": "uniform:LO,HI"}.get(kind, f"{kind}:MEAN,SD")
        raise ValueError(f"bad distribution {spec!r}: expected {shape}[,min=A][,max=B]")
    a, b = numbers[0], numbers[1] if want == 2 else 0.0
    lo, hi = bounds.get("min", 1), bounds.get("max")
    if lo < 1 or (hi is not None and hi < lo):
        raise ValueError(f"bad distribution {spec!r}: need 1 <= min <= max")
    if kind == "fixed" and (a != int(a) or a < 1):
        raise ValueError(f"bad distribution {spec!r}: a fixed length is a positive integer")
    if kind == "uniform" and (a != int(a) or b != int(b) or not 1 <= a <= b):
        raise ValueError(f"bad distribution {spec!r}: uniform:LO,HI needs integers 1 <= LO <= HI")
    if kind in ("normal", "lognormal") and (b < 0 or (kind == "lognormal" and a <= 0)):
        raise ValueError(f"bad distribution {spec!r}: need SD >= 0" + (" and MEAN > 0" if kind == "lognormal" else ""))
    return Distribution(kind, a, b, lo, hi)


# --- datasets ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prompt:
    """One dataset prompt: the messages to send, and the output length it asks for (None: the dataset says none)."""

    messages: list[dict[str, Any]]
    output_tokens: int | None = None


def _words(text: str) -> int:
    """Tokens of ``text`` as the simulator counts them."""
    return prompt_tokens([{"content": text}]) - MESSAGE_TOKENS


def _from_sharegpt(turns: Sequence[Any], where: str) -> Prompt:
    """The turns up to the first human one (a system turn before it is kept); its reply sets the output length."""
    messages: list[dict[str, Any]] = []
    for k, turn in enumerate(turns):
        if not isinstance(turn, Mapping) or not isinstance(turn.get("value"), str):
            raise ValueError(f"{where}: a conversation turn needs 'from' and a string 'value'")
        role = _ROLES.get(str(turn.get("from", "")).lower())
        if role is None:
            raise ValueError(f"{where}: unknown speaker {turn.get('from')!r}")
        if role == "assistant" and not messages:
            continue  # a conversation that opens with the model's turn: start at the first human one
        messages.append({"role": role, "content": turn["value"]})
        if role == "user":
            reply = turns[k + 1] if k + 1 < len(turns) else None
            out = None
            if isinstance(reply, Mapping) and _ROLES.get(str(reply.get("from", "")).lower()) == "assistant":
                out = max(1, _words(str(reply.get("value", ""))))
            return Prompt(messages, out)
    raise ValueError(f"{where}: the conversation has no human turn")


def _output_field(item: Mapping[str, Any], where: str) -> int | None:
    for key in ("output_tokens", "max_tokens"):
        if key in item:
            v = item[key]
            if type(v) is not int or v < 1:
                raise ValueError(f"{where}: {key} must be a positive integer")
            return v
    return None


def _prompt_of(item: Any, where: str) -> Prompt:
    if isinstance(item, str):
        return Prompt([{"role": "user", "content": item}])
    if not isinstance(item, Mapping):
        raise ValueError(f"{where}: expected an object or a string")
    out = _output_field(item, where)
    if isinstance(item.get("conversations"), list):
        p = _from_sharegpt(item["conversations"], where)
        return Prompt(p.messages, out if out is not None else p.output_tokens)
    if isinstance(item.get("messages"), list):
        msgs = item["messages"]
        if not msgs or not all(isinstance(m, Mapping) and isinstance(m.get("role"), str) for m in msgs):
            raise ValueError(f"{where}: messages must be a non-empty list of objects with a role")
        return Prompt([dict(m) for m in msgs], out)
    if isinstance(item.get("prompt"), str):
        return Prompt([{"role": "user", "content": item["prompt"]}], out)
    raise ValueError(f"{where}: expected conversations (ShareGPT), messages, prompt or a string")


def parse_dataset(text: str, source: str = "<dataset>") -> list[Prompt]:
    """The prompts of a dataset's text: one JSON array (ShareGPT's files) or JSON lines; errors name the item."""
    stripped = text.lstrip()
    prompts: list[Prompt] = []
    if stripped.startswith("["):
        try:
            items = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{source}: not JSON: {exc}") from None
        for n, item in enumerate(items):
            prompts.append(_prompt_of(item, f"{source}[{n}]"))
    else:
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{source}:{n}: not JSON: {exc}") from None
            prompts.append(_prompt_of(item, f"{source}:{n}"))
    if not prompts:
        raise ValueError(f"{source}: no prompts")
    return prompts


def load_dataset(path: str) -> list[Prompt]:
    """:func:`parse_dataset` of a file."""
    with open(path, encoding="utf-8") as f:
        return parse_dataset(f.read(), path)


# --- synthetic prompts -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _corpus(seed: int) -> tuple[str, tuple[int, ...]]:
    """A fixed random text of ``CORPUS_WORDS`` words and each word's start offset (plus the end)."""
    rng = random.Random(f"{seed}/corpus")
    words = rng.choices(VOCABULARY, k=CORPUS_WORDS)
    offsets = [0]
    for w in words:
        offsets.append(offsets[-1] + len(w) + 1)
    return " ".join(words) + " ", tuple(offsets)


def synthetic_messages(input_tokens: int, rng: random.Random, seed: int = 0) -> list[dict[str, Any]]:
    """One user message the simulator counts as ``input_tokens`` tokens (at least one word: 1 + 3)."""
    text, offsets = _corpus(seed)
    n = max(1, input_tokens - MESSAGE_TOKENS)
    start = rng.randrange(CORPUS_WORDS)
    parts = []
    while n > 0:  # wrap around the corpus for prompts longer than it
        take = min(n, CORPUS_WORDS - start)
        parts.append(text[offsets[start] : offsets[start + take]])
        n -= take
        start = 0
    return [{"role": "user", "content": "".join(parts).rstrip(" ")}]


# --- the workload ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """What one session sends. Requests with the same ``key`` (not None) have the same body."""

    messages: list[dict[str, Any]]
    max_tokens: int | None
    key: int | None


@dataclass
class Workload:
    """Request ``i`` of a run as a pure function of ``(seed, i)``; see the module docstring.

    Exactly one of ``prompts`` (a dataset, or the one ``--prompt``) and ``input_tokens`` is set.
    """

    prompts: list[Prompt] | None = None
    input_tokens: Distribution | None = None
    output_tokens: Distribution | None = None
    seed: int = 0
    source: str = "prompt"  # "prompt", the dataset's path, or "synthetic"
    _order: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if (self.prompts is None) == (self.input_tokens is None):
            raise ValueError("a workload has either prompts or an input length distribution")
        if self.prompts is not None:
            if not self.prompts:
                raise ValueError("no prompts")
            self._order = list(range(len(self.prompts)))
            random.Random(f"{self.seed}/order").shuffle(self._order)
        else:
            self.source = "synthetic"

    @classmethod
    def of_messages(cls, prompts: Sequence[list[dict[str, Any]]], *, max_tokens: int | None = None,
                    seed: int = 0) -> Workload:
        """Plain message lists (``LoadConfig.prompts``) and an optional fixed ``max_tokens``."""
        out = Distribution("fixed", max_tokens) if max_tokens is not None else None
        return cls(prompts=[Prompt(list(m)) for m in prompts], output_tokens=out, seed=seed)

    def request(self, i: int) -> Request:
        """Request number ``i`` (0-based) of the run."""
        out = self.output_tokens
        fixed_out = out is None or out.kind == "fixed"
        if self.prompts is not None and fixed_out:  # nothing to draw: the body depends on the prompt alone
            k = self._order[i % len(self._order)]
            prompt = self.prompts[k]
            return Request(prompt.messages, prompt.output_tokens if out is None else out.clamp(out.a), k)
        rng = random.Random(f"{self.seed}/{i}")
        if self.prompts is not None:
            messages = self.prompts[self._order[i % len(self._order)]].messages
        else:
            assert self.input_tokens is not None
            messages = synthetic_messages(self.input_tokens.sample(rng), rng, self.seed)
        return Request(messages, None if out is None else out.sample(rng), None)

    def describe(self) -> dict[str, Any]:
        """The workload as recorded in result.json: the dataset summarised, not copied."""
        d: dict[str, Any] = {"source": self.source, "seed": self.seed,
                             "input_tokens": str(self.input_tokens) if self.input_tokens else None,
                             "output_tokens": str(self.output_tokens) if self.output_tokens else None}
        if self.prompts is not None:
            d["prompts"] = len(self.prompts)
            d["prompts_with_output_length"] = sum(1 for p in self.prompts if p.output_tokens is not None)
        return d
