"""The other endpoints a relay passes through: embeddings, token counts, balance, and file upload and download.

Uploads are read as they arrive and downloads are sent in timed parts, so tests can watch a relay stream
both ways (``SimServer.upload_bytes``, ``parts_sent``, ``downloads_cut``).
"""

from __future__ import annotations

import hashlib
import time

import h11
import trio

from loadtest import simcontent
from loadtest.sim._http import ClosedErrors, next_event, send, send_error, send_simple
from loadtest.sim._plan import BadRequest, make_plan, schedule
from loadtest.sim._state import Sim

__all__ = ["PASS_THROUGH", "serve_pass_through"]

# Moonshot's other endpoints (and OpenAI's embeddings) that the sim answers, for the relay's pass-through.
PASS_THROUGH = frozenset(
    {"/v1/embeddings", "/v1/tokenizers/estimate-token-count", "/v1/users/me/balance", "/v1/files"}
)


async def serve_pass_through(sim: Sim, stream, conn, method: str, path: str, headers: dict, body,
                             bad_json: bool) -> None:
    """Answer one request to a :data:`PASS_THROUGH` path or ``/v1/files/...``."""
    if path == "/v1/files" and method == "POST":
        return await _upload(sim, stream, conn)
    if path.startswith("/v1/files/") and path.endswith("/content") and method == "GET":
        return await _download(sim, stream, conn, path.split("/")[3], headers)
    if path == "/v1/users/me/balance" and method == "GET":
        return await send_simple(stream, conn, 200, simcontent.BALANCE)
    if method != "POST":
        return await send_error(stream, conn, 405, "Method not allowed", "invalid_request_error")
    if bad_json or not isinstance(body, dict):
        return await send_error(stream, conn, 400, "Invalid request: body is not a JSON object")
    try:
        if path == "/v1/embeddings":
            answer = simcontent.embeddings(body.get("model"), body.get("input"))
        else:
            answer = simcontent.token_count(body.get("messages"))
    except ValueError as exc:
        return await send_error(stream, conn, 400, f"Invalid request: {exc}")
    await send_simple(stream, conn, 200, answer)


async def _upload(sim: Sim, stream, conn) -> None:
    """``POST /v1/files``: counts and hashes the body as it arrives (``upload_bytes`` shows how far it is),
    then answers with Moonshot's file object."""
    server = sim.server
    server.upload_bytes = 0
    digest = hashlib.sha256()
    start = b""  # the first bytes, where a multipart body names the file and its purpose
    while True:
        part = await next_event(stream, conn)
        if isinstance(part, h11.EndOfMessage):
            break
        if not isinstance(part, h11.Data):
            return
        digest.update(part.data)
        if len(start) < 4096:
            start += part.data[: 4096 - len(start)]
        server.upload_bytes += len(part.data)
    size = server.upload_bytes
    file_id = f"file-sim{len(server.files) + 1:04d}"
    server.files[file_id] = size
    answer = simcontent.file_object(file_id, size, start, digest.hexdigest(), int(time.time()))
    await send_simple(stream, conn, 200, answer)


async def _download(sim: Sim, stream, conn, file_id: str, headers: dict) -> None:
    """``GET /v1/files/{id}/content``: the sim's chunks/interval/ttft (``X-Sim-*``) shape a slow body of
    ``chunks`` parts; ``parts_sent`` shows how far it is (``X-Sim-Fault: status:N`` answers N instead)."""
    try:
        plan = make_plan(sim.config, {}, headers)
    except BadRequest as exc:
        return await send_error(stream, conn, 400, f"Invalid request: {exc}")
    if plan.fault == "status":
        return await send_error(stream, conn, plan.fault_arg)
    server = sim.server
    if file_id not in server.files:
        return await send_error(stream, conn, 404, f"Not found: file {file_id}", "resource_not_found_error")
    head = [
        ("content-type", "application/octet-stream"),
        ("content-disposition", f'attachment; filename="{file_id}.txt"'),
        ("transfer-encoding", "chunked"),
    ]
    server.parts_sent = 0
    await send(stream, conn.send(h11.Response(status_code=200, headers=head)))
    try:
        for k, at in enumerate(schedule(plan, trio.current_time(), sim.rng)[: plan.chunks]):
            await sim.timer.sleep_until(at)
            await send(stream, conn.send(h11.Data(data=simcontent.file_part(file_id, k))))
            server.parts_sent += 1
        await send(stream, conn.send(h11.EndOfMessage()))
    except ClosedErrors:
        server.downloads_cut += 1
        raise
