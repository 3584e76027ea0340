"""Pass-through paths: normalised once (proxy/protocol, pure), and end to end against a recording upstream whose
base URL has a path of its own, so that escaping it shows: nothing outside the base path and the allow-list
ever arrives, and no variant of a chat or models path skips the relay's own handlers."""

import json
from urllib.parse import quote

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from proxy.protocol import SEGMENT_CHARS, PathRefused, normalise
from proxy.relay import path_filter
from tests.conftest import start_relay
from tests.support.recorder import raw_request, serve_recorder

# -- pure ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        (b"/v1/embeddings", "/v1/embeddings"),
        (b"/v1/%65mbeddings", "/v1/embeddings"),  # an encoded unreserved character is that character
        (b"/v1/files/file-1/content", "/v1/files/file-1/content"),
        (b"/v1/files/a/../file-2", "/v1/files/file-2"),
        (b"/v1/embeddings/../files", "/v1/files"),
        (b"/v1/./chat/completions", "/v1/chat/completions"),
        (b"/v1/chat//completions", "/v1/chat/completions"),
        (b"/v1/chat/completions/", "/v1/chat/completions"),
        (b"/v1/%2e/chat/completions", "/v1/chat/completions"),
        (b"/v1/x/%2E%2E/chat/completions/.", "/v1/chat/completions"),
        (b"/v1/../v1/files", "/v1/files"),
        (b"/v1/models/ft:gpt-4o:org:x@y", "/v1/models/ft:gpt-4o:org:x@y"),
        (b"/v1/users/me/balance", "/v1/users/me/balance"),
    ],
)
def test_normalise(raw, expected):
    assert normalise(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        b"/v1/../admin", b"/v1/..", b"/v1/.", b"/v1/", b"/v1", b"/", b"/..", b"/v1/%2e%2e/admin", b"/v1/.%2e/admin",
        b"/v1/embeddings/../../admin", b"/v1/embeddings/%2e%2e/%2E%2E/admin", b"/admin", b"/v2/x", b"/v1x/files",
        b"/v1/embeddings%2f..%2ffiles", b"/v1/embeddings%2F..%2Ffiles", b"/v1/chat%2fcompletions",  # encoded '/'
        b"/v1/%252e%252e/admin", b"/v1/%25", b"/v1/files%",  # double encoding, a bare '%'
        b"/v1/..\\admin", b"/v1/..%5cadmin", b"/v1/files\\x",  # backslashes
        b"/v1/embeddings/..;/files", b"/v1/files;x=1",  # path parameters
        b"/v1/files%00", b"/v1/files\x00", b"/v1/files%0d%0aX: y", b"/v1/fil es", b"/v1/%c3%a9", b"/v1/\xc3\xa9",
        b"v1/files", b"http://evil.example/v1/files", b"*",  # not origin-form
    ],
)  # fmt: skip
def test_refused(raw):
    with pytest.raises(PathRefused):
        normalise(raw)


raw_paths = st.lists(
    st.one_of(
        st.sampled_from(["", ".", "..", "%2e", "%2E%2e", "v1", "files", "chat", "completions", "%2f", "%25", "%5c"]),
        st.text(alphabet="ab.%2fe/\\;", max_size=6),
    ),
    max_size=8,
).map(lambda parts: ("/" + "/".join(parts)).encode())


@given(st.one_of(raw_paths, raw_paths.map(lambda p: b"/v1/" + p), st.binary(max_size=30).map(lambda b: b"/v1/" + b)))
def test_what_comes_out_is_canonical_under_v1_and_stable(raw):
    try:
        path = normalise(raw)
    except PathRefused:
        return
    assert path.startswith("/v1/") and len(path) > 4
    segments = path.split("/")[1:]
    assert all(s and s not in (".", "..") and set(s) <= SEGMENT_CHARS for s in segments)
    assert quote(path, safe="/" + "".join(SEGMENT_CHARS)) == path  # nothing a URL parser could re-encode
    assert normalise(path.encode()) == path


# -- end to end ---------------------------------------------------------------------------------------

CHAT_VARIANTS = [
    "/v1/./chat/completions", "/v1/chat/completions/", "/v1/chat//completions", "/v1//chat/completions",
    "/v1/chat/./completions", "/v1/chat/completions/.", "/v1/%2e/chat/completions", "/v1/x/../chat/completions",
    "/v1/x/%2e%2e/chat/completions", "/v1/chat/completions%2f", "/v1/chat/completions/%2e",
    "/v1/chat%2fcompletions", "/v1/chat/%63ompletions",  # hypercorn decodes these to the chat route itself
]  # fmt: skip
MODELS_VARIANTS = ["/v1/models/", "/v1/./models", "/v1/models/.", "/v1//models", "/v1/x/../models"]
ESCAPES = [
    "/v1/../admin", "/v1/..", "/v1/%2e%2e/admin", "/v1/%2E%2E/admin", "/v1/.%2e/admin", "/v1/embeddings/../../admin",
    "/v1/embeddings/%2e%2e/%2e%2e/admin", "/v1/embeddings%2f..%2f..%2fadmin", "/v1/embeddings%2f..%2ffiles",
    "/v1/%252e%252e/admin", "/v1/embeddings/%252e%252e/files", "/v1/..%5cadmin", "/v1/..\\admin",
    "/v1/embeddings\\..\\files", "/v1/embeddings/..;/files", "/v1/%2e%2e%2fadmin", "/v1/embeddings%00",
]  # fmt: skip
RESOLVED = {  # unambiguous once normalised: relayed when the allow-list allows the result
    "/v1/%65mbeddings": b"/base/v1/embeddings",
    "/v1/./embeddings": b"/base/v1/embeddings",
    "/v1/embeddings/": b"/base/v1/embeddings",
    "/v1/files/../embeddings": b"/base/v1/embeddings",
    "/v1/embeddings/../files": b"/base/v1/files",
    "/v1/files/a/../file-2?purpose=x": b"/base/v1/files/file-2?purpose=x",
}
BAD_CHAT = b'{"model": "moonshot-v1-8k", "messages": "not a list"}'  # the chat handler refuses it (400)


def canonical(target: bytes) -> bool:
    path = target.partition(b"?")[0] + b"/"
    return b"//" not in path and b"/./" not in path and b"/../" not in path and not set(b"%\\;") & set(path)


@pytest.mark.parametrize("spec", ["/v1/embeddings", "/v1/embeddings*", "on"])
async def test_nothing_outside_the_base_path_and_the_allow_list_reaches_the_upstream(nursery, spec):
    recorder = await nursery.start(serve_recorder)
    root = await start_relay(nursery, recorder.url + "/base/v1", passthrough=spec, retries=0)
    allowed = path_filter(spec)
    answers = {}
    for target in CHAT_VARIANTS:
        answers[target] = await raw_request(root, target, "POST", "content-type: application/json\r\n", BAD_CHAT)
    for target in MODELS_VARIANTS + ESCAPES:
        answers[target] = await raw_request(root, target)
        answers["POST " + target] = await raw_request(root, target, "POST", "content-type: application/json\r\n",
                                                      b'{"model": "moonshot-v1-8k", "input": "x"}')  # fmt: skip
    assert recorder.targets == []  # refused before anything went upstream
    for target in answers:
        status, response = answers[target]
        assert status in (400, 404, 405), (target, response)
        body = json.loads(response.partition(b"\r\n\r\n")[2])
        assert set(body["error"]) == {"message", "type", "code"}, (target, body)
        if target in CHAT_VARIANTS:  # the chat handler validated it, or it was refused before any handler
            assert body["error"]["code"] in ("invalid_messages", "invalid_path", "not_found"), (target, body)

    for target, expected in RESOLVED.items():
        before = len(recorder.requests)
        status, response = await raw_request(root, target)
        if allowed(expected.removeprefix(b"/base").partition(b"?")[0].decode()):
            assert status == 200 and recorder.targets[before:] == [expected], (target, response)
        else:
            assert status == 404 and len(recorder.requests) == before, (target, response)
    assert recorder.targets  # the resolved paths did arrive where allowed: the refusals above are not vacuous
    for target in recorder.targets:  # whatever arrived is canonical, under the base path and allowed
        assert target.startswith(b"/base/v1/") and canonical(target), target
        path = target.removeprefix(b"/base").partition(b"?")[0].decode()
        assert allowed(path) and path not in ("/v1/chat/completions", "/v1/models"), target


async def test_the_relays_own_paths_with_other_methods_are_refused_not_passed(nursery):
    recorder = await nursery.start(serve_recorder)
    root = await start_relay(nursery, recorder.url + "/base/v1", passthrough="on")
    for method, target in (("GET", "/v1/chat/completions"), ("DELETE", "/v1/chat/completions"),
                           ("POST", "/v1/models")):  # fmt: skip
        status, response = await raw_request(root, target, method)
        assert status == 405 and b'"method_not_allowed"' in response, (target, response)
    assert recorder.targets == []
    with trio.fail_after(5):  # the canonical routes still work
        status, _ = await raw_request(root, "/v1/models")
    assert status == 200 and recorder.targets == [b"/base/v1/models"]


CASE_VARIANTS = ["/v1/Chat/Completions", "/v1/CHAT/COMPLETIONS", "/V1/chat/completions", "/v1/chat/Completions/",
                 "/v1/%43hat/completions", "/v1/Models", "/V1/models"]  # fmt: skip


@pytest.mark.parametrize("spec", ["on", "off"])
async def test_the_relays_own_paths_in_other_letter_cases_are_refused_not_passed(nursery, spec):
    """A route of the relay's own in another letter case is not that route (the paths are case-sensitive, as
    OpenAI's are) and never goes out by pass-through, around validation and usage injection: 400 ``invalid_path``
    with pass-through on, 404 with it off."""
    recorder = await nursery.start(serve_recorder)
    root = await start_relay(nursery, recorder.url + "/base/v1", passthrough=spec, retries=0)
    for target in CASE_VARIANTS:
        status, response = await raw_request(root, target, "POST", "content-type: application/json\r\n", BAD_CHAT)
        code = json.loads(response.partition(b"\r\n\r\n")[2])["error"]["code"]
        expected = "invalid_path" if spec == "on" and target.startswith("/v1/") else "not_found"
        assert (status, code) == ((400 if expected == "invalid_path" else 404), expected), (target, response)
        status, response = await raw_request(root, target)
        assert status in (400, 404, 405), (target, response)
    assert recorder.targets == []  # nothing reached the upstream
    status, _ = await raw_request(root, "/v1/models")  # the exact route still serves
    assert status == 200 and recorder.targets == [b"/base/v1/models"]
