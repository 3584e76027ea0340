"""The sim's other endpoints (what the relay passes through) and its per-key faults, over real sockets."""

import hashlib
import json

import httpx
import trio

from tests.loadtest.test_sim import CHAT, STREAM, post, start

MULTIPART = b'--b\r\ncontent-disposition: form-data; name="purpose"\r\n\r\nfile-extract\r\n--b\r\n'
MULTIPART += b'content-disposition: form-data; name="file"; filename="moon.txt"\r\ncontent-type: text/plain\r\n\r\n'


async def test_embeddings_are_deterministic_vectors(nursery):
    server = await start(nursery)
    async with httpx.AsyncClient(timeout=10) as client:
        one = await client.post(server.url + "/embeddings", json={"model": "e", "input": ["moon", "sun"]})
        again = await client.post(server.url + "/embeddings", json={"model": "e", "input": "moon"})
        bad = await client.post(server.url + "/embeddings", json={"model": "e", "input": 3})
    data = one.json()["data"]
    assert [d["index"] for d in data] == [0, 1] and len(data[0]["embedding"]) == 8
    assert again.json()["data"][0]["embedding"] == data[0]["embedding"] != data[1]["embedding"]
    assert one.json()["usage"]["prompt_tokens"] == 2
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"


async def test_token_count_and_balance_in_moonshots_shape(nursery):
    server = await start(nursery)
    async with httpx.AsyncClient(timeout=10) as client:
        count = await client.post(server.url + "/tokenizers/estimate-token-count", json=CHAT)
        balance = await client.get(server.url + "/users/me/balance")
    assert count.json() == {"code": 0, "data": {"total_tokens": 8}, "scode": "0x0", "status": True}
    assert balance.json()["data"]["available_balance"] > 0


async def test_an_upload_is_counted_as_it_arrives_and_its_content_streams_back(nursery):
    server = await start(nursery, chunks=3, interval=0.01)
    sent_first = trio.Event()

    async def body():
        yield MULTIPART + b"first half "
        sent_first.set()
        with trio.fail_after(5):
            while server.upload_bytes < len(MULTIPART):  # noqa: ASYNC110 - the sim read it before the rest exists
                await trio.sleep(0.005)
        yield b"second half\r\n--b--\r\n"

    async with httpx.AsyncClient(timeout=10) as client:
        headers = {"content-type": "multipart/form-data; boundary=b"}
        up = await client.post(server.url + "/files", content=body(), headers=headers)
        whole = MULTIPART + b"first half second half\r\n--b--\r\n"
        assert up.status_code == 200
        assert up.json() | {"created_at": 0} == {
            "id": "file-sim0001", "object": "file", "bytes": len(whole), "created_at": 0, "filename": "moon.txt",
            "purpose": "file-extract", "status": "ok", "status_details": "",
            "sim": {"sha256": hashlib.sha256(whole).hexdigest()},
        }  # fmt: skip
        async with client.stream("GET", server.url + "/files/file-sim0001/content") as down:
            parts = [part async for part in down.aiter_raw()]
        assert down.headers["content-disposition"] == 'attachment; filename="file-sim0001.txt"'
        assert len(parts) == 3 and parts[0].startswith(b"file-sim0001 part 0: ") and server.parts_sent == 3
        missing = await client.get(server.url + "/files/file-nope/content")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "resource_not_found_error"


async def test_key_faults_and_model_list(nursery):
    server = await start(nursery, key_faults={"sk-tired": "status:429"}, models=("a", "b"))
    tired = await post(server, STREAM, headers={"authorization": "Bearer sk-tired"})
    fresh = await post(server, STREAM, headers={"authorization": "Bearer sk-fresh"})
    assert tired.status_code == 429 and tired.headers["retry-after"] == "1" and fresh.status_code == 200
    async with httpx.AsyncClient(timeout=10) as client:
        models = (await client.get(server.url + "/models")).json()
    assert [m["id"] for m in models["data"]] == ["a", "b"]


async def test_require_key_covers_the_other_endpoints(nursery):
    server = await start(nursery, require_key="sk-sim")
    async with httpx.AsyncClient(timeout=10) as client:
        refused = await client.get(server.url + "/users/me/balance")
        ok = await client.get(server.url + "/users/me/balance", headers={"authorization": "Bearer sk-sim"})
    assert refused.status_code == 401 and ok.status_code == 200
    assert json.loads(ok.content)["status"] is True
