"""OpenTelemetry traces of the relay's requests: a thin shell around the OpenTelemetry SDK (the ``otel`` extra).

One SERVER span per request (its parent the client's ``traceparent``, when valid), one CLIENT span per upstream
attempt under it (retries and fallbacks are siblings), the first chunk an event on the server span, and the GenAI
semantic conventions' attributes (model, provider, tokens, finish reasons). The SDK is imported when a
:class:`Tracing` is made, never before: with tracing off the relay neither needs nor loads it, and what a request
pays for tracing is the caller's one ``if tracing is not None``.

The exporter never blocks the event loop: an ended span goes into the SDK's BatchSpanProcessor queue (a deque
append, bounded: when the collector is slow or down the oldest queued spans make room, with a log line) and the
processor's own thread encodes and posts batches. A collector that is down costs that thread its retries,
never a request. :meth:`Tracing.aclose` flushes what is queued from a worker thread, within a deadline, and the
SDK's log lines (export failures, a full queue) come out as the relay's own, each distinct one at most once a
minute.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import trio

from ._sdklog import relay_sdk_log_lines
from ._w3c import Parent, TracingOptions, format_traceparent, parse_traceparent, tracing_options

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider


FIRST_CHUNK = "moonrelay.first_chunk"  # the event at the first chunk the client was sent (its time is the TTFC)
OPERATION = "chat"
# gen_ai.provider.name by the upstream's host, for the providers the GenAI conventions name; any other upstream
# speaks the OpenAI API (the relay's only upstream protocol), which the conventions call "openai".
PROVIDERS = {"api.openai.com": "openai", "api.deepseek.com": "deepseek", "api.anthropic.com": "anthropic",
             "api.groq.com": "groq", "api.mistral.ai": "mistral_ai", "api.x.ai": "x_ai",
             "api.perplexity.ai": "perplexity", "api.moonshot.cn": "moonshot",
             "api.moonshot.ai": "moonshot"}  # fmt: skip
# Request fields read into gen_ai.request.* attributes when a span records (a chat body's names).
_NUMBERS = (("temperature", "gen_ai.request.temperature"), ("top_p", "gen_ai.request.top_p"),
            ("presence_penalty", "gen_ai.request.presence_penalty"),
            ("frequency_penalty", "gen_ai.request.frequency_penalty"))  # fmt: skip
_INTS = (("max_tokens", "gen_ai.request.max_tokens"), ("max_completion_tokens", "gen_ai.request.max_tokens"),
         ("seed", "gen_ai.request.seed"))  # fmt: skip


def provider_name(url: str) -> str:
    """``gen_ai.provider.name`` for an upstream URL (module constant ``PROVIDERS``)."""
    return _provider(urlsplit(url).hostname)


def _provider(host: str | None) -> str:
    return PROVIDERS.get((host or "").lower(), "openai")


def request_attributes(data: Mapping[str, Any]) -> dict[str, Any]:
    """The GenAI ``gen_ai.request.*`` attributes of a chat request body (what is there and well typed)."""
    out: dict[str, Any] = {}
    model = data.get("model")
    if isinstance(model, str):
        out["gen_ai.request.model"] = model
    for name, key in _NUMBERS:
        value = data.get(name)
        if type(value) in (int, float):
            out[key] = float(value)
    for name, key in _INTS:
        value = data.get(name)
        if type(value) is int:
            out[key] = value
    n = data.get("n")
    if type(n) is int and n != 1:
        out["gen_ai.request.choice.count"] = n
    stop = data.get("stop")
    if isinstance(stop, str):
        out["gen_ai.request.stop_sequences"] = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        out["gen_ai.request.stop_sequences"] = stop
    response_format = data.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema"):
        out["gen_ai.output.type"] = "json"
    return out


def check_tracing(settings: Any) -> None:
    """At start-up: a ValueError for ``otel_*`` settings the relay cannot use, or for tracing asked without the
    SDK installed."""
    if tracing_options(settings) is None:
        return
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError as exc:
        raise ValueError(
            f"otel_endpoint: tracing needs the OpenTelemetry SDK ({exc.name} is missing): pip install 'moonrelay[otel]'"
        ) from None


class Tracing:
    """Spans for one worker process, exported to ``options.endpoint`` over OTLP/HTTP (protobuf). Make it in the
    worker (the SDK's export thread does not survive a fork); call :meth:`aclose` when the worker stops."""

    def __init__(self, options: TracingOptions, *, export_timeout_s: float = 10.0, max_queue: int = 2048,
                 schedule_delay_s: float = 1.0) -> None:  # fmt: skip
        from opentelemetry import trace
        from opentelemetry.context import Context
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        relay_sdk_log_lines()
        self.options = options
        exporter = OTLPSpanExporter(endpoint=options.endpoint, headers=options.headers, timeout=export_timeout_s)
        self._provider: TracerProvider = TracerProvider(
            sampler=ParentBased(TraceIdRatioBased(options.sample_ratio)),
            resource=Resource.create({"service.name": options.service_name}),
            shutdown_on_exit=False,  # aclose flushes, within its deadline; an atexit flush could hold the exit 30 s
        )
        self._provider.add_span_processor(BatchSpanProcessor(
            exporter, max_queue_size=max_queue, schedule_delay_millis=schedule_delay_s * 1000,
            max_export_batch_size=min(512, max_queue)))  # fmt: skip
        self._tracer = self._provider.get_tracer("moonrelay")
        self._trace = trace
        self._empty = Context()  # a span without a parent: never the thread's current context
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Any) -> Tracing | None:
        """A Tracing for ``settings``' ``otel_*`` values, or None when tracing is off (no ``otel_endpoint``)."""
        options = tracing_options(settings)
        return None if options is None else cls(options)

    def server_span(self, method: str, route: str, *, traceparent: str | None = None, tracestate: str | None = None,
                    request: Mapping[str, Any] | None = None,
                    attributes: Mapping[str, Any] | None = None) -> ServerSpan:  # fmt: skip
        """Start a request's SERVER span, ``"{method} {route}"``. ``traceparent``/``tracestate``: the client's
        headers (an invalid one starts a new trace); ``request``: the parsed chat body, whose model names the
        operation here and whose ``gen_ai.request.*`` attributes go on every attempt (read only when sampled);
        ``attributes``: more of the server span's (``client.address``, ...)."""
        parent = parse_traceparent(traceparent, tracestate)
        trace = self._trace
        if parent is None:
            context = self._empty
        else:
            remote = trace.SpanContext(parent.trace_id, parent.span_id, True, trace.TraceFlags(parent.flags))
            context = trace.set_span_in_context(trace.NonRecordingSpan(remote), self._empty)
        span = self._tracer.start_span(f"{method} {route}", context, trace.SpanKind.SERVER,
                                       {"http.request.method": method, "http.route": route})  # fmt: skip
        asked = None
        if span.is_recording():
            if request is not None:
                asked = request_attributes(request)
                server = {"gen_ai.operation.name": OPERATION}
                if "gen_ai.request.model" in asked:
                    server["gen_ai.request.model"] = asked["gen_ai.request.model"]
                span.set_attributes(server)
            if attributes:
                span.set_attributes(attributes)
        return ServerSpan(self, span, parent, asked)

    async def flush(self, timeout_s: float = 5.0) -> bool:
        """Export every span ended so far, from a worker thread; False when that took longer than ``timeout_s``."""
        return await self._in_thread(self._provider.force_flush, timeout_s)

    async def aclose(self, timeout_s: float = 5.0) -> bool:
        """Export what is queued and stop the export thread, within ``timeout_s`` (a dead collector cannot hold a
        worker's exit longer); False when it did not finish in time (those spans are lost)."""
        if self._closed:
            return True
        self._closed = True
        return await self._in_thread(self._provider.shutdown, timeout_s)

    @staticmethod
    async def _in_thread(call: Any, timeout_s: float) -> bool:
        with trio.move_on_after(timeout_s):
            await trio.to_thread.run_sync(call, abandon_on_cancel=True)
            return True
        return False


class ServerSpan:
    """One request's span: :meth:`attempt` for each upstream attempt, :meth:`first_chunk`, then :meth:`end` once
    (again is a no-op).

    The GenAI inference attributes (the request's sampling parameters, the provider, the response model, usage and
    finish reasons) go on the attempt spans, the CLIENT spans the conventions describe, and not again on this one:
    a backend that adds up ``gen_ai.usage.*`` over a trace's spans counts each request's tokens once.
    """

    __slots__ = ("_tracing", "_span", "_parent", "_asked", "_context", "_attempts", "_count", "_first", "_ended")

    def __init__(self, tracing: Tracing, span: Any, parent: Parent | None, asked: dict[str, Any] | None) -> None:
        self._tracing = tracing
        self._span = span
        self._parent = parent
        self._asked = asked  # the request's gen_ai.request.* attributes, for each attempt
        self._context: Any = None  # the context attempts start in, made at the first one
        self._attempts: list[AttemptSpan] = []
        self._count = 0
        self._first = False
        self._ended = False

    @property
    def recording(self) -> bool:
        """Sampled: its attributes and events go to the collector."""
        return self._span.is_recording()

    @property
    def trace_id(self) -> str:
        """The trace's id in hex (32 characters), for a log line that points at the trace."""
        return f"{self._span.get_span_context().trace_id:032x}"

    def attempt(self, upstream: str, url: str, attempt: int | None = None, *, model: str | None = None,
                provider: str | None = None) -> AttemptSpan:  # fmt: skip
        """Start the CLIENT span of one request to an upstream (``upstream``: its configured name; ``url``: what
        is requested; ``attempt``: its number in this request from 1, counted here when omitted; ``model``: the
        model asked of that upstream, when it is not the request's). Send its :attr:`AttemptSpan.headers` with the
        request."""
        self._count = attempt if attempt is not None else self._count + 1
        tracing = self._tracing
        trace = tracing._trace
        if self._context is None:
            self._context = trace.set_span_in_context(self._span, tracing._empty)
        asked = self._asked or {}
        model = model or asked.get("gen_ai.request.model")
        span = tracing._tracer.start_span(f"{OPERATION} {model}" if model else OPERATION, self._context,
                                          trace.SpanKind.CLIENT)  # fmt: skip
        if span.is_recording():
            parts = urlsplit(url)
            attributes: dict[str, Any] = {
                **asked,
                "gen_ai.operation.name": OPERATION,
                "gen_ai.provider.name": provider or _provider(parts.hostname),
                "http.request.method": "POST",
                "server.address": parts.hostname or "",
                "server.port": parts.port or (443 if parts.scheme == "https" else 80),
                "url.full": f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}",
                "moonrelay.upstream": upstream,
                "moonrelay.attempt": self._count,
            }
            if model:
                attributes["gen_ai.request.model"] = model
            if self._count > 1:
                attributes["http.request.resend_count"] = self._count - 1
            span.set_attributes(attributes)
        context = span.get_span_context()
        headers = {"traceparent": format_traceparent(context.trace_id, context.span_id, context.trace_flags)}
        if self._parent is not None and self._parent.tracestate is not None:
            headers["tracestate"] = self._parent.tracestate
        handle = AttemptSpan(span, headers, tracing._trace)
        self._attempts.append(handle)
        return handle

    def first_chunk(self) -> None:
        """The first chunk of the answer went to the client: an event on the span (its time is the TTFC)."""
        if not self._first:
            self._first = True
            self._span.add_event(FIRST_CHUNK)

    def end(self, status: int | None, *, model: str | None = None, input_tokens: int | None = None,
            output_tokens: int | None = None, finish_reasons: str | Iterable[str] | None = None,
            error_type: str | None = None, response_id: str | None = None,
            attributes: Mapping[str, Any] | None = None) -> None:  # fmt: skip
        """End the request's span when its response ended (last byte, error, or the client left): ``status`` the
        HTTP status the client got (None: none was sent); ``model``, tokens, ``finish_reasons``, ``response_id``
        from the answer; ``error_type`` the relay's error kind (``upstream_timeout``, ``client_disconnected``, ...)
        when it failed. The attempt still open, the one whose answer was relayed, ends here too and carries the
        answer's attributes; with none open (an answer from the cache, a refusal) this span carries them."""
        if self._ended:
            return
        self._ended = True
        span = self._span
        open_attempts = [attempt for attempt in self._attempts if not attempt.ended]
        if not span.is_recording():
            for attempt in open_attempts:
                attempt.end()
            span.end()
            return
        answer: dict[str, Any] = {}
        if model:
            answer["gen_ai.response.model"] = model
        if input_tokens is not None:
            answer["gen_ai.usage.input_tokens"] = input_tokens
        if output_tokens is not None:
            answer["gen_ai.usage.output_tokens"] = output_tokens
        if finish_reasons:
            answer["gen_ai.response.finish_reasons"] = (
                [finish_reasons] if isinstance(finish_reasons, str) else list(finish_reasons)
            )
        if response_id:
            answer["gen_ai.response.id"] = response_id
        for attempt in open_attempts:
            attempt.end(attempt.status, error_type=error_type, attributes=answer)
        own: dict[str, Any] = {} if open_attempts else answer
        if status is not None:
            own["http.response.status_code"] = status
        if attributes:
            own.update(attributes)
        error = error_type or (str(status) if status is not None and status >= 500 else None)
        if error:
            own["error.type"] = error
            span.set_status(self._tracing._trace.StatusCode.ERROR)
        span.set_attributes(own)
        span.end()


class AttemptSpan:
    """One upstream attempt's span. ``headers``: the ``traceparent`` (and the client's ``tracestate``) to send
    upstream, naming this span as the parent."""

    __slots__ = ("_span", "_trace", "headers", "status", "ended")

    def __init__(self, span: Any, headers: dict[str, str], trace: Any) -> None:
        self._span = span
        self._trace = trace
        self.headers = headers
        self.status: int | None = None
        self.ended = False

    @property
    def traceparent(self) -> str:
        return self.headers["traceparent"]

    def answered(self, status: int) -> None:
        """The upstream's status line came (the span goes on while its body is relayed)."""
        self.status = status

    def end(self, status: int | None = None, *, error_type: str | None = None,
            attributes: Mapping[str, Any] | None = None) -> None:  # fmt: skip
        """End the attempt: ``status`` the upstream's (None: no answer); ``error_type`` why it failed
        (``connect_error``, ``upstream_timeout``, ...; a status of 400 or more is one by itself)."""
        if self.ended:
            return
        self.ended = True
        status = status if status is not None else self.status
        span = self._span
        if span.is_recording():
            done: dict[str, Any] = dict(attributes) if attributes else {}
            if status is not None:
                done["http.response.status_code"] = status
            error = error_type or (str(status) if status is not None and status >= 400 else None)
            if error:
                done["error.type"] = error
                span.set_status(self._trace.StatusCode.ERROR)
            span.set_attributes(done)
        span.end()
