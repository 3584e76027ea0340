"""The Grafana dashboard (deploy/grafana/moonrelay.json) asks only for what a running relay exports: every metric name
in its queries is a sample name of a real ``python -m proxy``'s /metrics, and every label it groups by is on one of
that query's metrics. The relay is driven until each series exists: a fallback, an upstream error, a stream with
usage, a client key's refusal, the --state Redis."""

from __future__ import annotations

import json
import re

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import start_sim
from tests.support import ROOT
from tests.support.children import stop_child
from tests.support.relays import start_relay_process

DASHBOARD = ROOT / "deploy" / "grafana" / "moonrelay.json"
METRIC = re.compile(r"\bmoonrelay_[a-z0-9_]+\b")
GROUPING = re.compile(r"\bby \(([^)]*)\)")
ADDED_BY_PROMETHEUS = {"instance", "job"}  # labels the scraper adds, not the relay
KEY = "mr-dashboard-0123456789"


def queries(dashboard: dict) -> list[str]:
    """Every PromQL expression of the dashboard: its panels' targets and its template variables' queries."""
    found = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", ())]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            found.append(query["query"])
    return found


def missing(exprs: list[str], exported: dict[str, set[str]]) -> list[str]:
    """What the expressions ask for that the scrape does not hold: ``name`` for a metric, ``name by label`` for a
    grouping label none of the expression's metrics has."""
    out = []
    for expr in exprs:
        names = set(METRIC.findall(expr))
        out += sorted(name for name in names if name not in exported)
        labels = {label.strip() for group in GROUPING.findall(expr) for label in group.split(",")} - {""}
        have = set().union(*(exported.get(name, set()) for name in names))
        out += sorted(f"{expr} by {label}" for label in labels - have - ADDED_BY_PROMETHEUS)
    return out


def sample_names(text: str) -> dict[str, set[str]]:
    """{sample name (with _total, _bucket…): its label names} of a text exposition."""
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


async def test_every_metric_the_dashboard_queries_is_exported_by_a_running_relay(nursery, tmp_path, redis_server):
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "moonrelay" and len(queries(dashboard)) > 20
    sim = await start_sim(nursery, chunks=3)
    config = tmp_path / "relay.toml"
    config.write_text(f'api_keys_file = "keys"\n[[upstreams]]\nname = "main"\nbase_url = "http://127.0.0.1:1/v1"\n'
                      f'default = true\nfallbacks = ["backup"]\n[[upstreams]]\nname = "backup"\n'
                      f'base_url = "{sim.url}"\n[[upstreams]]\nname = "broken"\nmodels = ["broken"]\n'
                      f'base_url = "http://127.0.0.1:1/v1"\n')  # fmt: skip
    (tmp_path / "keys").write_text(f"{KEY} name=dashboard concurrent=1\n")
    relay, root = start_relay_process(["--config", str(config), "--state", redis_server.url], tmp_path / "relay.err")
    auth = {"authorization": f"Bearer {KEY}"}
    chat = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    try:
        async with httpx.AsyncClient(timeout=10) as client, httpx.AsyncClient(timeout=10) as other:
            answered = await client.post(root + "/v1/chat/completions", json=chat, headers=auth)
            assert answered.status_code == 200 and '"usage"' in answered.text  # a fallback, tokens, latencies
            failed = await client.post(root + "/v1/chat/completions", json={**chat, "model": "broken"}, headers=auth)
            assert failed.status_code == 502  # an upstream error
            held = {**chat, "sim_chunks": 1000, "sim_interval": 0.05}  # ends when the test leaves
            async with other.stream("POST", root + "/v1/chat/completions", json=held, headers=auth) as stream:
                assert stream.status_code == 200 and stream.headers["x-moonrelay-upstream"] == "backup"
                refused = await client.post(root + "/v1/chat/completions", json=chat, headers=auth)
                assert refused.status_code == 429  # the key's concurrent limit
                scrape = (await client.get(root + "/metrics", headers=auth)).text  # a stream in flight
    finally:
        stop_child(relay)
    exported = sample_names(scrape)
    assert missing(queries(dashboard), exported) == []
    # The check itself: a name the relay does not export, and a label its metric does not have, are found.
    wrong = ["sum(rate(moonrelay_request_total[5m]))", "sum by (model) (rate(moonrelay_requests_total[5m]))"]
    assert missing(wrong, exported) == ["moonrelay_request_total", f"{wrong[1]} by model"]
