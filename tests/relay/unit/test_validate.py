import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.protocol import InvalidRequest, check_chat_object, parse_chat_request


def test_forwards_bytes_untouched_when_model_present():
    raw = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"extra":1}'
    chat = parse_chat_request(raw, "moonshot-v1-8k")
    assert chat.body is raw and chat.stream is True and chat.model == "m"


def test_missing_model_gets_default():
    chat = parse_chat_request(b'{"messages":[]}', "moonshot-v1-8k")
    assert json.loads(chat.body)["model"] == "moonshot-v1-8k"
    assert chat.stream is False


@pytest.mark.parametrize(
    "raw, code",
    [
        (b"{not json", "invalid_json"),
        (b"[1,2]", "invalid_json"),
        (b'{"messages": "hi"}', "invalid_messages"),
        (b'{"messages": [], "stream": "yes"}', "invalid_stream"),
        (b'{"messages": [], "model": 3}', "invalid_model"),
        (b"\xff\xfe", "invalid_encoding"),
    ],
)
def test_rejects(raw, code):
    with pytest.raises(InvalidRequest) as info:
        parse_chat_request(raw, "d")
    assert info.value.code == code


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@given(json_values)
def test_any_json_is_accepted_or_refused_cleanly(value):
    raw = json.dumps(value).encode()
    try:
        chat = parse_chat_request(raw, "d")
    except InvalidRequest:
        return
    assert isinstance(value, dict) and isinstance(value["messages"], list)
    assert json.loads(chat.body)["model"] == value.get("model", "d")


@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_crash(raw):
    try:
        parse_chat_request(raw, "d")
    except InvalidRequest:
        pass


def test_check_object_builds_body():
    chat = check_chat_object({"messages": [], "stream": True}, None, "d")
    assert json.loads(chat.body) == {"messages": [], "stream": True, "model": "d"}
