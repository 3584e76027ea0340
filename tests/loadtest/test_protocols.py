"""Messages and Responses answers judged from bytes (loadtest.protocols), and their requests (loadtest.apirequest).

The providers' streams are written from their public API references (Anthropic "Streaming Messages", OpenAI
"Streaming API responses"), keys spaced as there; the sim's are compact and stamped, as it sends them.
"""

from __future__ import annotations

import json

import pytest

from loadtest.apirequest import ANTHROPIC_VERSION, MESSAGES_MAX_TOKENS, TOOL, api_request, check_messages
from loadtest.client import Endpoint
from loadtest.protocols import (
    MessagesAccounting,
    ResponsesAccounting,
    carries_output,
    judge_body,
    new_accounting,
)
from loadtest.record import SessionRecord
from loadtest.session import build_request


def sse(name: str, obj: dict, *, compact: bool = False) -> bytes:
    data = json.dumps(obj, separators=(",", ":")) if compact else json.dumps(obj)
    return f"event: {name}\ndata: {data}\n\n".encode()


def stamped(events: list[tuple[str, dict]], *, of: int | None = None, seqs: list[int] | None = None) -> list[bytes]:
    """The sim's shape: compact JSON, the stamp as the last key, seq counting every event from 0."""
    n = len(events) if of is None else of
    seqs = list(range(len(events))) if seqs is None else seqs
    return [sse(name, {**obj, "sim": {"ns": 1_000, "seq": k, "of": n}}, compact=True)
            for (name, obj), k in zip(events, seqs, strict=True)]


def judge(cls, events: list[bytes], *, step_ns: int = 1_000_000) -> tuple[SessionRecord, tuple]:
    """Feed each event as its own read, ``step_ns`` apart from t = 1 s."""
    rec = SessionRecord(intended_ns=0)
    acct = cls(rec)
    t = 1_000_000_000
    for e in events:
        acct.feed(e, t)
        t += step_ns
    acct.end(t)
    assert acct.error_event is None and acct.malformed is None, (acct.error_event, acct.malformed)
    return rec, acct.verdict()


def failing(cls, events: list[bytes]) -> tuple[str | None, str | None]:
    """What :func:`loadtest.session.run_session` concludes of a body that ended cleanly: error event, malformed,
    or the verdict."""
    rec = SessionRecord()
    acct = cls(rec)
    for e in events:
        acct.feed(e, 1)
    acct.end(2)
    if acct.error_event is not None:
        return "error_event", acct.error_event
    if acct.malformed is not None:
        return "malformed", acct.malformed
    return acct.verdict()


# --- Anthropic Messages ----------------------------------------------------------------------------------------

START = {"type": "message_start", "message": {
    "id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", "role": "assistant", "content": [],
    "model": "claude-opus-4-6", "stop_reason": None, "stop_sequence": None,
    "usage": {"input_tokens": 25, "output_tokens": 1}}}
STOP = {"type": "message_stop"}


def text_delta(text: str, index: int = 0) -> dict:
    return {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}


def message_delta(reason: str | None = "end_turn", output: int = 15) -> dict:
    return {"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": None},
            "usage": {"output_tokens": output}}


def anthropic_text(words: list[str]) -> list[tuple[str, dict]]:
    """The reference's basic streaming example."""
    return [("message_start", START),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}}),
            ("ping", {"type": "ping"}),
            *[("content_block_delta", text_delta(w)) for w in words],
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", message_delta()),
            ("message_stop", STOP)]


def test_anthropic_reference_stream_is_completed_unverified_with_its_usage():
    rec, verdict = judge(MessagesAccounting, [sse(n, o) for n, o in anthropic_text(["Hello", "!"])])
    assert verdict == (None, None) and rec.completed and rec.unverified
    assert (rec.chunks, rec.prompt_tokens, rec.completion_tokens, rec.finish_reason) == (2, 25, 15, "end_turn")
    # TTFC is the first text delta (the 4th event, read 3 ms after message_start), the gap the next one's.
    assert rec.first_chunk_ns == 1_003_000_000 and rec.gaps_ms == [1.0] and rec.empty_chunks == []


def test_anthropic_stream_in_one_read_and_cut_at_every_byte():
    body = b"".join(sse(n, o) for n, o in anthropic_text(["The", " moon"]))
    for cut in range(1, len(body)):
        rec = SessionRecord()
        acct = MessagesAccounting(rec)
        acct.feed(body[:cut], 5)
        acct.feed(body[cut:], 7)
        acct.end(8)
        assert (acct.malformed, acct.verdict(), rec.chunks) == (None, (None, None), 2), cut


def test_thinking_and_tool_input_count_as_output_but_not_signatures_or_empty_json():
    """Reasoning counts, as chat's reasoning_content does; Anthropic's tool_use block opens with an empty
    partial_json, which carries nothing."""
    events = [
        ("message_start", START),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "thinking_delta", "thinking": "Let me see"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
            "type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "input_json_delta", "partial_json": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "input_json_delta", "partial_json": "{\"city\": \"Paris\"}"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        ("message_delta", message_delta("tool_use", 40)),
        ("message_stop", STOP),
    ]
    for body in ([sse(n, o) for n, o in events], stamped(events)):  # spaced (parsed) and the sim's compact bytes
        rec, verdict = judge(MessagesAccounting, body)
        assert verdict == (None, None)
        assert (rec.chunks, rec.finish_reason, rec.completion_tokens) == (2, "tool_use", 40)
        assert rec.first_chunk_ns == 1_002_000_000 and rec.gaps_ms == [5.0]


def test_the_sims_stamped_stream_is_verified_with_a_relay_delay_per_output_event():
    rec, verdict = judge(MessagesAccounting, stamped(anthropic_text(["a", "b", "c"])))
    assert verdict == (None, None) and rec.verified
    assert rec.chunks == 3 and len(rec.relay_delay_ms) == 3


@pytest.mark.parametrize("cut, kind, detail", [
    (lambda e: e[:5] + e[6:], "bad_seq", "gap: seq 5 missing (seq 6 arrived where 5 was due)"),
    (lambda e: e[:5] + [e[6], e[5]] + e[7:], "bad_seq", "reordered: seq 6 arrived where 5 was due"),
    (lambda e: e[:5] + [e[4]] + e[5:], "bad_seq", "duplicate: seq 4 received twice"),
    (lambda e: e[:-1], "missing_chunks", "8 of 9 events"),
])
def test_a_lost_duplicated_or_reordered_event_fails(cut, kind, detail):
    events = stamped(anthropic_text(["a", "b", "c"]))
    rec = SessionRecord()
    acct = MessagesAccounting(rec)
    for e in cut(events):
        acct.feed(e, 1)
    acct.end(2)
    assert acct.verdict() == (kind, detail)


def test_a_heartbeat_ping_a_relay_adds_is_not_an_event_but_other_unstamped_events_are():
    events = stamped(anthropic_text(["a", "b"]))
    ping = sse("ping", {"type": "ping"}, compact=True)
    rec, verdict = judge(MessagesAccounting, [*events[:4], ping, ping, *events[4:]])
    assert verdict == (None, None) and rec.verified
    foreign = sse("content_block_delta", text_delta("x"), compact=True)
    assert failing(MessagesAccounting, [*events[:4], foreign, *events[4:]]) == (
        "unstamped", "1 of 9 events without the sim's stamp")


def test_messages_error_event_is_the_protocols_error():
    events = [sse(n, o) for n, o in anthropic_text(["a"])[:4]]
    error = sse("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    assert failing(MessagesAccounting, [*events, error]) == ("error_event", "overloaded_error: Overloaded")


@pytest.mark.parametrize("change, verdict", [
    (lambda e: e[:-1], ("no_done", "5 events, no message_stop")),
    (lambda e: [x if x[0] != "message_delta" else ("message_delta", message_delta(None)) for x in e],
     ("no_finish_reason", "message_stop, but no message_delta with a stop_reason")),
    (lambda e: e[1:], ("empty_stream", "message_stop without message_start")),
    (lambda e: [*e, ("ping", {"type": "ping"})], ("malformed", "event after message_stop: b'ping'")),
])
def test_messages_endings_that_fail(change, verdict):
    assert failing(MessagesAccounting, [sse(n, o) for n, o in change(anthropic_text(["a"]))]) == verdict


def test_event_data_that_is_not_json_is_malformed():
    events = [sse(n, o) for n, o in anthropic_text(["a"])]
    bad = b"event: content_block_delta\ndata: {not json\n\n"
    assert failing(MessagesAccounting, [*events[:3], bad, *events[3:]])[0] == "malformed"
    # The sim's stamp without the rest of its JSON around it is not mistaken for its compact bytes.
    fake = b'event: message_delta\ndata: {"sim":{"ns":1,"seq":0,"of":1},}\n\n'
    assert failing(MessagesAccounting, [fake])[0] == "malformed"


def test_an_event_without_an_event_field_is_named_by_its_data():
    body = [f"data: {json.dumps(o)}\n\n".encode() for _, o in anthropic_text(["a", "b"])]
    rec, verdict = judge(MessagesAccounting, body)
    assert verdict == (None, None) and rec.chunks == 2


# --- OpenAI Responses ------------------------------------------------------------------------------------------

RESPONSE = {"id": "resp_67c9fdcecf488190bdd9a0409de3a1ec", "object": "response", "created_at": 1741290958,
            "status": "in_progress", "error": None, "incomplete_details": None, "model": "gpt-4.1-2025-04-14",
            "output": [], "usage": None}
ITEM = {"id": "msg_67c9fdcf37fc8190ba82116e33fb28c5", "type": "message", "status": "in_progress",
        "role": "assistant", "content": []}


def openai_text(words: list[str], *, final: str = "response.completed", **final_fields) -> list[tuple[str, dict]]:
    """The reference's text stream; ``final``: the last event, its response updated by ``final_fields``."""
    where = {"item_id": ITEM["id"], "output_index": 0, "content_index": 0}
    done = {**RESPONSE, "status": "completed", "usage": {"input_tokens": 37, "output_tokens": 11,
                                                          "output_tokens_details": {"reasoning_tokens": 0},
                                                          "total_tokens": 48}, **final_fields}
    events = [("response.created", {"response": RESPONSE}), ("response.in_progress", {"response": RESPONSE}),
              ("response.output_item.added", {"output_index": 0, "item": ITEM}),
              ("response.content_part.added", {**where, "part": {"type": "output_text", "text": "",
                                                                   "annotations": []}}),
              *[("response.output_text.delta", {**where, "delta": w}) for w in words],
              ("response.output_text.done", {**where, "text": "".join(words)}),
              ("response.content_part.done", {**where, "part": {"type": "output_text", "text": "".join(words)}}),
              ("response.output_item.done", {"output_index": 0, "item": {**ITEM, "status": "completed"}}),
              (final, {"response": done})]
    return [(name, {"type": name, "sequence_number": k, **obj}) for k, (name, obj) in enumerate(events)]


def test_openai_reference_stream_is_completed_unverified_with_its_usage():
    rec, verdict = judge(ResponsesAccounting, [sse(n, o, compact=True) for n, o in openai_text(["Hi", " there"])])
    assert verdict == (None, None) and rec.unverified
    assert (rec.chunks, rec.prompt_tokens, rec.completion_tokens, rec.finish_reason) == (2, 37, 11, "completed")
    assert rec.first_chunk_ns == 1_004_000_000 and rec.gaps_ms == [1.0]


def test_an_answer_cut_by_max_output_tokens_is_completed_with_that_reason():
    """``response.incomplete`` with a reason: the protocol says the answer ended, as chat's ``length`` does."""
    events = openai_text(["a", "b"], final="response.incomplete", status="incomplete",
                         incomplete_details={"reason": "max_output_tokens"})
    rec, verdict = judge(ResponsesAccounting, stamped(events))
    assert verdict == (None, None) and rec.verified and rec.finish_reason == "max_output_tokens"
    events = openai_text(["a"], final="response.incomplete", status="incomplete")
    assert failing(ResponsesAccounting, stamped(events)) == (
        "no_finish_reason", "response.incomplete without incomplete_details.reason")


def test_function_call_arguments_and_reasoning_count_empty_deltas_do_not():
    where = {"item_id": "fc_1", "output_index": 0}
    events = openai_text([])
    events[4:4] = [("response.reasoning_text.delta", {"type": "response.reasoning_text.delta", **where,
                                                      "content_index": 0, "delta": "hmm"}),
                   ("response.function_call_arguments.delta", {"type": "response.function_call_arguments.delta",
                                                               **where, "delta": ""}),
                   ("response.function_call_arguments.delta", {"type": "response.function_call_arguments.delta",
                                                               **where, "delta": "{\"city\":"})]
    for body in ([sse(n, o) for n, o in events], stamped(events)):
        rec, verdict = judge(ResponsesAccounting, body)
        assert verdict == (None, None) and rec.chunks == 2


def test_response_failed_and_error_events_are_the_protocols_errors():
    events = [sse(n, o) for n, o in openai_text(["a"])[:5]]
    failed = sse("response.failed", {"type": "response.failed", "sequence_number": 5, "response": {
        **RESPONSE, "status": "failed", "error": {"code": "server_error", "message": "The server had an error"}}})
    assert failing(ResponsesAccounting, [*events, failed]) == (
        "error_event", "response.failed: server_error: The server had an error")
    error = sse("error", {"type": "error", "code": "rate_limit_exceeded", "message": "Slow down", "param": None,
                          "sequence_number": 5})
    assert failing(ResponsesAccounting, [*events, error]) == ("error_event", "error: rate_limit_exceeded: Slow down")


def test_responses_endings_that_fail():
    events = [sse(n, o) for n, o in openai_text(["a"])]
    assert failing(ResponsesAccounting, events[:-1]) == (
        "no_done", "8 events, no response.completed or response.incomplete")
    assert failing(ResponsesAccounting, [*events, events[4]])[0] == "malformed"
    assert failing(ResponsesAccounting, events[1:]) == (
        "empty_stream", "response.completed or response.incomplete without response.created")


def test_carries_output_is_what_ttfc_waits_for():
    assert carries_output("chat", b"message", b'{"choices":[]}')
    assert carries_output("messages", b"content_block_delta", json.dumps(text_delta("a")).encode())
    assert not carries_output("messages", b"message_start", json.dumps(START).encode())
    assert not carries_output("messages", b"content_block_delta", b"{not json")
    assert carries_output("responses", b"response.output_text.delta", b'{"delta":"a"}')
    assert not carries_output("responses", b"response.created", b'{"delta":"a"}')
    assert isinstance(new_accounting("messages", SessionRecord()), MessagesAccounting)


# --- bodies that were not streamed -----------------------------------------------------------------------------


def test_a_messages_body():
    body = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "stop_reason": "max_tokens",
            "content": [{"type": "text", "text": "Hi"}], "usage": {"input_tokens": 9, "output_tokens": 3},
            "sim": {"ns": 1_000_000, "seq": 0, "of": 1}}
    rec = SessionRecord(first_chunk_ns=3_000_000)
    assert judge_body("messages", rec, json.dumps(body).encode()) is None
    assert (rec.finish_reason, rec.prompt_tokens, rec.completion_tokens, rec.relay_delay_ms) == (
        "max_tokens", 9, 3, [2.0])
    rec = SessionRecord()
    assert judge_body("messages", rec, json.dumps({**body, "stop_reason": None}).encode()) == "no_finish_reason"
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    rec = SessionRecord()
    assert judge_body("messages", rec, json.dumps(error).encode()) == "error_event"
    assert rec.error_detail == "overloaded_error: Overloaded"
    assert judge_body("messages", SessionRecord(), b"[1]") == "malformed"


def test_a_responses_body():
    done = {**RESPONSE, "status": "completed", "usage": {"input_tokens": 5, "output_tokens": 2}}
    rec = SessionRecord()
    assert judge_body("responses", rec, json.dumps(done).encode()) is None
    assert (rec.finish_reason, rec.prompt_tokens, rec.completion_tokens) == ("completed", 5, 2)
    cut = {**done, "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}
    assert judge_body("responses", SessionRecord(), json.dumps(cut).encode()) is None
    assert judge_body("responses", SessionRecord(), json.dumps(RESPONSE).encode()) == "no_finish_reason"
    failed = {**RESPONSE, "status": "failed", "error": {"code": "server_error", "message": "oops"}}
    rec = SessionRecord()
    assert judge_body("responses", rec, json.dumps(failed).encode()) == "error_event"
    assert rec.error_detail == "failed: server_error: oops"


# --- the requests ----------------------------------------------------------------------------------------------

ENDPOINT = Endpoint.from_url("http://127.0.0.1:9/anthropic/v1")
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]}, {"role": "user", "content": "Moon?"}]


def body_of(spec) -> dict:
    return json.loads(spec.body)


def test_a_messages_request_as_the_reference_writes_it():
    spec = api_request("messages", ENDPOINT, model="kimi-k2", messages=CHAT, max_tokens=None, stream=True,
                       api_key="sk-1", extra={"sim_chunks": 3})
    assert (spec.path, spec.api, spec.stream) == (b"/anthropic/v1/messages", "messages", True)
    headers = dict(spec.headers)
    assert headers[b"x-api-key"] == b"sk-1" and headers[b"anthropic-version"] == ANTHROPIC_VERSION
    assert b"authorization" not in headers and headers[b"accept"] == b"text/event-stream"
    assert body_of(spec) == {
        "model": "kimi-k2", "max_tokens": MESSAGES_MAX_TOKENS, "system": "Be brief.", "stream": True,
        "messages": [{"role": "user", "content": "Hi"},
                     {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
                     {"role": "user", "content": "Moon?"}],
        "sim_chunks": 3}
    spec = api_request("messages", ENDPOINT, model="m", messages=CHAT[1:2], max_tokens=7, stream=False,
                       tool_call=True)
    assert body_of(spec)["max_tokens"] == 7 and body_of(spec)["tool_choice"] == {"type": "any"}
    assert body_of(spec)["tools"] == [{"name": "get_weather", "description": TOOL["description"],
                                       "input_schema": TOOL["parameters"]}]


def test_a_responses_request_as_the_reference_writes_it():
    one = api_request("responses", ENDPOINT, model="m", messages=CHAT[1:2], max_tokens=5, stream=True, api_key="k")
    assert one.path == b"/anthropic/v1/responses" and dict(one.headers)[b"authorization"] == b"Bearer k"
    assert body_of(one) == {"model": "m", "input": "Hi", "max_output_tokens": 5, "stream": True}
    many = body_of(api_request("responses", ENDPOINT, model="m", messages=CHAT, max_tokens=None, stream=False,
                               tool_call=True))
    assert "max_output_tokens" not in many and many["input"][2] == {
        "role": "assistant", "content": [{"type": "output_text", "text": "Hello"}]}
    assert many["tools"] == [{"type": "function", **TOOL}] and many["tool_choice"] == "required"


def test_a_chat_request_is_the_one_it_always_was():
    kw = dict(model="m", messages=CHAT, max_tokens=4, stream=True, api_key="k", extra={"sim_ttft": 0.1})
    assert api_request("chat", ENDPOINT, **kw) == build_request(ENDPOINT, **kw)
    tools = body_of(api_request("chat", ENDPOINT, **kw, tool_call=True))
    assert tools["tools"] == [{"type": "function", "function": TOOL}] and tools["tool_choice"] == "required"


def test_what_cannot_be_sent_in_another_protocol_is_named():
    with pytest.raises(ValueError, match="no role 'tool'"):
        check_messages("messages", [{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}])
    with pytest.raises(ValueError, match="only text content"):
        check_messages("responses", [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}])
    with pytest.raises(ValueError, match="needs a user message"):
        check_messages("messages", [{"role": "system", "content": "a"}])
    check_messages("chat", [{"role": "tool", "content": "b"}])  # chat sends what the dataset holds
