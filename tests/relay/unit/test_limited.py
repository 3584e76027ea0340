"""Who an upstream's 429 is about (proxy/protocol/_limited.py), from the bodies and headers providers send."""

import json

import httpx
import pytest

from proxy.protocol import Limited, limited_by


def error(message: str, type_: str | None = None, code: str | None = None, **top) -> bytes:
    return json.dumps({**top, "error": {"message": message, "type": type_, "code": code}}).encode()


ABOUT_THE_REQUEST = [
    error(
        "Request too large for gpt-4o in organization org-x on tokens per min (TPM): Limit 30000, Requested "
        "36278. The input or output tokens must be reduced in order to run successfully.",
        "tokens",
        "rate_limit_exceeded",
    ),
    error("This model's maximum context length is 8192 tokens.", "invalid_request_error", "context_length_exceeded"),
    error("Request exceeds the maximum size", "request_too_large", None, type="error"),
    error(
        "Invalid request: Your request exceeded model token limit: 262144 (requested: 269030)", "invalid_request_error"
    ),
]
ABOUT_THE_ACCOUNT = [
    error(
        "Your account org-x<ak-y> request reached organization max RPM: 3, please try again after 1 seconds",
        "rate_limit_reached_error",
    ),
    error("request reached organization TPD rate limit, current: 1508351, limit: 1500000", "rate_limit_reached_error"),
    error("Your account is suspended due to insufficient balance", "exceeded_current_quota_error"),
    error("The engine is currently overloaded, please try again later", "engine_overloaded_error"),
    error(
        "Rate limit reached for gpt-4o in organization org-x on tokens per min (TPM): Limit 30000, Used 29937, "
        "Requested 385. Please try again in 644ms.",
        "tokens",
        "rate_limit_exceeded",
    ),
    error(
        "You exceeded your current quota, please check your plan and billing details.",
        "insufficient_quota",
        "insufficient_quota",
    ),
    error(
        "This request would exceed your account's rate limit. Please try again later.", "rate_limit_error", type="error"
    ),
]


@pytest.mark.parametrize("body", ABOUT_THE_REQUEST)
def test_a_429_about_the_request_is_told_by_its_body_whatever_the_headers(body):
    assert limited_by(httpx.Headers({"retry-after": "6", "x-ratelimit-remaining-requests": "0"}), body) \
        is Limited.REQUEST  # fmt: skip


@pytest.mark.parametrize("body", ABOUT_THE_ACCOUNT)
def test_a_429_about_the_account_is_told_by_its_body(body):
    assert limited_by(httpx.Headers(), body) is Limited.ACCOUNT


@pytest.mark.parametrize(
    "headers",
    [{"Retry-After": "30"}, {"retry-after-ms": "644"}, {"X-RateLimit-Remaining": "0"},
     {"x-ratelimit-remaining-requests": "0", "x-ratelimit-remaining-tokens": "12000"},
     {"anthropic-ratelimit-input-tokens-remaining": "0"}],
)  # fmt: skip
def test_without_a_telling_body_the_headers_decide(headers):
    for body in (b"", b"Too Many Requests", error("slow down"), b"[1, 2]", b"{" * 20000):
        assert limited_by(httpx.Headers(headers), body) is Limited.ACCOUNT


@pytest.mark.parametrize(
    "headers",
    [{}, {"x-ratelimit-remaining-tokens": "29990"}, {"x-ratelimit-remaining": "abc"},
     {"anthropic-ratelimit-input-tokens-reset": "0"}],
)  # fmt: skip
@pytest.mark.parametrize("body", [b"", b"Too Many Requests", error("slow down"), b'{"error": "busy"}', b"\xff"])
def test_a_429_that_says_neither_is_unknown(headers, body):
    assert limited_by(httpx.Headers(headers), body) is Limited.UNKNOWN
