"""What the load generator spends judging an answer per output event: chat, Anthropic Messages and OpenAI Responses
streams as the sim sends them (stamped), and without the stamps (what a relay that translated the stream sends),
each in one process, hot, on the same answer.

    python -m bench.judging                        # 200 streams of 300 tokens per protocol, median of 5 rounds
    python -m bench.judging --streams 50 --rounds 3 --out results/loadtest-judging-<date>

Each stream is the sim's own bytes for one request (``route.reply`` and the send loop's ``batches``, rendered
around a stamp), one timed send per read, fed to the judge ``loadtest --api`` uses (:func:`loadtest.protocols.
new_accounting`), then its verdict. CPU per output event = process CPU over the streams (judge set-up and verdict
included) / the output events (one per token: a chat content chunk, a Messages ``content_block_delta``, a Responses
``response.output_text.delta``); a Messages or Responses stream has a few more events per stream around them, and
those are included. The socket reads and the event loop around this are the same for every protocol.
"""

from __future__ import annotations

import random
import re
import sys

from bench.micro import arguments, cpu_us, python, report
from loadtest.protocols import new_accounting
from loadtest.record import SessionRecord
from loadtest.sim import SimConfig, make_plan
from loadtest.sim._server import ROUTES
from loadtest.sim._stream import batches

HI = [{"role": "user", "content": "Tell me about the far side of the moon, briefly."}]
BODIES = {
    "chat": ("/v1/chat/completions", {"model": "moonshot-v1-8k", "messages": HI, "stream": True}),
    "messages": ("/v1/messages", {"model": "kimi-k2", "max_tokens": 4096, "messages": HI, "stream": True}),
    "responses": ("/v1/responses", {"model": "kimi-k2", "input": HI[0]["content"], "stream": True}),
}
_STAMP = re.compile(rb',"sim":\{"ns":\d+,"seq":\d+,"of":\d+\}')


class _Sim:
    rng = random.Random(1)


def sim_reads(api: str, tokens: int) -> list[bytes]:
    """The sim's answer to one streamed request of ``api``, ``tokens`` tokens long, one read per timed send."""
    path, body = BODIES[api]
    route = ROUTES[path]
    reply = route.reply(_Sim, {**body, "sim_chunks": tokens}, make_plan(SimConfig(), {**body, "sim_chunks": tokens},
                                                                          {}, route.LENGTH_KEYS))
    return [b"123456789012345".join(parts) for parts in batches(reply)]


def judged(api: str, reads: list[bytes]) -> None:
    rec = SessionRecord()
    acct = new_accounting(api, rec)
    for t, data in enumerate(reads):
        acct.feed(data, t)
    acct.end(len(reads))
    assert acct.verdict() == (None, None) and acct.error_event is None and acct.malformed is None


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__ or "")
    parser.add_argument("--tokens", type=int, default=300, help="output tokens per stream (default 300)")
    parser.add_argument("--streams", type=int, default=200, help="streams per round (default 200)")
    args = parser.parse_args(argv)
    rows = []
    for stamped in (True, False):
        for api in BODIES:
            reads = sim_reads(api, args.tokens)
            if not stamped:
                reads = [_STAMP.sub(b"", r) for r in reads]
            us = cpu_us(lambda api=api, reads=reads: [judged(api, reads) for _ in range(args.streams)], args.rounds,
                        args.streams * args.tokens)
            rows.append({"api": api, "stamped": stamped, "us_per_event": round(us, 3),
                         "bytes_per_stream": sum(map(len, reads))})
    base = {r["stamped"]: r["us_per_event"] for r in rows if r["api"] == "chat"}
    lines = ["| stream | API | CPU µs per output event | vs chat | bytes per stream |", "|---|---|---:|---:|---:|"]
    for r in rows:
        kind = "the sim's (stamped)" if r["stamped"] else "unstamped (translated)"
        lines.append(f"| {kind} | {r['api']} | {r['us_per_event']:.2f} | {r['us_per_event'] / base[r['stamped']]:.2f}× "
                     f"| {r['bytes_per_stream']:,} |")
    facts = f"{python()}, {args.streams} streams × {args.tokens} tokens, median of {args.rounds} rounds"
    report("The load generator's judging per output event, by protocol", "bench.judging", argv, facts, lines, rows,
           args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
