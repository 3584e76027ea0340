"""``python -m bench.witness``: an independent witness for ``loadtest``'s TTFT and ITL (issue 16, item 5).

One sim with known timing (TTFT 1 s, no jitter; ``--chunks`` chunks ``--interval`` s apart, one vocabulary word,
so one token, per chunk); against it, one after the other, ``python -m loadtest`` and NVIDIA AIPerf
(``aiperf profile``, installed apart from the project: ``--aiperf PATH``, by default ``/work/venv-aiperf/bin/aiperf``)
run the same closed loop: ``--concurrency`` lanes, ``--requests`` streaming chat requests in all. AIPerf counts
tokens with a tokenizer; this script writes a local one (``tokenizer.json``: a WordLevel model over the sim's
vocabulary, split on whitespace), so AIPerf needs no network and counts exactly one token per sim chunk.

Like for like: TTFT is loadtest's TTFC (first data event) and AIPerf's ``time_to_first_token``; ITL is, per
request, (last event - first event) / (completion tokens - 1) (AIPerf's ``inter_token_latency`` definition), p50
and p99 over requests. Both, side by side with their relative difference (goal: within 5 %), go to ``<out>/README.md``
and ``<out>/witness.json``.

``tokenizer_files``, ``loadtest_metrics``, ``aiperf_metrics``, ``compare`` and ``render`` are pure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from loadtest.simcontent import VOCABULARY
from loadtest.stats import percentiles

GOAL = 0.05  # relative difference
DEFAULT_AIPERF = "/work/venv-aiperf/bin/aiperf"
UNK = "[UNK]"


def tokenizer_files(vocabulary: Iterable[str]) -> dict[str, str]:
    """A HuggingFace fast tokenizer (file name -> JSON text) that splits on whitespace and punctuation and knows
    every word of ``vocabulary``: no download, one token per sim word."""
    vocab = {UNK: 0}
    for word in vocabulary:
        vocab.setdefault(word, len(vocab))
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": 0,
                "content": UNK,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": UNK},
    }
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": UNK, "model_max_length": 1_000_000}
    return {"tokenizer.json": json.dumps(tokenizer), "tokenizer_config.json": json.dumps(config)}


def _p(xs: list[float]) -> dict[str, float | None]:
    q = percentiles(xs, (50, 99))
    return {"p50": q["p50"], "p99": q["p99"], "count": q["count"]}


def loadtest_metrics(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float | None]]:
    """TTFT and per-request ITL (ms) of loadtest's measured sessions that ended without error (requests.jsonl);
    also TTFT from the request written (``ttfc_sent_ms``), an origin nearer AIPerf's (its request's start)."""
    ttft, sent, itl = [], [], []
    for r in records:
        if r.get("error_kind") is not None or r.get("warmup") or r.get("ttfc_ms") is None:
            continue
        ttft.append(r["ttfc_ms"])
        if r.get("ttfc_sent_ms") is not None:
            sent.append(r["ttfc_sent_ms"])
        gaps = r.get("gaps_ms") or []
        tokens = r.get("completion_tokens")
        if gaps and tokens and tokens > 1:
            # AIPerf's definition: (last response - first) / (output tokens - 1). The sim's last event carries
            # usage and no token, so the mean gap between events would divide by one gap too many.
            itl.append(sum(gaps) / (tokens - 1))
        elif gaps:
            itl.append(statistics.fmean(gaps))
    return {"ttft_ms": _p(ttft), "itl_ms": _p(itl), "ttft_from_sent_ms": _p(sent)}


def loadtest_sim_view(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float | None]]:
    """What the sim itself did in loadtest's run, from its send stamps: per-request ITL by the same definition
    (send of the last event - send of the first) / (tokens - 1), and every chunk's read lag (loadtest's receive
    stamp - the sim's send stamp), ms."""
    itl, lag = [], []
    for r in records:
        gaps, delays, tokens = r.get("gaps_ms") or [], r.get("relay_delay_ms") or [], r.get("completion_tokens")
        if r.get("error_kind") is not None or r.get("warmup") or not gaps or len(delays) != len(gaps) + 1:
            continue
        received = sum(gaps)  # last receive - first receive
        if tokens and tokens > 1:
            itl.append((received - delays[-1] + delays[0]) / (tokens - 1))
        lag += delays
    return {"sim_itl_ms": _p(itl), "read_lag_ms": _p(lag)}


def aiperf_sim_view(raw_lines: Iterable[str]) -> dict[str, dict[str, float | None]]:
    """The same from AIPerf's ``profile_export_raw.jsonl`` (``--export-level raw``): each response's ``perf_ns``
    (``time.perf_counter_ns``: CLOCK_MONOTONIC on Linux, the sim's clock) against the ``"sim"`` stamp in its data,
    content-bearing responses only (AIPerf's tokens)."""
    itl, lag = [], []
    for line in raw_lines:
        if not line.strip():
            continue
        sends: list[int] = []
        for resp in json.loads(line).get("responses") or []:
            for packet in resp.get("packets") or []:
                try:
                    data = json.loads(packet.get("value") or "")
                except ValueError:
                    continue
                choices = data.get("choices") if isinstance(data, dict) else None
                if not choices or not (choices[0].get("delta") or {}).get("content"):
                    continue
                stamp = data.get("sim", {}).get("ns")
                if isinstance(stamp, int):
                    sends.append(stamp)
                    lag.append((resp["perf_ns"] - stamp) / 1e6)
        if len(sends) > 1:
            itl.append((sends[-1] - sends[0]) / 1e6 / (len(sends) - 1))
    return {"sim_itl_ms": _p(itl), "read_lag_ms": _p(lag)}


def _in_ms(metric: Mapping[str, Any], key: str) -> float | None:
    v = metric.get(key)
    if v is None:
        return None
    scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3, "sec": 1e3}[str(metric.get("unit", "ms")).lower()]
    return float(v) * scale


def aiperf_metrics(doc: Mapping[str, Any]) -> dict[str, dict[str, float | None]]:
    """TTFT and ITL (ms) from AIPerf's ``profile_export_aiperf.json`` (metrics at the top level or under
    ``records``/``metrics``, each ``{"unit": ..., "p50": ..., "p99": ...}``)."""
    metrics = doc.get("records") or doc.get("metrics") or doc
    out = {}
    for name, key in (("ttft_ms", "time_to_first_token"), ("itl_ms", "inter_token_latency")):
        m = metrics.get(key) or {}
        out[name] = {"p50": _in_ms(m, "p50"), "p99": _in_ms(m, "p99"), "count": m.get("count")}
    return out


def compare(loadtest: Mapping[str, Mapping[str, Any]], aiperf: Mapping[str, Mapping[str, Any]]) -> list[dict]:
    """One row per metric and percentile: both values, loadtest / AIPerf - 1, and whether that is within 5 %."""
    rows = []
    for metric in ("ttft_ms", "itl_ms"):
        for p in ("p50", "p99"):
            a, b = loadtest[metric][p], aiperf[metric][p]
            rel = a / b - 1 if a is not None and b else None
            rows.append(
                {
                    "metric": metric,
                    "p": p,
                    "loadtest": a,
                    "aiperf": b,
                    "relative": rel,
                    "within_goal": None if rel is None else abs(rel) <= GOAL,
                }
            )
    return rows


def _f(v: float | None, spec: str = ".1f") -> str:
    return "—" if v is None else format(v, spec)


def render(result: Mapping[str, Any]) -> str:
    """README.md: both clients' TTFT and ITL, the verdict, the commands and the versions."""
    lines = [
        f"# Independent witness: loadtest and AIPerf on the same sim, {result['concurrency']} streams",
        "",
        f"`{result['command']}`",
        "",
        f"Sim: TTFT {result['ttft_s']:g} s, no jitter, {result['chunks']} chunks {result['interval_s']:g} s "
        f"apart, one token per chunk; closed loop, {result['concurrency']} concurrent, {result['requests']} "
        "streaming chat requests per client, loadtest first, then AIPerf, against the same sim.",
        "",
        "| metric | loadtest | AIPerf | loadtest / AIPerf - 1 | within 5 % |",
        "|---|---:|---:|---:|---|",
    ]
    for r in result["rows"]:
        ok = "—" if r["within_goal"] is None else "yes" if r["within_goal"] else "no"
        lines.append(
            f"| {r['metric'].removesuffix('_ms').upper()} {r['p']} (ms) | {_f(r['loadtest'])} | "
            f"{_f(r['aiperf'])} | {_f(None if r['relative'] is None else 100 * r['relative'], '+.2f')} % "
            f"| {ok} |"
        )
    n = result.get("sessions") or {}
    lines += ["", f"Requests measured: loadtest {n.get('loadtest', '—')}, AIPerf {n.get('aiperf', '—')}."]
    sent = (result.get("loadtest") or {}).get("ttft_from_sent_ms")
    if sent and sent.get("p50") is not None:
        lines.append(
            "loadtest counts TTFT from the session's intended start (connect and its own queue included); "
            f"from the request written instead: p50 {_f(sent['p50'])} ms, p99 {_f(sent['p99'])} ms."
        )
    views = result.get("sim_view") or {}
    if views:
        lines += [
            "",
            "Against the sim's own send stamps (each chunk carries one; same clock), in each client's run:",
            "",
            "| client | sim-stamped ITL p50 / p99 (ms) | client's ITL p50 / p99 (ms) | read lag p50 / p99 (ms) |",
            "|---|---|---|---|",
        ]
        measured = {"loadtest": result.get("loadtest"), "aiperf": result.get("aiperf")}
        for name, v in views.items():
            if not v:
                continue
            m = (measured.get(name) or {}).get("itl_ms") or {}
            lines.append(
                f"| {name} | {_f(v['sim_itl_ms']['p50'])} / {_f(v['sim_itl_ms']['p99'])} | "
                f"{_f(m.get('p50'))} / {_f(m.get('p99'))} | {_f(v['read_lag_ms']['p50'], '.2f')} / "
                f"{_f(v['read_lag_ms']['p99'], '.2f')} |"
            )
        lines.append("")
    cpu, wall = result.get("process_cpu_s") or {}, result.get("process_wall_s") or {}
    if cpu:
        lines.append(
            "Whole client process trees, start to exit (set-up, load and reports): "
            + "; ".join(f"{name} {cpu[name]:.1f} CPU s in {wall[name]:.1f} s" for name in cpu if name in wall)
            + "."
        )
    lines.append("")
    if result.get("notes"):
        lines += [*(f"- {note}" for note in result["notes"]), ""]
    lines += ["Commands:", "", "```", *result["commands"], "```", ""]
    for title, facts in (("Versions", result.get("versions")), ("Machine", result.get("machine"))):
        if facts:
            lines.append(f"{title}: " + "; ".join(f"{k} {v}" for k, v in facts.items()) + ".")
    return "\n".join(lines) + "\n"


def _aiperf_argv(aiperf: str, url: str, args: argparse.Namespace, tokenizer: Path, artifacts: Path) -> list[str]:
    return [
        aiperf,
        "profile",
        "--model",
        "moonshot-v1-8k",
        "--url",
        url.removesuffix("/v1"),
        "--endpoint-type",
        "chat",
        "--streaming",
        "--tokenizer",
        str(tokenizer),
        "--concurrency",
        str(args.concurrency),
        "--request-count",
        str(args.requests),
        "--prompt-input-tokens-mean",
        "16",
        "--prompt-input-tokens-stddev",
        "0",
        "--ui-type",
        "none",
        "--no-server-metrics",
        "--export-level",
        "raw",
        "--output-artifact-dir",
        str(artifacts),
    ]


async def _measure(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    import trio

    from bench.procs import serve
    from bench.run import _sim_launch
    from bench.scenarios import Scenario

    sc = Scenario(
        "witness",
        streams=args.concurrency,
        ttft_s=args.ttft,
        ttft_jitter_s=0.0,
        chunks=args.chunks,
        interval_s=args.interval,
    )
    tok = (out / "tokenizer").resolve()  # AIPerf 0.13.0 takes a relative path for a hub name
    tok.mkdir(parents=True, exist_ok=True)
    for name, text in tokenizer_files(VOCABULARY).items():
        (tok / name).write_text(text)
    # Not HF_HUB_OFFLINE: AIPerf 0.13.0 then looks every tokenizer name up in the hub cache, a local path too,
    # and fails; without it a directory path loads from the directory and touches no network.
    env = {**os.environ, "HF_HUB_DISABLE_TELEMETRY": "1"}
    async with serve("sim", _sim_launch(sc), out / "sim.log") as sim:
        lt = [
            sys.executable,
            "-m",
            "loadtest",
            "--url",
            sim.url,
            "-c",
            str(args.concurrency),
            "--requests",
            str(args.requests),
            "--ramp-up",
            "0",
            "--quiet",
            "--out",
            str(out / "loadtest"),
        ]
        cpu: dict[str, float] = {}
        wall: dict[str, float] = {}
        ap = _aiperf_argv(args.aiperf, sim.url, args, tok, out / "aiperf")
        for name, argv, child_env in (("loadtest", lt, None), ("aiperf", ap, env)):
            c0, w0 = _children_cpu_s(), time.monotonic()
            with (out / f"{name}.log").open("wb") as log:
                await trio.run_process(argv, stdout=log, stderr=subprocess.STDOUT, env=child_env, check=False)
            cpu[name], wall[name] = _children_cpu_s() - c0, time.monotonic() - w0
    return {"loadtest_argv": lt, "aiperf_argv": ap, "cpu_s": cpu, "wall_s": wall}


def _children_cpu_s() -> float:
    """User + system CPU seconds of every finished child process and its own waited-for children."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main(argv: list[str] | None = None) -> int:
    import trio

    p = argparse.ArgumentParser(
        prog="python -m bench.witness", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--concurrency", "-c", type=int, default=50)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--ttft", type=float, default=1.0)
    p.add_argument("--chunks", type=int, default=20)
    p.add_argument("--interval", type=float, default=0.05)
    p.add_argument("--aiperf", default=DEFAULT_AIPERF)
    p.add_argument("--out", type=Path, default=Path("results") / "witness")
    args = p.parse_args(argv)
    from bench.run import machine_facts
    from loadtest.report import package_versions

    args.out.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "-m", "bench.witness", *(sys.argv[1:] if argv is None else argv)])
    ran = trio.run(_measure, args, args.out)
    records = [json.loads(ln) for ln in (args.out / "loadtest" / "requests.jsonl").read_text().splitlines()]
    lt = loadtest_metrics(records)
    exports = sorted((args.out / "aiperf").rglob("profile_export_aiperf.json"))
    if not exports:
        print(f"AIPerf wrote no profile_export_aiperf.json; see {args.out / 'aiperf.log'}", file=sys.stderr)
        return 1
    ai = aiperf_metrics(json.loads(exports[-1].read_text()))
    raw = sorted((args.out / "aiperf").rglob("profile_export_raw.jsonl"))
    views = {
        "loadtest": loadtest_sim_view(records),
        "aiperf": aiperf_sim_view(raw[-1].read_text().splitlines()) if raw else None,
    }
    aiperf_version = subprocess.run([args.aiperf, "--version"], capture_output=True, text=True).stdout.strip()
    result = {
        "command": command,
        "concurrency": args.concurrency,
        "requests": args.requests,
        "ttft_s": args.ttft,
        "chunks": args.chunks,
        "interval_s": args.interval,
        "loadtest": lt,
        "aiperf": ai,
        "rows": compare(lt, ai),
        "sim_view": views,
        "sessions": {"loadtest": lt["ttft_ms"]["count"], "aiperf": ai["ttft_ms"]["count"]},
        "commands": [shlex.join(ran["loadtest_argv"]), shlex.join(ran["aiperf_argv"])],
        "process_cpu_s": ran["cpu_s"],
        "process_wall_s": ran["wall_s"],
        "versions": {
            "python": platform.python_version(),
            "aiperf": (aiperf_version.splitlines() or ["?"])[-1],
            **{k: v for k, v in package_versions().items() if k in ("trio", "h11")},
        },
        "machine": machine_facts(),
    }
    (args.out / "witness.json").write_text(json.dumps(result, indent=2, default=str))
    text = render(result)
    (args.out / "README.md").write_text(text)
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
