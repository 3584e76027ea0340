"""Instructions one stream body spends per chunk in ``_convert`` (split, JSON check, any metering), for callgrind.

    PYTHONPATH=TREE valgrind --tool=callgrind --callgrind-out-file=/dev/null python chunk_instr.py BODY SHAPE N

BODY: SSEBody, MeteredSSE or UsageStrippedSSE; SHAPE: plain (a Moonshot chunk) or null (an OpenAI chunk of a stream
that asked for usage: ``"usage":null``); per chunk = (run with N=11000 - run with N=1000) / 10000. TREE: a checkout's
root (the run before the change used ``git archive dfd562e proxy wire``).
"""

import json
import sys

import proxy.stream as stream
from proxy.protocol import EventSplitter, UsageStripper
from proxy.state import RequestState

name, shape, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
event = {"id": "chatcmpl-0123456789", "object": "chat.completion.chunk", "created": 1700000000,
         "model": "moonshot-v1-8k", "choices": [{"index": 0, "delta": {"content": " moon"}, "finish_reason": None}]}
if shape == "null":
    event["usage"] = None
data = b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"
cls = getattr(stream, name)
body = cls.__new__(cls)  # no upstream response: only the conversion runs
body._finished = False
body._splitter = EventSplitter()
try:
    from proxy.protocol import UsageMeter  # after the change
except ImportError:
    UsageMeter = None
if name == "MeteredSSE":
    body._meter = UsageMeter()
elif name == "UsageStrippedSSE":
    body._stripper = UsageStripper(UsageMeter()) if UsageMeter else UsageStripper()
    body._state = RequestState()
convert = body._convert
for _ in range(n):
    convert(data)
