"""Instructions to read the top-level usage of one JSON answer relayed in 16 KiB pieces (JSONUsage), against
json.loads of the whole body (what keeping it to parse at the end would cost), for callgrind.

    PYTHONPATH=TREE valgrind --tool=callgrind --callgrind-out-file=/dev/null python scan_instr.py WAY BODY N

WAY: scan or loads; BODY: embeddings (467 KB, numbers), escaped (115 KB chat answer, an escape every 13 bytes),
chat (100 KB chat answer), responses (114 KB Responses answer, many small objects); per body = (N=11 - N=1) / 10.
"""

import json
import sys

from proxy.protocol import JSONUsage, UsageMeter

way, kind, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])


def embeddings(size: int) -> bytes:
    vector = ",".join(f"{(i % 997) / 1000 - 0.5:.6f}" for i in range(256))
    items = [f'{{"object":"embedding","index":{i},"embedding":[{vector}]}}' for i in range(size // 2400)]
    return f'{{"object":"list","data":[{",".join(items)}],"model":"e","usage":{{"total_tokens":600}}}}'.encode()


def chat(text: str) -> bytes:
    message = {"role": "assistant", "content": text}
    return json.dumps({"id": "x", "choices": [{"message": message}], "usage": {"total_tokens": 5}}).encode()


def responses(size: int) -> bytes:
    items = [{"type": "message", "id": f"msg_{i}", "role": "assistant",
              "content": [{"type": "output_text", "text": "moon " * 20, "annotations": []}]} for i in range(size // 200)]
    return json.dumps({"id": "r", "object": "response", "output": items, "usage": {"input_tokens": 1}}).encode()


body = {
    "embeddings": lambda: embeddings(431_000),
    "escaped": lambda: chat('the moon\n "far" side, ' * 3846),
    "chat": lambda: chat("the moon\n far side " * 5000),
    "responses": lambda: responses(100_000),
}[kind]()
pieces = [body[i : i + 16384] for i in range(0, len(body), 16384)]
for _ in range(reps):
    if way == "loads":
        assert json.loads(b"".join(pieces))["usage"]
        continue
    meter = UsageMeter()
    scanner = JSONUsage(meter)
    for piece in pieces:
        scanner.feed(piece)
    scanner.end()
    assert meter.usage is not None
print(len(body))
