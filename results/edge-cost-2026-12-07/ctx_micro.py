"""CPU of entering and leaving a request context for POST /v1/chat/completions: Quart's own vs the light one."""
import os, statistics, sys, time
sys.path.insert(0, os.getcwd())
import trio
from werkzeug.datastructures import Headers
from proxy.config import Settings
from proxy.edge import create_app
from proxy.edge._context import light_contexts

async def main():
    os.environ.setdefault("MOONSHOT_API_KEY", "sk-x")
    app = create_app(Settings(bind="127.0.0.1:0", upstream="http://127.0.0.1:9/v1", access_log="off", metrics="off"))
    own = type(app).request_context.__get__(app)
    light = light_contexts(app)
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": [], "query_string": b""}
    headers = Headers([("Host", "127.0.0.1:8000"), ("Content-Type", "application/json"), ("Content-Length", "2")])
    def request():
        return app.request_class("POST", "http", "/v1/chat/completions", b"", headers, "", "1.1",
                                 max_content_length=None, body_timeout=None, send_push_promise=None, scope=scope)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    res = {"quart": [], "light": []}
    for k in range(7):
        for name, make in (("quart", own), ("light", light)) if k % 2 == 0 else (("light", light), ("quart", own)):
            reqs = [request() for _ in range(n)]
            t = time.process_time()
            for r in reqs:
                async with make(r):
                    pass
            res[name].append((time.process_time() - t) / n * 1e6)
    for name, v in res.items():
        print(f"{name}: median {statistics.median(v):.1f} us per context  {[round(x, 1) for x in v]}")
trio.run(main)
