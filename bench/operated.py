"""moonrelay with one of issue 26's operating features on, each the A side of an A/B against plain ``moonrelay`` on
the same scenario (the token-rate bench): what tracing, the response cache's miss path and cost accounting cost
per chunk.

- ``moonrelay-traced``: every request sampled (``--otel-sample-ratio 1``) and exported over OTLP/HTTP to a
  collector in a process of its own (bench.tracing's sink, started by the launch, outside the relay's process tree
  so its CPU is not the relay's);
- ``moonrelay-cached``: the upstream says ``cache = true``; the load generator's prompts are random, so every
  request is a miss: looked up, its stream recorded as it goes out, stored when it ends;
- ``moonrelay-priced``: a ``[prices]`` table: each answer's cost summed, logged and counted;
- ``moonrelay-spend``: that table and the bench's key as a client key with a budget in money, so every stream is
  metered and each request reserved and settled in money.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.peers import API_KEY, Launch, Moonrelay

PRICES = '[prices."moonshot-v1-8k"]\ninput = 0.20\noutput = 2.00\n'


def _upstream(sim_url: str, cache: bool = False) -> str:
    return (f'[[upstreams]]\nname = "sim"\nbase_url = "{sim_url}"\ndefault = true\nkey_env = "MOONSHOT_API_KEY"\n'
            f"cache = {'true' if cache else 'false'}\n")  # fmt: skip


class _Configured(Moonrelay):
    """moonrelay with a config file (and a keys file) written into the run's folder."""

    def files(self, sim_url: str) -> tuple[str, str | None]:
        """The config file's text, and the keys file's (None: no client keys)."""
        raise NotImplementedError

    def launch(self, sim_url: str, workdir: Path, workers: int, streams: int) -> Launch:
        base = super().launch(sim_url, workdir, workers, streams)
        workdir.mkdir(parents=True, exist_ok=True)
        config, keys = self.files(sim_url)
        (workdir / "relay.toml").write_text(config)
        argv = [*base.argv, "--config", str(workdir / "relay.toml")]
        if keys is not None:
            (workdir / "keys.txt").write_text(keys)
            argv += ["--api-keys-file", str(workdir / "keys.txt")]
        return Launch(argv=argv, url_pattern=base.url_pattern, env=base.env)


class MoonrelayCached(_Configured):
    name = "moonrelay-cached"

    def files(self, sim_url: str) -> tuple[str, str | None]:
        return _upstream(sim_url, cache=True), None


class MoonrelayPriced(_Configured):
    name = "moonrelay-priced"

    def files(self, sim_url: str) -> tuple[str, str | None]:
        return _upstream(sim_url) + PRICES, None


class MoonrelaySpend(_Configured):
    name = "moonrelay-spend"

    def files(self, sim_url: str) -> tuple[str, str | None]:
        return _upstream(sim_url) + PRICES, f"{API_KEY} name=bench budget=$1000000/30d\n"


class MoonrelayTraced(Moonrelay):
    name = "moonrelay-traced"

    def __init__(self) -> None:
        self._sink: subprocess.Popen | None = None

    def launch(self, sim_url: str, workdir: Path, workers: int, streams: int) -> Launch:
        if self._sink is not None:  # the previous run's collector: its stdin closed, it exits
            self._sink.communicate(timeout=30)
        self._sink = subprocess.Popen([sys.executable, "-m", "bench.tracing", "--sink"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert self._sink.stdout is not None
        endpoint = f"http://127.0.0.1:{int(self._sink.stdout.readline())}"
        base = super().launch(sim_url, workdir, workers, streams)
        env = {**base.env, "MOONRELAY_OTEL_ENDPOINT": endpoint, "MOONRELAY_OTEL_SAMPLE_RATIO": "1"}
        return Launch(argv=base.argv, url_pattern=base.url_pattern, env=env)


OPERATED = (MoonrelayTraced(), MoonrelayCached(), MoonrelayPriced(), MoonrelaySpend())
