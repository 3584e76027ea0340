"""OpenTelemetry traces (proxy/tracing/): the W3C headers and settings, sans I/O; then spans made through the module
with the SDK's real OTLP/HTTP exporter, received and decoded by a real OTLP receiver (tests/support/otlp.py): the
server span and its attempts, the GenAI attributes, the first-chunk event, the client's traceparent as the parent
and the attempt's as what goes upstream, sampling, and a collector that is down or stalled."""

from __future__ import annotations

import logging
import socket
import threading
import time
from types import SimpleNamespace

import pytest
import trio

from proxy.config import Settings
from proxy.tracing import (
    FIRST_CHUNK,
    SDKLines,
    Tracing,
    TracingOptions,
    check_tracing,
    format_traceparent,
    parse_headers,
    parse_traceparent,
    provider_name,
    request_attributes,
    traces_url,
    tracing_options,
)
from tests.relay.unit.test_store import FakeClock
from tests.support.otlp import OTLPReceiver

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
CLIENT = f"00-{TRACE}-{PARENT}-01"


# -- the headers and the settings, sans I/O ---------------------------------------------------------------------


def test_a_valid_traceparent_names_the_parent() -> None:
    parent = parse_traceparent(CLIENT, "congo=t61rcWkgMzE")
    assert parent is not None
    assert (f"{parent.trace_id:032x}", f"{parent.span_id:016x}", parent.flags) == (TRACE, PARENT, 1)
    assert parent.tracestate == "congo=t61rcWkgMzE"
    assert parse_traceparent(f"  {CLIENT} ") is not None  # optional whitespace around a header value
    assert format_traceparent(parent.trace_id, parent.span_id, parent.flags) == CLIENT
    # A later version may carry more fields after a dash; a version-00 reader takes the first four.
    assert parse_traceparent(f"01-{TRACE}-{PARENT}-00-what-comes-next") is not None
    assert parse_traceparent(f"01-{TRACE}-{PARENT}-00") is not None


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        f"00-{TRACE.upper()}-{PARENT}-01",  # uppercase hex
        f"ff-{TRACE}-{PARENT}-01",  # the forbidden version
        f"00-{'0' * 32}-{PARENT}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"00-{TRACE}-{PARENT}-01-extra",  # version 00 is exactly 55 characters
        f"01-{TRACE}-{PARENT}-01extra",  # a later version's extra fields follow a dash
        f"00-{TRACE[:-1]}-{PARENT}-01",  # short trace id
        f"00_{TRACE}_{PARENT}_01",
        f"0g-{TRACE}-{PARENT}-01",
    ],
)
def test_an_invalid_traceparent_is_ignored_and_so_is_its_tracestate(value) -> None:
    assert parse_traceparent(value, "congo=t61rcWkgMzE") is None


def test_a_tracestate_is_passed_on_only_when_it_is_short_printable_ascii() -> None:
    assert parse_traceparent(CLIENT, "a=" + "x" * 510).tracestate is not None
    assert parse_traceparent(CLIENT, "a=" + "x" * 511).tracestate is None
    assert parse_traceparent(CLIENT, "a=\x00").tracestate is None
    assert parse_traceparent(CLIENT, "a=é").tracestate is None
    assert parse_traceparent(CLIENT, "  ").tracestate is None


def test_the_endpoint_headers_and_ratio_settings() -> None:
    assert traces_url("http://127.0.0.1:4318") == "http://127.0.0.1:4318/v1/traces"
    assert traces_url("http://127.0.0.1:4318/") == "http://127.0.0.1:4318/v1/traces"
    assert traces_url("https://otel.example.com/custom/traces") == "https://otel.example.com/custom/traces"
    for bad in ("127.0.0.1:4318", "ftp://host", "http://", "http://host:port", "http://user:pw@host:4318"):
        with pytest.raises(ValueError, match="otel_endpoint"):
            traces_url(bad)
    assert parse_headers("") == {}
    assert parse_headers("Authorization=Bearer%20k1, x-team = a=b ,") == {"authorization": "Bearer k1", "x-team": "a=b"}
    for bad in ("secretvalue", "bad name=v", "=v"):
        with pytest.raises(ValueError, match="otel_headers") as caught:
            parse_headers(bad)
        assert "secretvalue" not in str(caught.value)  # a header's text may be a key: never in the message
    assert tracing_options(Settings()) is None
    options = tracing_options(Settings(otel_endpoint="http://h:4318", otel_sample_ratio=0.25, otel_headers="k=v"))
    assert options == TracingOptions("http://h:4318/v1/traces", 0.25, "moonrelay", {"k": "v"})
    for ratio in (-0.1, 1.5):
        with pytest.raises(ValueError, match="otel_sample_ratio"):
            tracing_options(Settings(otel_endpoint="http://h:4318", otel_sample_ratio=ratio))
    with pytest.raises(ValueError, match="otel_service_name"):
        tracing_options(Settings(otel_endpoint="http://h:4318", otel_service_name=" "))
    check_tracing(Settings(otel_endpoint="http://h:4318"))  # the SDK is installed here


def test_request_attributes_read_what_is_there_and_well_typed() -> None:
    body = {"model": "kimi-k2", "temperature": 0, "top_p": 0.9, "max_tokens": 100, "seed": 7, "n": 2,
            "stop": "END", "response_format": {"type": "json_object"}, "presence_penalty": "high"}  # fmt: skip
    assert request_attributes(body) == {
        "gen_ai.request.model": "kimi-k2", "gen_ai.request.temperature": 0.0, "gen_ai.request.top_p": 0.9,
        "gen_ai.request.max_tokens": 100, "gen_ai.request.seed": 7, "gen_ai.request.choice.count": 2,
        "gen_ai.request.stop_sequences": ["END"], "gen_ai.output.type": "json",
    }  # fmt: skip
    assert request_attributes({"messages": [], "n": 1, "max_tokens": True, "stop": ["a", 1]}) == {}
    assert provider_name("https://api.moonshot.cn/v1") == "moonshot"
    assert provider_name("https://api.deepseek.com/v1") == "deepseek"
    assert provider_name("http://127.0.0.1:9100/v1") == "openai"


def test_tracing_is_off_without_an_endpoint() -> None:
    assert Tracing.from_settings(Settings()) is None
    assert Tracing.from_settings(SimpleNamespace(otel_endpoint="")) is None


# -- spans through a real exporter to a real receiver ------------------------------------------------------------


async def receiver_and_tracing(nursery, ratio: float = 1.0, headers: dict | None = None):
    receiver = await nursery.start(OTLPReceiver().serve)
    options = TracingOptions(receiver.traces_url, ratio, "relay-under-test", headers or {})
    return receiver, Tracing(options, export_timeout_s=5.0)


async def test_a_request_with_a_retry_is_a_server_span_and_two_sibling_attempts(nursery) -> None:
    receiver, tracing = await receiver_and_tracing(nursery, headers={"x-collector-key": "k1"})
    body = {"model": "kimi-k2", "messages": [], "temperature": 0.3, "max_tokens": 64}
    span = tracing.server_span("POST", "/v1/chat/completions", request=body, attributes={"client.address": "10.0.0.1"})
    assert span.recording and len(span.trace_id) == 32
    first = span.attempt("moonshot", "https://api.moonshot.cn/v1/chat/completions")
    first.end(503)
    second = span.attempt("backup", "http://127.0.0.1:9100/v1/chat/completions", model="kimi-k2-backup")
    second.answered(200)
    span.first_chunk()
    span.first_chunk()  # one event, however often the caller says so
    span.end(200, model="kimi-k2-0905", input_tokens=12, output_tokens=34, finish_reasons="stop",
             response_id="chatcmpl-1")  # fmt: skip
    span.end(500)  # once ended, ended
    assert await tracing.aclose()

    assert receiver.refused == [] and receiver.headers[0]["x-collector-key"] == "k1"
    (server,) = receiver.by_name("POST /v1/chat/completions")
    tries = sorted(receiver.spans, key=lambda s: s.attributes.get("moonrelay.attempt", 0))[1:]
    assert len(receiver.spans) == 3 and [t.name for t in tries] == ["chat kimi-k2", "chat kimi-k2-backup"]
    assert server.kind == "server" and server.parent_id == "" and server.resource["service.name"] == "relay-under-test"
    assert all(t.kind == "client" and t.parent_id == server.span_id and t.trace_id == server.trace_id for t in tries)
    assert server.events == [FIRST_CHUNK] and not server.error
    # The server span: the HTTP request and what it asked for; the inference attributes are the attempts'.
    assert server.attributes == {
        "http.request.method": "POST", "http.route": "/v1/chat/completions", "client.address": "10.0.0.1",
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "kimi-k2", "http.response.status_code": 200,
    }  # fmt: skip
    failed, relayed = tries
    assert failed.error and failed.attributes == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "moonshot", "gen_ai.request.model": "kimi-k2",
        "gen_ai.request.temperature": 0.3, "gen_ai.request.max_tokens": 64, "http.request.method": "POST",
        "server.address": "api.moonshot.cn", "server.port": 443,
        "url.full": "https://api.moonshot.cn/v1/chat/completions", "moonrelay.upstream": "moonshot",
        "moonrelay.attempt": 1, "http.response.status_code": 503, "error.type": "503",
    }  # fmt: skip
    # The attempt whose answer was relayed ends with the request, carrying the answer.
    assert not relayed.error and relayed.attributes == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "kimi-k2-backup",
        "gen_ai.request.temperature": 0.3, "gen_ai.request.max_tokens": 64, "http.request.method": "POST",
        "server.address": "127.0.0.1", "server.port": 9100, "url.full": "http://127.0.0.1:9100/v1/chat/completions",
        "moonrelay.upstream": "backup", "moonrelay.attempt": 2, "http.request.resend_count": 1,
        "http.response.status_code": 200, "gen_ai.response.model": "kimi-k2-0905", "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 34, "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.response.id": "chatcmpl-1",
    }  # fmt: skip
    assert server.start_ns <= failed.start_ns <= failed.end_ns <= relayed.start_ns <= relayed.end_ns <= server.end_ns


async def test_without_an_attempt_the_server_span_carries_the_answer(nursery) -> None:
    """An answer that no upstream attempt gave (the cache's, say) is described on the server span itself."""
    receiver, tracing = await receiver_and_tracing(nursery)
    span = tracing.server_span("POST", "/v1/chat/completions", request={"model": "kimi-k2", "temperature": 0})
    span.end(200, model="kimi-k2-0905", output_tokens=5, finish_reasons=["stop", "length"],
             attributes={"moonrelay.cache": "hit"})  # fmt: skip
    refused = tracing.server_span("POST", "/v1/chat/completions")
    refused.end(503, error_type="upstream_busy")
    assert await tracing.aclose()
    answered, failed = receiver.spans
    assert answered.attributes == {
        "http.request.method": "POST", "http.route": "/v1/chat/completions", "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "kimi-k2", "gen_ai.response.model": "kimi-k2-0905", "gen_ai.usage.output_tokens": 5,
        "gen_ai.response.finish_reasons": ["stop", "length"], "http.response.status_code": 200,
        "moonrelay.cache": "hit",
    }  # fmt: skip
    assert failed.error and failed.attributes["error.type"] == "upstream_busy"


async def test_the_clients_traceparent_is_the_parent_and_the_attempts_goes_upstream(nursery) -> None:
    receiver, tracing = await receiver_and_tracing(nursery)
    span = tracing.server_span("POST", "/v1/chat/completions", traceparent=CLIENT, tracestate="congo=t61rcWkgMzE")
    assert span.trace_id == TRACE
    attempt = span.attempt("moonshot", "http://127.0.0.1:9100/v1/chat/completions")
    upstream = parse_traceparent(attempt.headers["traceparent"])
    assert attempt.headers["tracestate"] == "congo=t61rcWkgMzE"
    span.end(502, error_type="upstream_unavailable")
    lost = tracing.server_span("POST", "/v1/chat/completions", traceparent=f"00-{TRACE}-{PARENT}-01-x",
                               tracestate="congo=t61rcWkgMzE")  # fmt: skip
    lost_attempt = lost.attempt("moonshot", "http://127.0.0.1:9100/v1/chat/completions")
    lost.end(200)
    assert await tracing.aclose()

    (server, fresh_server) = receiver.by_name("POST /v1/chat/completions")
    (sent, fresh_sent) = receiver.by_name("chat")
    assert (server.trace_id, server.parent_id) == (TRACE, PARENT)
    assert server.error and server.attributes["error.type"] == "upstream_unavailable"
    assert sent.error and sent.attributes["error.type"] == "upstream_unavailable"  # ended with the request
    # What went upstream names the attempt's span, in the client's trace, sampled.
    assert (f"{upstream.trace_id:032x}", f"{upstream.span_id:016x}", upstream.flags) == (TRACE, sent.span_id, 1)
    # An invalid traceparent starts a trace of the relay's own, and its tracestate is not passed on.
    assert fresh_server.parent_id == "" and fresh_server.trace_id != TRACE
    assert "tracestate" not in lost_attempt.headers
    assert lost_attempt.traceparent.startswith(f"00-{fresh_sent.trace_id}-{fresh_sent.span_id}-")
    assert int(lost_attempt.traceparent[-2:], 16) & 1  # sampled (the SDK also sets W3C level 2's random flag)


async def test_ratio_zero_exports_nothing_yet_propagates_and_follows_a_sampled_client(nursery) -> None:
    receiver, tracing = await receiver_and_tracing(nursery, ratio=0.0)
    for _ in range(50):
        span = tracing.server_span("POST", "/v1/chat/completions", request={"model": "m"})
        attempt = span.attempt("up", "http://127.0.0.1:9/v1/chat/completions")
        assert not span.recording and not int(attempt.traceparent[-2:], 16) & 1  # not sampled, still a trace upstream
        span.first_chunk()
        span.end(200, output_tokens=3)
    assert await tracing.flush()
    assert receiver.spans == [] and receiver.headers == []  # no export request at all
    followed = tracing.server_span("POST", "/v1/chat/completions", traceparent=CLIENT)
    followed.attempt("up", "http://127.0.0.1:9/v1/chat/completions").end(200)
    followed.end(200)
    unsampled_client = tracing.server_span("POST", "/v1/chat/completions", traceparent=f"00-{TRACE}-{PARENT}-00")
    unsampled_client.end(200)
    assert await tracing.aclose()
    assert {(s.name, s.trace_id) for s in receiver.spans} == {("POST /v1/chat/completions", TRACE), ("chat", TRACE)}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def spans_take(tracing: Tracing, count: int) -> float:
    """Wall time of ``count`` whole span sets made as the relay makes them."""
    began = time.perf_counter()
    for _ in range(count):
        span = tracing.server_span("POST", "/v1/chat/completions", request={"model": "m"})
        span.attempt("up", "http://127.0.0.1:9/v1/chat/completions", model="m").answered(200)
        span.first_chunk()
        span.end(200, input_tokens=1, output_tokens=2, finish_reasons="stop")
    return time.perf_counter() - began


async def test_a_collector_that_is_down_neither_raises_nor_slows_requests(caplog) -> None:
    options = TracingOptions(f"http://127.0.0.1:{closed_port()}/v1/traces", 1.0)
    tracing = Tracing(options, export_timeout_s=2.0, max_queue=256, schedule_delay_s=0.05)
    # Far more spans than the queue holds: the newest are dropped, and the export thread's retries (connection
    # refused, backing off) never reach the caller. ~100 µs a set here; the bound is loose for a loaded machine.
    assert await spans_take(tracing, 2000) < 5.0
    began = time.perf_counter()
    await tracing.flush(timeout_s=0.5)
    await tracing.aclose(timeout_s=1.0)
    assert time.perf_counter() - began < 3.0  # each within its deadline, whatever the export thread does
    lines = [r.getMessage() for r in caplog.records if r.name == "moonrelay"]
    assert lines and all(line.startswith("tracing: ") for line in lines)
    assert len(lines) < 10  # each kind of SDK line at most once a minute, not once per batch or per span
    await export_threads_end()


async def export_threads_end() -> None:
    """Wait for the SDK's export threads that aclose gave up on, so none logs into a later test."""
    with trio.fail_after(10):
        while any(t.name.startswith("OtelBatch") and t.is_alive() for t in threading.enumerate()):  # noqa: ASYNC110
            await trio.sleep(0.05)


async def test_a_stalled_collector_holds_neither_requests_nor_the_shutdown() -> None:
    """A collector that accepts connections and never answers: exports wait in the SDK's thread until their
    timeout; requests go on, and aclose gives up at its deadline."""
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # the kernel completes the handshakes; nobody ever reads
    try:
        port = listener.getsockname()[1]
        tracing = Tracing(TracingOptions(f"http://127.0.0.1:{port}/v1/traces", 1.0), export_timeout_s=1.5,
                          max_queue=256, schedule_delay_s=0.05)  # fmt: skip
        assert await spans_take(tracing, 1000) < 5.0
        began = time.perf_counter()
        assert await tracing.aclose(timeout_s=0.3) is False  # the export is still stuck: given up, not waited for
        assert time.perf_counter() - began < 1.3
        assert await tracing.aclose() is True  # once closed, closed
    finally:
        listener.close()
    await export_threads_end()  # the stuck export times out by itself

def test_the_sdks_lines_come_out_as_the_relays_each_kind_once_a_minute(caplog) -> None:
    clock = FakeClock(0.0)
    lines = SDKLines(every_s=60.0, clock=clock)
    logger = logging.getLogger("opentelemetry.test-only")
    logger.addHandler(lines)
    logger.propagate = False
    try:
        for port in range(100):  # one failed export per batch, each with its own text
            logger.error("Failed to export %s batch: %s", "spans", f"port {port} refused")
        logger.warning("Queue full, dropping %s.", "Span")
        clock.now = 59.9
        logger.error("Failed to export %s batch: %s", "spans", "again")
        clock.now = 60.0
        logger.error("Failed to export %s batch: %s", "spans", "still")
    finally:
        logger.removeHandler(lines)
    assert [r.getMessage() for r in caplog.records if r.name == "moonrelay"] == [
        "tracing: Failed to export spans batch: port 0 refused",
        "tracing: Queue full, dropping Span.",
        "tracing: Failed to export spans batch: still (100 more like it in the last 60 s)",
    ]
