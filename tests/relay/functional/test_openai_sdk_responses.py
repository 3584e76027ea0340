"""The official openai SDK's Responses client pointed at the relay, in front of a Responses upstream (the sim,
relayed natively) and a chat-completions upstream (the sim, translated): streaming, not streaming, and a function
call's round trip (sync client, in a thread: the SDK's async client is asyncio)."""

import json

import openai
import pytest
import trio

from tests.conftest import start_relay, start_sim
from tests.relay.functional.test_openai_sdk import _client

MODEL = "moonshot-v1-8k"
CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [{"type": "function", "name": "get_weather", "description": "The weather", "strict": False, "parameters": CITY}]


@pytest.fixture(params=["chat", "responses"])
async def root(request, nursery):
    sim = await start_sim(nursery)
    return await start_relay(nursery, sim.url, upstream_api=request.param, retries=0)


async def test_sdk_stream_and_whole_answer_agree(root):
    def run():
        with _client(root) as client:
            whole = client.responses.create(model=MODEL, input="Say something about the moon", instructions="Brief.")
            kinds, deltas = [], []
            with client.responses.stream(model=MODEL, input="Say something about the moon",
                                         instructions="Brief.") as stream:  # fmt: skip
                for event in stream:
                    kinds.append(event.type)
                    if event.type == "response.output_text.delta":
                        deltas.append(event.delta)
                final = stream.get_final_response()
            cut = client.responses.create(model=MODEL, input="Say something about the moon", max_output_tokens=5)
            return whole, kinds, "".join(deltas), final, cut

    whole, kinds, streamed, final, cut = await trio.to_thread.run_sync(run)
    assert whole.status == "completed" and whole.output_text
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert streamed == final.output_text == whole.output_text
    assert final.usage.output_tokens > 0 and final.usage.input_tokens > 0
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"
    assert cut.usage.output_tokens == 5


async def test_sdk_function_call_round_trip(root):
    def run():
        with _client(root) as client:
            first = client.responses.create(model=MODEL, input="What is the weather in Paris?", tools=TOOLS,
                                            tool_choice="required")  # fmt: skip
            call = next(item for item in first.output if item.type == "function_call")
            args = json.loads(call.arguments)
            history = [
                {"role": "user", "content": "What is the weather in Paris?"},
                {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
                {"type": "function_call_output", "call_id": call.call_id, "output": json.dumps({"celsius": 21})},
            ]
            events = list(client.responses.create(model=MODEL, input=history, tools=TOOLS, stream=True))
            return call, args, events

    call, args, events = await trio.to_thread.run_sync(run)
    assert call.name == "get_weather" and "city" in args
    done = events[-1]
    assert done.type == "response.completed"
    assert done.response.output_text and done.response.output[0].type == "message"


async def test_sdk_refusal_is_a_bad_request_error(root):
    def run():
        with _client(root) as client:
            client.responses.create(model=MODEL, input="hi", tools=[{"type": "function", "name": ""}])

    with pytest.raises(openai.BadRequestError) as info:
        await trio.to_thread.run_sync(run)
    assert info.value.status_code == 400
