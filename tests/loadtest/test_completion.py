"""When a session counts as completed: the protocol's end (status 200, no error event, a finish_reason, [DONE]),
with the sim's stamps adding *verified*; a usage chunk the client never asked for is not owed to it; the exit status
follows the share of failed sessions."""

from __future__ import annotations

import json
import sys

import h11
import pytest
import trio

from loadtest.accounting import StreamAccounting
from loadtest.record import SessionRecord
from tests.conftest import start_relay, start_sim
from tests.support.scripted import ScriptedServer, read_request

USAGE = {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}


def _event(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def openai_stream(words: list[str], *, usage: bool) -> bytes:
    """What OpenAI sends: a role chunk with empty content, one chunk per token, a finish chunk, the usage chunk
    (with ``stream_options.include_usage``), ``[DONE]``; keys spaced as Python's json writes them, no stamps."""
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x"}
    out = [_event({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                         "finish_reason": None}]})]
    out += [_event({**base, "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]}) for w in words]
    out.append(_event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    if usage:
        out.append(_event({**base, "choices": [], "usage": USAGE}))
    return b"".join(out) + b"data: [DONE]\n\n"


def moonshot_stream(words: list[str]) -> bytes:
    """What Moonshot sends: usage inside ``choices[0]`` of the finish chunk."""
    base = {"id": "cmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "moonshot-v1-8k"}
    out = [_event({**base, "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]}) for w in words]
    out.append(_event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "usage": USAGE}]}))
    return b"".join(out) + b"data: [DONE]\n\n"


class Provider(ScriptedServer):
    """A real provider's shape over chunked HTTP/1.1, each event in its own chunk, keep-alive."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while await read_request(conn, stream):
                head = h11.Response(status_code=200, headers=[("content-type", "text/event-stream"),
                                                              ("transfer-encoding", "chunked")])
                await stream.send_all(conn.send(head))
                for event in self.body.split(b"\n\n")[:-1]:
                    await stream.send_all(conn.send(h11.Data(data=event + b"\n\n")))
                await stream.send_all(conn.send(h11.EndOfMessage()))
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()


async def loadtest(*args: str) -> int:
    """``python -m loadtest ARGS`` as a user runs it, against servers in this test's process; its exit status."""
    with trio.fail_after(60):
        done = await trio.run_process([sys.executable, "-m", "loadtest", *args], check=False, capture_stdout=True,
                                      capture_stderr=True)
    assert done.returncode in (0, 1), done.stderr.decode()
    return done.returncode


def _account(body: bytes, **kwargs) -> tuple[SessionRecord, tuple[str | None, str | None]]:
    rec = SessionRecord()
    acct = StreamAccounting(rec, **kwargs)
    acct.feed(body, 1_000_000)
    acct.end(2_000_000)
    return rec, acct.verdict()


# --- completed by the protocol, verified by the stamps -------------------------------------------------------------


@pytest.mark.parametrize("body", [openai_stream(["a", "b", "c"], usage=True), openai_stream(["a"], usage=False),
                                  moonshot_stream(["a", "b"])])
def test_a_providers_stream_is_completed_but_not_verified(body):
    rec, verdict = _account(body)
    assert verdict == (None, None)
    assert rec.completed and not rec.verified and rec.unverified
    assert rec.finish_reason == "stop"


def test_a_stream_that_ends_without_a_finish_reason_fails():
    """``[DONE]`` alone does not say the answer was whole: a relay that cut it short may still end the stream."""
    body = openai_stream(["a", "b"], usage=False).replace(b'"finish_reason": "stop"', b'"finish_reason": null')
    rec, verdict = _account(body)
    assert verdict == ("no_finish_reason", "4 chunks, none with a finish_reason")


async def test_goodput_against_a_provider_without_stamps(nursery, tmp_path):
    provider = await nursery.start(Provider(openai_stream(["The", " moon", " is", " far"], usage=True)).serve)
    out = tmp_path / "run"
    code = await loadtest(*["--url", provider.url, "-c", "4", "--requests", "12", "--out", str(out), "--quiet",
                 "--slo", "ttfc=10s,e2e=20s"])
    s = json.loads((out / "result.json").read_text())["summary"]
    assert (s["sessions"], s["completed"], s["verified"], s["unverified"], s["failed"]) == (12, 12, 0, 12, 0)
    assert s["goodput"]["sessions"] == 12 and s["goodput"]["fraction"] == 1.0
    assert code == 0


# --- the usage chunk the relay strips -----------------------------------------------------------------------------


def _stamped_events(n: int, *, include_usage: bool) -> list[bytes]:
    """The sim's stream shape, stamped: ``n`` content chunks, the finish chunk, and the usage chunk when asked."""
    of = n + (2 if include_usage else 1)
    events = [{"choices": [{"index": 0, "delta": {"content": "w"}, "finish_reason": None}]} for _ in range(n)]
    final: dict = {"index": 0, "delta": {}, "finish_reason": "stop"}
    if not include_usage:
        final["usage"] = USAGE
    events.append({"choices": [final]})
    if include_usage:
        events.append({"choices": [], "usage": USAGE})
    return [_event({**e, "sim": {"ns": 1, "seq": k, "of": of}}) for k, e in enumerate(events)]


def test_a_usage_chunk_the_client_did_not_ask_for_is_not_owed():
    """The relay asked for usage on the client's behalf and cut that chunk out: nothing the client asked for is lost."""
    cut = b"".join(_stamped_events(20, include_usage=True)[:-1]) + b"data: [DONE]\n\n"
    rec, verdict = _account(cut)
    assert verdict == (None, None), verdict
    assert rec.verified and rec.chunks == 21 and rec.expected_chunks == 22


def test_a_usage_chunk_the_client_asked_for_is_owed():
    cut = b"".join(_stamped_events(20, include_usage=True)[:-1]) + b"data: [DONE]\n\n"
    rec, verdict = _account(cut, usage_asked=True)
    assert verdict == ("missing_chunks", "21 of 22 chunks")


def test_a_lost_content_chunk_is_still_missing():
    """Only the last chunk, after the finish, may be the usage chunk: losing any other one fails the stream."""
    events = _stamped_events(20, include_usage=False)
    rec, verdict = _account(b"".join(events[:-1]) + b"data: [DONE]\n\n")  # the finish chunk lost
    assert verdict[0] == "missing_chunks"


async def test_a_relayed_stream_of_a_token_counting_key_completes(nursery, tmp_path):
    """A key with a token limit makes the relay ask for usage and cut that chunk out of what the client gets."""
    sim = await start_sim(nursery, chunks=20)
    keys = tmp_path / "keys"
    keys.write_text("mr-tokens-0123456789 name=t tpm=1000000\n")
    root = await start_relay(nursery, sim.url, api_keys_file=str(keys))
    out = tmp_path / "run"
    code = await loadtest(*["--url", root + "/v1", "--api-key", "mr-tokens-0123456789", "-c", "2", "--requests", "4",
                 "--out", str(out), "--quiet"])
    s = json.loads((out / "result.json").read_text())["summary"]
    assert (s["completed"], s["verified"], s["failed"]) == (4, 4, 0), s["errors_by_kind"]
    assert code == 0


# --- the exit status ----------------------------------------------------------------------------------------------


class HalfRefused(Provider):
    """Every other request gets a 503 (the connection closes after it)."""

    def __init__(self, body: bytes) -> None:
        super().__init__(body)
        self.requests = 0

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.requests += 1
        if self.requests % 2:
            return await super()._handle(stream)
        conn = h11.Connection(h11.SERVER)
        async with stream:
            if await read_request(conn, stream):
                body = b'{"error": {"message": "overloaded", "type": "engine_overloaded_error"}}'
                head = h11.Response(status_code=503, headers=[("content-type", "application/json"),
                                                              ("content-length", str(len(body))),
                                                              ("connection", "close")])
                await stream.send_all(conn.send(head) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))


@pytest.mark.parametrize("ratio, code", [(None, 1), ("0.4", 1), ("0.5", 0), ("1", 0)])
async def test_exit_status_follows_the_share_of_failed_sessions(nursery, tmp_path, ratio, code):
    """Half of the sessions fail: exit 1 unless --max-failed-ratio tolerates that share (default 0: none)."""
    provider = await nursery.start(HalfRefused(openai_stream(["a"], usage=False)).serve)
    args = ["--url", provider.url, "-c", "1", "--requests", "4", "--no-keepalive", "--quiet", "--no-save-requests",
            "--out", str(tmp_path / "run")]
    if ratio is not None:
        args += ["--max-failed-ratio", ratio]
    assert await loadtest(*args) == code
    s = json.loads((tmp_path / "run" / "result.json").read_text())["summary"]
    assert (s["completed"], s["failed"]) == (2, 2)


async def test_every_session_failed_exits_1(nursery, tmp_path):
    sim = await start_sim(nursery, chunks=3)
    args = ["--url", sim.url + "/nothing-here", "-c", "2", "--requests", "4", "--quiet", "--no-save-requests",
            "--out", str(tmp_path / "run")]
    assert await loadtest(*args) == 1
