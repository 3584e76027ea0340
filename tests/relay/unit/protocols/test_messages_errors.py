"""The relay's errors in Anthropic's shape: the status and type the Messages reference lists for each, and the
exception the official SDK raises for them (which is how a client decides to retry, back off or give up)."""

import json

import anthropic
import pytest

from proxy.protocol.messages import messages_error, messages_error_event

from .canned import canned_server
from .corpus import parsed


@pytest.mark.parametrize(
    "status, code, out_status, kind, raised",
    [
        (400, "invalid_json", 400, "invalid_request_error", anthropic.BadRequestError),
        (401, "invalid_api_key", 401, "authentication_error", anthropic.AuthenticationError),
        (403, "permission_denied_error", 403, "permission_error", anthropic.PermissionDeniedError),
        (404, "model_not_found", 404, "not_found_error", anthropic.NotFoundError),
        (413, "request_too_large", 413, "request_too_large", anthropic.APIStatusError),
        (415, "unsupported_media_type", 415, "invalid_request_error", anthropic.APIStatusError),
        (429, "rate_limit_error", 429, "rate_limit_error", anthropic.RateLimitError),
        (429, "engine_overloaded_error", 529, "overloaded_error", anthropic.OverloadedError),  # Moonshot's overload
        (429, "relay_overloaded", 529, "overloaded_error", anthropic.OverloadedError),
        (500, "server_error", 500, "api_error", anthropic.InternalServerError),
        (502, "upstream_unavailable", 502, "api_error", anthropic.InternalServerError),
        (503, "upstream_busy", 529, "overloaded_error", anthropic.OverloadedError),
        (504, "upstream_timeout", 504, "timeout_error", anthropic.InternalServerError),
    ],
)
def test_each_relay_error_has_the_status_and_type_the_reference_lists(status, code, out_status, kind, raised):
    got_status, headers, body = messages_error(status, code, "What went wrong.", retry_after=1.2)
    assert got_status == out_status and headers == {"content-type": "application/json", "retry-after": "2"}
    assert json.loads(body) == {"type": "error", "error": {"type": kind, "message": "What went wrong."}}
    with canned_server() as server:
        server.answer(body, status=got_status)
        with anthropic.Anthropic(api_key="k", base_url=server.url, max_retries=0) as client:
            with pytest.raises(raised) as info:
                client.messages.create(model="m", max_tokens=1, messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == out_status and info.value.body["error"]["type"] == kind


def test_the_request_id_goes_in_the_body_when_given():
    _, headers, body = messages_error(400, None, "Bad.", request_id="req_1")
    assert "retry-after" not in headers and json.loads(body)["request_id"] == "req_1"


def test_a_failure_after_the_start_is_an_error_event():
    assert parsed(messages_error_event(503, "upstream_busy", "Busy.")) == [
        ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Busy."}})
    ]
