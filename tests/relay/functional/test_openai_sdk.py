"""The official openai SDK pointed at the relay (sync client, run in a thread: the SDK's async client is asyncio)."""

import openai
import pytest
import trio

from tests.conftest import start_relay, start_sim

MESSAGES = [{"role": "user", "content": "Say something about the moon"}]


def _client(root: str) -> openai.OpenAI:
    # max_retries=0: the SDK retries 429 and 5xx by default, which would hide what the relay returned.
    return openai.OpenAI(api_key="sk-client", base_url=root + "/v1", max_retries=0, timeout=20)


async def test_sdk_non_stream_and_stream_agree(nursery):
    sim = await start_sim(nursery)
    root = await start_relay(nursery, sim.url)

    def run():
        with _client(root) as client:
            return _talk(client)

    def _talk(client):
        full = client.chat.completions.create(model="moonshot-v1-8k", messages=MESSAGES)
        pieces = []
        for chunk in client.chat.completions.create(model="moonshot-v1-8k", messages=MESSAGES, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
        models = [m.id for m in client.models.list()]
        return full, "".join(pieces), models

    full, streamed, models = await trio.to_thread.run_sync(run)
    assert full.choices[0].message.content
    assert streamed == full.choices[0].message.content
    assert full.usage.completion_tokens > 0
    assert "moonshot-v1-8k" in models


@pytest.mark.parametrize(
    "fault, exc",
    [
        ("status:400", openai.BadRequestError),
        ("status:401", openai.AuthenticationError),
        ("status:404", openai.NotFoundError),
        ("status:429", openai.RateLimitError),
        ("status:500", openai.InternalServerError),
    ],
)
async def test_sdk_raises_matching_exception(nursery, fault, exc):
    sim = await start_sim(nursery)
    root = await start_relay(nursery, sim.url)

    def run():
        with _client(root) as client:  # closed: an SDK client left to the GC leaks its pooled socket
            client.chat.completions.create(
                model="moonshot-v1-8k", messages=MESSAGES, stream=True, extra_body={"sim_fault": fault}
            )

    with pytest.raises(exc):
        await trio.to_thread.run_sync(run)


async def test_sdk_unreachable_upstream_is_api_error(nursery):
    root = await start_relay(nursery, "http://127.0.0.1:9/v1")

    def run():
        with _client(root) as client:
            client.chat.completions.create(model="moonshot-v1-8k", messages=MESSAGES)

    with pytest.raises(openai.APIStatusError) as info:
        await trio.to_thread.run_sync(run)
    assert info.value.status_code == 502
