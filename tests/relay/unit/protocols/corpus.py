"""The protocol fixtures (data/, sources in data/SOURCES.md) and a plain SSE reader for the tests, written apart
from the relay's own splitter so that the translators' output is read by code that is not under test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from proxy.protocol import InvalidRequest

DATA = Path(__file__).parent / "data"


def raw(name: str) -> bytes:
    return (DATA / name).read_bytes()


def load(name: str) -> Any:
    return json.loads(raw(name))


def events(data: bytes) -> list[tuple[str | None, bytes]]:
    """(event name, data) of each event in SSE bytes framed with LF, comments and empty events skipped."""
    out = []
    for block in data.decode().split("\n\n"):
        name, lines = None, []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                lines.append(line[6:])
        if lines:
            out.append((name, "\n".join(lines).encode()))
    return out


def parsed(data: bytes) -> list[tuple[str | None, Any]]:
    return [(name, json.loads(payload)) for name, payload in events(data)]


def payloads(name: str) -> list[bytes]:
    """The data of each event of a fixture stream (``[DONE]`` included)."""
    return [payload for _, payload in events(raw(name))]


def run(translator: Any, name: str, *, end: bool = True) -> bytes:
    """Everything ``translator`` writes for the fixture stream ``name``, fed one event at a time."""
    out = b"".join(translator.feed(p) for p in payloads(name))
    return out + translator.end() if end else out


def refused(call: Any, *args: Any, **kwargs: Any) -> InvalidRequest:
    """The 400 that ``call`` refuses with."""
    with pytest.raises(InvalidRequest) as info:
        call(*args, **kwargs)
    assert info.value.status == 400
    return info.value
