"""What OpenTelemetry tracing costs per request: CPU of one span set as the relay makes it (a server span with the
request's GenAI attributes, one upstream attempt, the first-chunk event, the end with the answer's attributes),
exported over OTLP/HTTP to a collector in another process, against the same call sites with tracing off.

    python -m bench.tracing                       # 5,000 span sets per round, median of 5 rounds
    python -m bench.tracing --sets 500 --rounds 3 --out results/tracing-<date>

Cases:

- ``off``: tracing is None; each of the four call sites is one ``if tracing is not None`` (what the relay pays);
- ``sampled``: ``--otel-sample-ratio 1``, every span recorded and exported (the export thread's encoding and
  posting included: CPU is the whole process's, all threads, until the SDK flushed the round's spans);
- ``unsampled``: ratio 0: spans made and dropped, ``traceparent`` still propagated.

The collector is a stdlib HTTP server in a child process that reads each export and answers 200, so its CPU is
not counted. This is a microbenchmark of the tracing calls alone; the relay's whole per-request cost is the
token-rate runs' (results/PERF-LOG.md), and tracing adds to it what this measures.
"""

from __future__ import annotations

import argparse
import http.server
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import trio

from bench.micro import arguments, python, report
from proxy.tracing import Tracing, TracingOptions

BODY = {"model": "kimi-k2", "messages": [{"role": "user", "content": "hi"}], "stream": True, "temperature": 0.3,
        "max_tokens": 1024}  # fmt: skip


def one_request(tracing: Tracing | None) -> None:
    """The four call sites of one streamed request, as the relay runs them."""
    span = tracing.server_span("POST", "/v1/chat/completions", request=BODY) if tracing is not None else None
    if span is not None:
        attempt = span.attempt("moonshot", "http://127.0.0.1:9100/v1/chat/completions", model="kimi-k2")
        attempt.answered(200)
    if span is not None:
        span.first_chunk()
    if span is not None:
        span.end(200, model="kimi-k2-0905", input_tokens=12, output_tokens=300, finish_reasons="stop")


WARM = 200


async def measure(tracing: Tracing | None, sets: int, rounds: int) -> float:
    """Median over ``rounds`` of process CPU µs per span set, each round's spans flushed to the collector."""
    for _ in range(WARM):
        one_request(tracing)
    if tracing is not None:
        await tracing.flush(30.0)
    per_set = []
    for _ in range(rounds):
        start = time.process_time_ns()
        for _ in range(sets):
            one_request(tracing)
        if tracing is not None:
            assert await tracing.flush(30.0), "the collector did not take the spans in time"
        per_set.append((time.process_time_ns() - start) / 1000 / sets)
    return statistics.median(per_set)


class _Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    spans = 0
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        request = ExportTraceServiceRequest()
        request.ParseFromString(self.rfile.read(int(self.headers.get("content-length", 0))))
        with _Sink.lock:
            _Sink.spans += sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def sink() -> int:
    """The collector: print the port, serve until stdin closes, then print how many spans it received."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()
    print(_Sink.spans, flush=True)
    return 0


async def run(endpoint: str, sets: int, rounds: int) -> list[dict[str, Any]]:
    rows = [{"case": "off", "us_per_request": await measure(None, sets * 20, rounds)}]
    for case, ratio in (("sampled", 1.0), ("unsampled", 0.0)):
        # A queue that holds a whole round: none of the spans measured is dropped (the sink counts them).
        tracing = Tracing(TracingOptions(endpoint, ratio), max_queue=2 * max(sets, WARM))
        try:
            rows.append({"case": case, "us_per_request": await measure(tracing, sets, rounds)})
        finally:
            await tracing.aclose()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__ or "")
    parser.add_argument("--sets", type=int, default=5000, help="span sets (requests) per round (default 5000)")
    parser.add_argument("--chunks", type=int, default=300, help="chunks per request to spread it over (default 300, "
                        "the token-rate scenario's)")  # fmt: skip
    parser.add_argument("--relay-us-per-chunk", type=float, default=51.5, help="the relay's CPU per chunk at token "
                        "rate to compare with (default 51.5 µs, results/bench-2026-12-05-token-rate-4)")  # fmt: skip
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sink:
        return sink()
    with subprocess.Popen([sys.executable, "-m", "bench.tracing", "--sink"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as child:  # fmt: skip
        assert child.stdout is not None and child.stdin is not None
        try:
            endpoint = f"http://127.0.0.1:{int(child.stdout.readline())}/v1/traces"
            rows = trio.run(run, endpoint, args.sets, args.rounds)
        finally:
            child.stdin.close()  # the collector's end
            received = int(child.stdout.readline() or 0)
            child.wait(10)
    made = 2 * (WARM + args.sets * args.rounds)  # sampled: a server span and an attempt per request
    if received != made:
        raise SystemExit(f"the collector received {received} spans of the {made} sampled: the figures would be low")
    lines = ["| case | CPU µs per request | µs per chunk, over a request's chunks | share of the relay's per chunk |",
             "|---|---:|---:|---:|"]  # fmt: skip
    for row in rows:
        us = row["us_per_request"]
        row["us_per_request"] = round(us, 3)
        row["us_per_chunk"] = round(us / args.chunks, 4)
        row["share"] = round(us / args.chunks / args.relay_us_per_chunk, 5)
        lines.append(f"| {row['case']} | {us:.3f} | {row['us_per_chunk']:.4f} | {100 * row['share']:.2f} % |")
    facts = (f"{python()}, {args.sets} span sets per round (off: {args.sets * 20} requests), median of "
             f"{args.rounds} rounds; per chunk: over {args.chunks} chunks a request, against the relay's "
             f"{args.relay_us_per_chunk} µs per chunk at token rate")  # fmt: skip
    report("Tracing cost per request", "bench.tracing", argv, facts, lines, rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
