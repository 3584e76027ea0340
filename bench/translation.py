"""What translation costs per chunk: the relay's own per-chunk work for a chat stream against the same stream
translated into Anthropic Messages and OpenAI Responses events, and a native Messages stream relayed with its usage
read, each in one process, hot, on the same bytes.

    python -m bench.translation                       # 200 streams of 300 chunks per path, median of 5 rounds
    python -m bench.translation --streams 50 --rounds 3 --out results/translation-<date>

Paths (each per upstream read of one chunk, as the relay would run it):

- ``chat``: what ``stream/_relay.py`` does for a chat stream, ``EventSplitter.feed_whole`` and ``well_formed``;
- ``messages``/``responses``: ``EventSplitter.feed``, ``event_data`` and the translator's ``feed`` (which parses
  the chunk, so no ``well_formed``);
- ``messages-native``: a native Messages stream relayed as chat is, plus ``MessagesUsageReader.feed``.

Two workloads: ``text`` (content deltas of a few tokens, ASCII and Chinese) and ``tools`` (tool-call argument
fragments). CPU per chunk is process CPU time over the streams (stream setup included) divided by chunks. This
is a microbenchmark of the translation alone: the relay's whole per-chunk cost (socket reads and writes, the event
loop) is in results/PERF-LOG.md's token-rate runs, and the translation adds to it what this measures.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

from bench.micro import arguments, cpu_us, python, report
from proxy.protocol import EventSplitter, event_data, well_formed
from proxy.protocol.messages import MessagesStream, MessagesUsageReader, parse_messages_request
from proxy.protocol.responses import ResponsesStream, parse_responses_request

TOKENS = [" The", " relay", " streams", " every", " token", "，", "你好", "世界", " as", " it", " comes", "."]
MESSAGES = parse_messages_request(b'{"model":"kimi-k2","max_tokens":1024,"stream":true,"messages":[{"role":"user",'
                                  b'"content":"hi"}]}')  # fmt: skip
RESPONSES = parse_responses_request(b'{"model":"kimi-k2","input":"hi","stream":true}')


def _chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> bytes:
    choice: dict = {"index": 0, "delta": delta, "finish_reason": finish}
    if usage is not None:
        choice["usage"] = usage  # Moonshot's place for it
    body = {"id": "chatcmpl-6810567267ee141b4630dccb", "object": "chat.completion.chunk", "created": 1745901159,
            "model": "kimi-k2-0905-preview", "choices": [choice]}  # fmt: skip
    return b"data: " + json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def chat_stream(chunks: int, workload: str) -> list[bytes]:
    """One upstream read per chunk, as a token-rate stream arrives."""
    if workload == "text":
        body = [_chunk({"role": "assistant", "content": ""})]
        body += [_chunk({"content": TOKENS[i % len(TOKENS)]}) for i in range(chunks - 2)]
    else:
        call = {"index": 0, "id": "call_0", "type": "function", "function": {"name": "write_file", "arguments": ""}}
        body = [_chunk({"role": "assistant", "tool_calls": [call]})]
        pieces = ['{"text":"'] + [TOKENS[i % len(TOKENS)] for i in range(chunks - 4)] + ['"}']  # a JSON object
        body += [_chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}) for piece in pieces]
    usage = {"prompt_tokens": 12, "completion_tokens": chunks, "total_tokens": 12 + chunks}
    return body + [_chunk({}, "tool_calls" if workload == "tools" else "stop", usage) + b"data: [DONE]\n\n"]


def native_messages_stream(chunks: int) -> list[bytes]:
    def event(name: str, data: dict) -> bytes:
        return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()

    start = {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
             "model": "kimi-k2", "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {"input_tokens": 12, "output_tokens": 1}}}  # fmt: skip
    body = [event("message_start", start) + event("content_block_start", {"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}})]  # fmt: skip
    for i in range(chunks - 2):
        delta = {"type": "text_delta", "text": TOKENS[i % len(TOKENS)]}
        body.append(event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}))
    body.append(event("content_block_stop", {"type": "content_block_stop", "index": 0})
                + event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn",
                        "stop_sequence": None}, "usage": {"output_tokens": chunks}})
                + event("message_stop", {"type": "message_stop"}))  # fmt: skip
    return body


def relayed(usage: bool) -> Callable[[list[bytes]], int]:
    """The relay's pass-through of each read, as ``stream/_relay.py`` does it; ``usage``: a native Messages
    stream's usage read too."""

    def relay(reads: list[bytes]) -> int:
        splitter = EventSplitter()
        reader = MessagesUsageReader()
        out = 0
        for data in reads:
            events, whole = splitter.feed_whole(data)
            for event in events:
                if not well_formed(event):
                    raise AssertionError(event)
                if usage and (payload := event_data(event)) is not None:
                    reader.feed(payload)
            out += len(whole)
        assert reader.usage is not None or not usage
        return out

    return relay


def translated(make: Callable[[], MessagesStream | ResponsesStream]) -> Callable[[list[bytes]], int]:
    def relay(reads: list[bytes]) -> int:
        splitter = EventSplitter()
        translator = make()
        out = 0
        for data in reads:
            for event in splitter.feed(data):
                payload = event_data(event)
                if payload is not None:
                    out += len(translator.feed(payload))
        out += len(translator.end())
        assert translator.done and translator.usage is not None
        return out

    return relay


PATHS: dict[str, Callable[[list[bytes]], int]] = {
    "chat": relayed(usage=False),
    "messages": translated(lambda: MessagesStream(MESSAGES)),
    "responses": translated(lambda: ResponsesStream(RESPONSES)),
    "messages-native": relayed(usage=True),
}


def measure(path: Callable[[list[bytes]], int], reads: list[bytes], streams: int, rounds: int) -> float:
    """Median over ``rounds`` of CPU µs per chunk over ``streams`` streams."""
    return cpu_us(lambda: [path(reads) for _ in range(streams)], rounds, streams * len(reads))


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__ or "")
    parser.add_argument("--chunks", type=int, default=300, help="chunks per stream (default 300)")
    parser.add_argument("--streams", type=int, default=200, help="streams per round (default 200)")
    args = parser.parse_args(argv)
    rows = []
    for workload in ("text", "tools"):
        chat = chat_stream(args.chunks, workload)
        for name, path in PATHS.items():
            if name == "messages-native" and workload == "tools":
                continue
            reads = native_messages_stream(args.chunks) if name == "messages-native" else chat
            us = measure(path, reads, args.streams, args.rounds)
            rows.append({"workload": workload, "path": name, "us_per_chunk": round(us, 2),
                         "chunks_per_s": round(1e6 / us)})  # fmt: skip
    base = {r["workload"]: r["us_per_chunk"] for r in rows if r["path"] == "chat"}
    lines = ["| workload | path | CPU µs per chunk | chunks/s on one core | vs chat |", "|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['workload']} | {r['path']} | {r['us_per_chunk']:.2f} | {r['chunks_per_s']:,} | "
                     f"{r['us_per_chunk'] / base[r['workload']]:.2f}× |")  # fmt: skip
    facts = f"{python()}, {args.streams} streams × {args.chunks} chunks, median of {args.rounds} rounds"
    report("Translation cost per chunk", "bench.translation", argv, facts, lines, rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
