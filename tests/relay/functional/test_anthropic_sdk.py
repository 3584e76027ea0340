"""The official ``anthropic`` SDK pointed at the relay (its base URL, a client key as ``x-api-key``), in front of a
Messages upstream (native) and a chat upstream (translated): streaming, a whole message, a tool-use round trip,
token counting, the model list and its typed errors."""

import anthropic
import pytest

from tests.relay.functional.test_messages import RELAYS, WEATHER

HI = [{"role": "user", "content": "Tell me about the moon"}]
MODEL = "moonshot-v1-8k"
CLIENT_KEY = "mr-client-0123456"


async def relay_for(kind: str, nursery, monkeypatch, tmp_path, sim_key: str = "sk-up", **settings) -> str:
    keys = tmp_path / "keys"
    keys.write_text(f"{CLIENT_KEY} name=agent\n")
    _, root = await RELAYS[kind](nursery, monkeypatch, sim_key, api_keys_file=str(keys), **settings)
    return root


def sdk(root: str, key: str = CLIENT_KEY) -> anthropic.AsyncAnthropic:
    # max_retries=0: the SDK retries 429, 529 and 5xx by default, which would hide what the relay answered.
    return anthropic.AsyncAnthropic(base_url=root, api_key=key, max_retries=0, timeout=20)


@pytest.mark.parametrize("kind", RELAYS)
async def test_sdk_streams_and_creates(nursery, monkeypatch, tmp_path, kind):
    root = await relay_for(kind, nursery, monkeypatch, tmp_path)
    async with sdk(root) as client:
        async with client.messages.stream(model=MODEL, max_tokens=8, messages=HI, system="Be brief.") as stream:
            texts = [text async for text in stream.text_stream]
            final = await stream.get_final_message()
        assert texts and final.content[0].text == "".join(texts)
        assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 8 and final.usage.input_tokens > 0
        message = await client.messages.create(model=MODEL, max_tokens=8, messages=HI, system="Be brief.")
        assert message.content[0].text == final.content[0].text  # the sim's answer follows from the request
        assert message.usage.input_tokens == final.usage.input_tokens
        counted = await client.messages.count_tokens(model=MODEL, messages=HI, system="Be brief.")
        assert counted.input_tokens == final.usage.input_tokens  # the upstream's own count, either way
        assert MODEL in [m.id async for m in client.models.list()]


@pytest.mark.parametrize("kind", RELAYS)
async def test_sdk_tool_use_round_trip(nursery, monkeypatch, tmp_path, kind):
    root = await relay_for(kind, nursery, monkeypatch, tmp_path)
    async with sdk(root) as client:
        async with client.messages.stream(model=MODEL, max_tokens=256, messages=HI, tools=[WEATHER],
                                          tool_choice={"type": "any"}) as stream:  # fmt: skip
            called = await stream.get_final_message()
        assert called.stop_reason == "tool_use"
        use = called.content[-1]
        assert use.type == "tool_use" and use.name == "get_weather" and isinstance(use.input["city"], str)
        turn = [b.model_dump(exclude_none=True, exclude={"sim"}) for b in called.content]
        messages = [*HI, {"role": "assistant", "content": turn},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Sunny"}]}]
        answer = await client.messages.create(model=MODEL, max_tokens=16, messages=messages, tools=[WEATHER])
        assert answer.stop_reason == "max_tokens" and answer.content[0].type == "text"


@pytest.mark.parametrize(("kind", "fault"), [("native", "status:529"), ("translated", "status:503")])
async def test_sdk_raises_the_errors_by_type(nursery, monkeypatch, tmp_path, kind, fault):
    root = await relay_for(kind, nursery, monkeypatch, tmp_path, "sk-busy", retries=0,
                           sim={"key_faults": {"sk-busy": fault}})  # fmt: skip
    async with sdk(root) as client:
        with pytest.raises(anthropic.OverloadedError) as overloaded:
            await client.messages.create(model=MODEL, max_tokens=8, messages=HI)
        assert overloaded.value.body["error"]["type"] == "overloaded_error"
    async with sdk(root, "mr-wrong-key") as client:
        with pytest.raises(anthropic.AuthenticationError):
            await client.messages.create(model=MODEL, max_tokens=8, messages=HI)
