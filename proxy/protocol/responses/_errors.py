"""The relay's errors in the Responses API's shape, sans I/O: (status, code, message, retry-after) in, a response out.

The Responses API answers errors as chat completions do (https://platform.openai.com/docs/guides/error-codes):
``{"error": {"message", "type", "param", "code"}}`` with the HTTP status. The type is the one the relay's error
hierarchy gives, else the status's: ``invalid_request_error`` for a 4xx, ``rate_limit_error`` for 429,
``server_error`` for a 5xx. A stream that fails after it started ends with ``response.failed`` (``_stream.py``).
"""

from __future__ import annotations

import math

from .. import JSON, dumps


def responses_error_type(status: int) -> str:
    if status == 429:
        return "rate_limit_error"
    return "server_error" if status >= 500 else "invalid_request_error"


def responses_error(
    status: int,
    code: str | None,
    message: str,
    retry_after: float | None = None,
    *,
    type_: str | None = None,
    param: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of an error response to a Responses client."""
    headers = {"content-type": JSON}
    if retry_after is not None:
        headers["retry-after"] = str(max(0, math.ceil(retry_after)))
    error = {"message": message, "type": type_ or responses_error_type(status), "param": param, "code": code}
    return status, headers, dumps({"error": error})
