"""A real OTLP/HTTP traces receiver for the tests: ``POST /v1/traces`` with an ``application/x-protobuf`` body,
decoded with opentelemetry-proto's ``ExportTraceServiceRequest``, on 127.0.0.1:0 (trio + h11 as the scripted
servers, keep-alive, as a collector serves the SDK's exporter). The spans it received are
:attr:`OTLPReceiver.spans`, flattened into :class:`ReceivedSpan` (ids in hex, attributes as Python values)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import h11
import trio
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.support.scripted import ScriptedServer, read_request

KINDS = {Span.SPAN_KIND_SERVER: "server", Span.SPAN_KIND_CLIENT: "client", Span.SPAN_KIND_INTERNAL: "internal"}


@dataclass
class ReceivedSpan:
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root span
    attributes: dict[str, Any]
    events: list[str]
    error: bool  # its status is ERROR
    resource: dict[str, Any] = field(repr=False)
    start_ns: int = 0
    end_ns: int = 0


def value(any_value: AnyValue) -> Any:
    """An OTLP AnyValue as a Python value."""
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [value(v) for v in any_value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in any_value.kvlist_value.values}
    return None if kind is None else getattr(any_value, kind)


def decode(body: bytes) -> list[ReceivedSpan]:
    """Every span of one export request."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    out = []
    for resource_spans in request.resource_spans:
        resource = {kv.key: value(kv.value) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                out.append(ReceivedSpan(
                    name=span.name, kind=KINDS.get(span.kind, str(span.kind)), trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(), parent_id=span.parent_span_id.hex(),
                    attributes={kv.key: value(kv.value) for kv in span.attributes},
                    events=[event.name for event in span.events],
                    error=span.status.code == Status.STATUS_CODE_ERROR, resource=resource,
                    start_ns=span.start_time_unix_nano, end_ns=span.end_time_unix_nano,
                ))  # fmt: skip
    return out


class OTLPReceiver(ScriptedServer):
    """Serve with ``receiver = await nursery.start(OTLPReceiver().serve)``; ``traces_url`` is its endpoint.
    ``headers``: each export request's headers."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.headers: list[dict[str, str]] = []
        self.refused: list[str] = []  # what it answered 4xx, and why

    @property
    def traces_url(self) -> str:
        return self.url.removesuffix("/v1") + "/v1/traces"

    def by_name(self, name: str) -> list[ReceivedSpan]:
        return [span for span in self.spans if span.name == name]

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while (message := await read_request(conn, stream)) is not None:  # keep-alive, as the exporter's pool
                status, answer = self._answer(*message)
                head = [(b"content-type", b"application/x-protobuf"), (b"content-length", b"%d" % len(answer))]
                await stream.send_all(conn.send(h11.Response(status_code=status, headers=head))
                                      + conn.send(h11.Data(data=answer)) + conn.send(h11.EndOfMessage()))  # fmt: skip
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()

    def _answer(self, request: h11.Request, body: bytes) -> tuple[int, bytes]:
        headers = {name.decode().lower(): v.decode() for name, v in request.headers}
        if request.method != b"POST" or request.target != b"/v1/traces":
            self.refused.append(f"{request.method.decode()} {request.target.decode()}")
            return 404, b""
        if headers.get("content-type") != "application/x-protobuf":
            self.refused.append(f"content-type {headers.get('content-type')}")
            return 415, b""
        self.headers.append(headers)
        self.spans += decode(body)
        return 200, ExportTraceServiceResponse().SerializeToString()
