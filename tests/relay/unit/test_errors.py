"""One error tree (proxy/errors.py), rendered once at the edge (proxy/edge/_errors.py) in each client protocol's
shape: the status, the type and code, Retry-After and extra headers survive every rendering."""

import json

import httpx
import pytest

from proxy.edge._errors import protocol_of, render
from proxy.errors import InvalidRequest, Refused, RelayError, UpstreamFailed, shutting_down, upstream_failure
from proxy.protocol import MalformedAnswer, map_transport_error


def test_the_tree_gives_each_kind_its_type_and_status():
    assert (InvalidRequest("x").status, InvalidRequest("x").type) == (400, "invalid_request_error")
    refused = Refused("x", "relay_overloaded")
    assert (refused.status, refused.type, refused.retry_after) == (429, "rate_limit_error", 1)
    assert (shutting_down().status, shutting_down().type) == (503, "server_error")
    assert isinstance(MalformedAnswer("x"), UpstreamFailed) and MalformedAnswer("x").status == 502
    for exc in (InvalidRequest("x"), shutting_down(), MalformedAnswer("x")):
        assert isinstance(exc, RelayError)


@pytest.mark.parametrize(("exc", "status", "code"), [
    (httpx.ConnectTimeout("t"), 504, "upstream_connect_timeout"),
    (httpx.ReadTimeout("t"), 504, "upstream_timeout"),
    (httpx.PoolTimeout("t"), 503, "upstream_busy"),
    (httpx.ConnectError("c"), 502, "upstream_unavailable"),
    (httpx.RemoteProtocolError("p"), 502, "upstream_error"),
])  # fmt: skip
def test_transport_failures_are_mapped_once(exc, status, code):
    failed = upstream_failure(exc)
    assert (failed.status, failed.code, failed.type) == (status, code, "upstream_error")
    assert map_transport_error(exc) == (status, failed.body())


def _json(response):
    return json.loads(response.response.data)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings", "/v1/models"])
def test_openai_routes_get_openai_errors_with_retry_after_and_extra_headers(path):
    refused = Refused("slow down", "rate_limit_exceeded", retry_after=7, type_="tokens",
                      headers={"x-ratelimit-remaining-tokens": "0"})  # fmt: skip
    response = render(refused, path)
    assert response.status_code == 429 and response.headers["retry-after"] == "7"
    assert response.headers["x-ratelimit-remaining-tokens"] == "0"
    assert _json(response) == {"error": {"message": "slow down", "type": "tokens", "code": "rate_limit_exceeded"}}


def test_the_seed_route_gets_one_ndjson_line():
    response = render(InvalidRequest("bad", "invalid_json"), "/chat/completions")
    assert response.mimetype == "application/x-ndjson" and response.response.data.endswith(b"\n")
    assert _json(response)["error"]["code"] == "invalid_json"


def test_messages_and_responses_routes_get_their_own_shapes():
    messages = render(shutting_down(), "/v1/messages")
    assert messages.status_code == 529 and _json(messages)["type"] == "error"
    assert _json(messages)["error"]["type"] == "overloaded_error" and messages.headers["retry-after"] == "1"
    responses = render(InvalidRequest("bad", "invalid_json"), "/v1/responses")
    assert responses.status_code == 400 and _json(responses)["error"]["code"] == "invalid_json"
    assert [protocol_of(p) for p in ("/v1/messages/count_tokens", "/v1/responses", "/chat/completions", "/v1/x")] == \
        ["messages", "responses", "ndjson", "chat"]  # fmt: skip
