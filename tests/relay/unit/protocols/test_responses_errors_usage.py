"""The relay's errors in the Responses API's shape, as the official SDK raises them, and native Responses usage
(what the relay charges for a Responses upstream)."""

import json

import openai
import pytest

from proxy.protocol.responses import response_usage, responses_error, responses_event_usage

from .canned import canned_server
from .corpus import payloads


@pytest.mark.parametrize(
    "status, code, kind, raised",
    [
        (400, "invalid_json", "invalid_request_error", openai.BadRequestError),
        (401, "invalid_api_key", "invalid_request_error", openai.AuthenticationError),
        (404, "model_not_found", "invalid_request_error", openai.NotFoundError),
        (429, "rate_limit_error", "rate_limit_error", openai.RateLimitError),
        (502, "upstream_unavailable", "server_error", openai.InternalServerError),
        (503, "upstream_busy", "server_error", openai.InternalServerError),
    ],
)
def test_each_relay_error_reads_as_the_sdks_error(status, code, kind, raised):
    got_status, headers, body = responses_error(status, code, "What went wrong.", retry_after=0.5)
    assert got_status == status and headers == {"content-type": "application/json", "retry-after": "1"}
    assert json.loads(body) == {"error": {"message": "What went wrong.", "type": kind, "param": None, "code": code}}
    with canned_server() as server:
        server.answer(body, status=status)
        with openai.OpenAI(api_key="k", base_url=server.url + "/v1", max_retries=0) as client:
            with pytest.raises(raised) as info:
                client.responses.create(model="m", input="hi")
    assert info.value.status_code == status and info.value.code == code and info.value.type == kind


def test_the_error_hierarchys_own_type_and_param_win():
    _, headers, body = responses_error(400, "bad", "Bad.", type_="invalid_request_error", param="input.0")
    assert "retry-after" not in headers and json.loads(body)["error"]["param"] == "input.0"


def test_a_native_stream_reports_usage_in_its_terminal_event_only():
    found = [responses_event_usage(p) for p in payloads("responses_native.sse")]
    assert found[:-1] == [None, None]
    usage = found[-1]
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.total_tokens) == (37, 11, 5, 48)
    assert responses_event_usage(b'{"type":["x"],"usage":{}}') is None and responses_event_usage(b'"usage"') is None


def test_a_non_streamed_response_usage():
    usage = response_usage(
        b'{"usage":{"input_tokens":4,"output_tokens":6,"output_tokens_details":{"reasoning_tokens":2}}}'
    )
    assert (usage.prompt_tokens, usage.completion_tokens, usage.reasoning_tokens) == (4, 6, 2)
    assert response_usage(b"{}") is None and response_usage(b"[") is None
