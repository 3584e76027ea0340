"""The relays under test, installed on demand and pointed at the simulated upstream.

Each peer knows three things: how to install itself (never as a moonrelay dependency: nginx from
Debian, the Python peers into their own virtualenvs under ``.bench/``), how to report its version, and
the command line that serves the sim's ``/v1`` API on a loopback port. A peer that cannot be made to
run raises :class:`PeerUnavailable` with the exact reason, and the run goes on without it.

Ports: moonrelay binds port 0 and prints its URL; the third-party servers cannot report a port, so
:func:`free_port` asks the kernel for one just before they start (a small race, acceptable here).

The same listen backlog everywhere (:data:`BACKLOG`), and each Python peer twice: as its own command
line starts it, and ``-tuned``, with the connection caps its installed version documents raised to the
scenario's stream count (bench/README.md lists each setting and where it is documented), so that a
cap in the tables is a setting someone chose, not a finding about the peer.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import string
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

BENCH_HOME = Path(__file__).resolve().parent.parent / ".bench"
NGINX_TEMPLATE = Path(__file__).with_name("nginx.conf.template")
# nginx's worker_rlimit_nofile: this machine's hard limit. worker_connections (just under it) counts client
# and upstream connections alike, so one worker relays ~9,990 streams (issue 5).
FD_PER_WORKER = 20_000
INSTALL_TIMEOUT_S = 1_200
# One listen backlog for every target: moonrelay's default (--backlog), nginx's `listen ... backlog=`,
# uvicorn's --backlog in the tuned rows (uvicorn's own default is 2,048); net.core.somaxconn here is 4,096.
BACKLOG = 4_096
# The versions bench/README.md's tuned settings were checked against, in their installed source.
LITELLM_VERSION = "1.108.7"
OPENAI_FORWARD_VERSION = "0.8.1"


class PeerUnavailable(RuntimeError):
    """This peer cannot run here; the message is what the report prints."""


@dataclass(frozen=True)
class Launch:
    """How to start one target: either ``url`` is known up front or the process prints it (``url_pattern``)."""

    argv: list[str]
    url: str | None = None  # base URL ending in /v1
    url_pattern: bytes | None = None  # regex; group 1 is the URL the process prints
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(text: str, lines: int = 15) -> str:
    kept = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("WARNING: Location")]
    return "\n".join(kept[-lines:])


def _run(argv: list[str], log: Path, what: str) -> str:
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerUnavailable(f"{what}: {' '.join(argv)}: {exc}") from exc
    with log.open("a") as f:
        f.write(f"$ {' '.join(argv)}\n{p.stdout}{p.stderr}\nexit {p.returncode}\n")
    if p.returncode != 0:
        raise PeerUnavailable(f"{what} failed (exit {p.returncode}): {' '.join(argv)}\n{_tail(p.stdout + p.stderr)}")
    return p.stdout + p.stderr


class Peer:
    name = ""

    def ensure(self) -> str:
        """Install if missing; return the version string."""
        raise NotImplementedError

    def launch(self, sim_url: str, workdir: Path, workers: int, streams: int) -> Launch:
        """The command line serving the sim's API with ``workers`` processes; ``streams``: the scenario's
        concurrent sessions (the tuned rows size their connection caps to it)."""
        raise NotImplementedError


class Moonrelay(Peer):
    name = "moonrelay"
    extra_env: dict[str, str] = {}  # set by variants of the same relay (MoonrelayQuiet)

    def ensure(self) -> str:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "proxy"], capture_output=True, text=True,
                               cwd=Path(__file__).parent).stdout.strip()
        return f"git {rev or '?'}{' + uncommitted proxy/ changes' if dirty else ''}"

    def launch(self, sim_url: str, workdir: Path, workers: int, streams: int) -> Launch:
        # The access log on stderr is the run's log file (bench.procs): one JSON line per request, as nginx's
        # access.log has (nginx.conf.template). Set here, so an inherited MOONRELAY_ACCESS_LOG cannot change it.
        return Launch(
            argv=[sys.executable, "-m", "proxy", "--bind", "127.0.0.1:0", "--upstream", sim_url,
                  "--workers", str(workers), "--backlog", str(BACKLOG)],
            url_pattern=rb"listening on (http://\S+)",
            env={"MOONSHOT_API_KEY": API_KEY, "MOONRELAY_ACCESS_LOG": "stderr", **self.extra_env},
        )


class MoonrelayQuiet(Moonrelay):
    """moonrelay with its access log and metrics off: the B side of issue 6's observability-cost A/B."""

    name = "moonrelay-quiet"
    extra_env = {"MOONRELAY_ACCESS_LOG": "off", "MOONRELAY_METRICS": "off"}


class MoonrelayNoPump(Moonrelay):
    """moonrelay with each stream read by its own task (``--pump off``): the before side of the pump's A/B."""

    name = "moonrelay-nopump"
    extra_env = {"MOONRELAY_PUMP": "off"}


class MoonrelayConfigured(Moonrelay):
    """moonrelay with a config file of one ``[[upstreams]]`` table, the sim (``upstream``: the table's own lines)."""

    def upstream(self, sim_url: str) -> str:
        raise NotImplementedError

    def _config(self, sim_url: str, workdir: Path) -> Path:
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / "relay.toml"
        path.write_text(f'[[upstreams]]\nname = "sim"\ndefault = true\nkey_env = "MOONSHOT_API_KEY"\n'
                        f"{self.upstream(sim_url)}")  # fmt: skip
        return path

    def launch(self, sim_url: str, workdir: Path, workers: int, streams: int) -> Launch:
        base = super().launch(sim_url, workdir, workers, streams)
        return Launch(argv=[*base.argv, "--config", str(self._config(sim_url, workdir))],
                      url_pattern=base.url_pattern, env=base.env)  # fmt: skip


class MoonrelayCapped(MoonrelayConfigured):
    """moonrelay with a ``max_concurrent`` no run reaches, counted per worker: the A side of the ``--state`` cost
    A/B (issue 15). Every request takes and gives back a slot, so the only difference to ``moonrelay-state`` is
    where it is counted."""

    name = "moonrelay-capped"
    CAP = 1_000_000

    def upstream(self, sim_url: str) -> str:
        return f'base_url = "{sim_url}"\nmax_concurrent = {self.CAP}\n'


class MoonrelayState(MoonrelayCapped):
    """The same cap counted in a Redis every worker shares (``--state``): a redis-server on a unix socket in the
    run's folder, started with the relay and part of its process tree, so its CPU counts as the relay's."""

    name = "moonrelay-state"

    def launch(self, sim_url: str, workdir: Path, workers: int, streams: int) -> Launch:
        base = super().launch(sim_url, workdir, workers, streams)
        sock = workdir / "redis.sock"
        redis = f"redis-server --port 0 --unixsocket {sock} --save '' --appendonly no --dir {workdir} --logfile ''"
        relay = " ".join([*base.argv, "--state", f"unix://{sock}?db=0"])
        script = f"{redis} & while [ ! -S {sock} ]; do sleep 0.05; done; exec {relay}"
        return Launch(argv=["sh", "-c", script], url_pattern=base.url_pattern, env=base.env)


class MoonrelayNative(MoonrelayConfigured):
    """moonrelay whose upstream declares the sim's native protocol (``api`` in its ``[[upstreams]]`` table), so a
    request in that protocol is relayed event by event, not translated: the other side of the token-rate-messages
    and token-rate-responses scenarios' comparison (``moonrelay`` there translates onto the sim's chat route)."""

    api = ""  # the [[upstreams]] table's api
    path = ""  # the sim's base URL for that protocol, from its origin

    def upstream(self, sim_url: str) -> str:
        return f'base_url = "{sim_url.rstrip("/").removesuffix("/v1") + self.path}"\napi = "{self.api}"\n'


class MoonrelayAnthropic(MoonrelayNative):
    """Its upstream the sim's Messages route under Moonshot's base path (``/anthropic``, as Kimi is served)."""

    name = "moonrelay-anthropic"
    api = "anthropic"
    path = "/anthropic"


class MoonrelayResponses(MoonrelayNative):
    """Its upstream the sim's Responses route (``/v1/responses``)."""

    name = "moonrelay-responses"
    api = "responses"
    path = "/v1"


class Nginx(Peer):
    name = "nginx"

    def _binary(self) -> str | None:
        # /usr/sbin is not on every root PATH (e.g. inside some containers).
        return shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)

    def ensure(self) -> str:
        if self._binary() is None:
            if os.geteuid() != 0:
                raise PeerUnavailable("nginx is not installed and installing it with apt-get needs root")
            log = BENCH_HOME / "nginx-install.log"
            _run(["apt-get", "update", "-q"], log, "apt-get update")
            try:
                _run(["apt-get", "install", "-y", "-q", "nginx-light"], log, "apt-get install nginx-light")
            except PeerUnavailable:
                _run(["apt-get", "install", "-y", "-q", "nginx"], log, "apt-get install nginx")
        binary = self._binary()
        if binary is None:
            raise PeerUnavailable("apt-get succeeded but no nginx binary is on PATH or in /usr/sbin")
        out = subprocess.run([binary, "-v"], capture_output=True, text=True).stderr.strip()
        return out.removeprefix("nginx version: ")

    def launch(self, sim_url: str, workdir: Path, workers: int, streams: int) -> Launch:
        port = free_port()
        up = urlsplit(sim_url)
        conf = string.Template(NGINX_TEMPLATE.read_text()).substitute(
            workers=workers, nofile=FD_PER_WORKER, connections=FD_PER_WORKER - 10,
            prefix=workdir, upstream=up.netloc, listen=f"127.0.0.1:{port}", backlog=BACKLOG,
        )
        path = workdir / "nginx.conf"
        path.write_text(conf)
        binary = self._binary() or "nginx"
        return Launch(argv=[binary, "-p", str(workdir), "-c", str(path)], url=f"http://127.0.0.1:{port}/v1")


def _venv_version(venv: Path, dist: str) -> str | None:
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    p = subprocess.run([python, "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
                       capture_output=True, text=True)
    return p.stdout.strip() if p.returncode == 0 else None


def _ensure_venv(venv: Path, requirements: list[str], dist: str, probe: str, version: str | None = None) -> str:
    """A virtualenv of its own with ``requirements``; ``probe`` (an import) proves it is complete. With
    ``version``, a venv holding another version of ``dist`` is reinstalled to it."""
    found = _venv_version(venv, dist)
    if (found and (version is None or found == version)
            and subprocess.run([venv / "bin" / "python", "-c", probe], capture_output=True).returncode == 0):
        return found
    log = BENCH_HOME / f"{venv.name}-install.log"
    if not (venv / "bin" / "python").exists():
        # The base interpreter, not moonrelay's venv: the peer must not see moonrelay's packages.
        _run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(venv)], log, "venv")
    _run([str(venv / "bin" / "pip"), "install", "-q", *requirements], log, f"pip install {' '.join(requirements)}")
    version = _venv_version(venv, dist)
    probe_run = subprocess.run([venv / "bin" / "python", "-c", probe], capture_output=True, text=True)
    if not version or probe_run.returncode != 0:
        raise PeerUnavailable(f"pip install {' '.join(requirements)} finished but `{probe}` fails:\n"
                              f"{_tail(probe_run.stderr)}")
    return version


# The bearer key every client sends: LiteLLM's master key, ignored by the others.
API_KEY = "sk-bench-5f1c0e2a9b7d4c3e8a6f1b2d3c4e5f60"

# LiteLLM must never reach the internet: the bundled model-cost map instead of a download, no telemetry.
LITELLM_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_TELEMETRY": "False",
    "LITELLM_LOG": "ERROR",
    "DISABLE_SCHEMA_UPDATE": "True",
    "NO_DOCS": "True",
}


class LiteLLM(Peer):
    name = "litellm"
    venv = BENCH_HOME / "litellm-venv"

    def ensure(self) -> str:
        return _ensure_venv(self.venv, [f"litellm[proxy]=={LITELLM_VERSION}"], "litellm",
                            "import litellm.proxy.proxy_server", LITELLM_VERSION)

    def write_config(self, sim_url: str, workdir: Path) -> Path:
        # JSON is YAML: no PyYAML needed on our side.
        config = {
            "model_list": [{
                "model_name": "moonshot-v1-8k",
                "litellm_params": {"model": "openai/moonshot-v1-8k", "api_base": sim_url, "api_key": "dummy"},
            }],
            "litellm_settings": {"telemetry": False, "drop_params": True, "request_timeout": 600},
            # LiteLLM >= 1.10x refuses to start without a master key; clients send it as their bearer key.
            "general_settings": {"master_key": API_KEY},
        }
        path = workdir / "litellm.yaml"
        path.write_text(json.dumps(config, indent=2))
        return path

    def launch(self, sim_url: str, workdir: Path, workers: int, streams: int) -> Launch:
        port = free_port()
        path = self.write_config(sim_url, workdir)
        return Launch(
            argv=[str(self.venv / "bin" / "litellm"), "--config", str(path), "--host", "127.0.0.1",
                  "--port", str(port), "--num_workers", str(workers)],
            url=f"http://127.0.0.1:{port}/v1", env=dict(LITELLM_ENV), cwd=workdir,
        )


# LiteLLM 1.108.7's defaults (litellm/constants.py): 1,000 connections per aiohttp connector, 500 per host,
# per worker process: 2 workers reach the sim with 1,000 streams at most. 0 does not mean "no limit" in this
# version, whatever the docs say: litellm then leaves `limit` out and aiohttp's own default of 100 applies.
LITELLM_CONNECTOR_DEFAULT = 1_000


class LiteLLMTuned(LiteLLM):
    """LiteLLM with its documented connection caps raised to the scenario's streams and the common backlog.

    The ``litellm`` CLI passes no backlog to uvicorn (2,048), so this row runs the same app the CLI runs
    (``litellm.proxy.proxy_server:app``, config from ``CONFIG_FILE_PATH``) under uvicorn itself, with the
    arguments the CLI would give it (uvloop, no server header, the log level from ``LITELLM_LOG``) plus
    ``--backlog``. ``--limit-concurrency`` stays unset: uvicorn's default, no limit.
    """

    name = "litellm-tuned"

    @staticmethod
    def connector_env(streams: int) -> dict[str, str]:
        """Per worker: one worker may be handed every stream."""
        limit = str(max(streams, LITELLM_CONNECTOR_DEFAULT))
        return {"AIOHTTP_CONNECTOR_LIMIT": limit, "AIOHTTP_CONNECTOR_LIMIT_PER_HOST": limit}

    def launch(self, sim_url: str, workdir: Path, workers: int, streams: int) -> Launch:
        port = free_port()
        path = self.write_config(sim_url, workdir)
        env = {**LITELLM_ENV, "CONFIG_FILE_PATH": str(path), "NUM_WORKERS": str(workers), **self.connector_env(streams)}
        return Launch(
            argv=[str(self.venv / "bin" / "python"), "-m", "uvicorn", "litellm.proxy.proxy_server:app",
                  "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), "--loop", "uvloop",
                  "--no-server-header", "--log-level", "error", "--backlog", str(BACKLOG)],
            url=f"http://127.0.0.1:{port}/v1", env=env, cwd=workdir,
        )


class OpenAIForward(Peer):
    name = "openai-forward"
    venv = BENCH_HOME / "openai-forward-venv"

    extra_args: tuple[str, ...] = ()  # set by OpenAIForwardTuned

    def ensure(self) -> str:
        # openai_forward/__init__.py imports yaml, which openai-forward 0.8.1 does not declare.
        return _ensure_venv(self.venv, [f"openai-forward=={OPENAI_FORWARD_VERSION}", "pyyaml"], "openai-forward",
                            "import yaml, openai_forward", OPENAI_FORWARD_VERSION)

    def launch(self, sim_url: str, workdir: Path, workers: int, streams: int) -> Launch:
        port = free_port()
        # openai_forward/settings.py: FORWARD_CONFIG routes "/" to base_url, keeping the /v1/... path.
        # Its CLI (`aifd run`) binds 0.0.0.0; uvicorn directly keeps it on loopback with the same app.
        # TIMEOUT is only aiohttp's connect timeout (forward/core.py); cwd is the workdir because the
        # package loads ./.env at import.
        base = sim_url.removesuffix("/").removesuffix("/v1")
        env = {"FORWARD_CONFIG": json.dumps([{"base_url": base, "route": "/", "type": "openai"}]),
               "TIMEOUT": "30", "LOG_OPENAI": "false", "CACHE_OPENAI": "false"}
        return Launch(
            argv=[str(self.venv / "bin" / "python"), "-m", "uvicorn", "openai_forward.app:app",
                  "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), "--log-level", "warning",
                  "--no-access-log", *self.extra_args],
            url=f"http://127.0.0.1:{port}/v1", env=env, cwd=workdir,
        )


class OpenAIForwardTuned(OpenAIForward):
    """openai-forward with the common backlog; ``--limit-concurrency`` stays unset (uvicorn: no limit).

    Its upstream cap cannot be raised by a setting: 0.8.1 builds its aiohttp connector with a literal
    ``TCPConnector(limit=500, ...)`` (openai_forward/forward/core.py, ``build_client``) and reads no
    variable for it, so each worker holds at most 500 upstream streams in both rows.
    """

    name = "openai-forward-tuned"
    extra_args = ("--backlog", str(BACKLOG))


class MoonrelayAt(Moonrelay):
    """moonrelay as it was at a git revision (``moonrelay@REV``), from a worktree of its own under ``.bench/``:
    the before side of an A/B measured in the same run as the after, with the same dependencies."""

    def __init__(self, rev: str) -> None:
        self.rev = rev
        self.name = f"moonrelay@{rev}"
        self.tree = BENCH_HOME / f"moonrelay-{rev}"

    def ensure(self) -> str:
        repo = Path(__file__).resolve().parent.parent
        full = subprocess.run(["git", "rev-parse", "--short", self.rev], capture_output=True, text=True, cwd=repo)
        if full.returncode != 0:
            raise PeerUnavailable(f"{self.name}: no such revision: {full.stderr.strip()}")
        if not (self.tree / "proxy").is_dir():
            _run(["git", "-C", str(repo), "worktree", "add", "--detach", str(self.tree), self.rev],
                 BENCH_HOME / "worktrees.log", f"git worktree add {self.rev}")
        return f"git {full.stdout.strip()} (worktree .bench/moonrelay-{self.rev})"

    def launch(self, sim_url: str, workdir: Path, workers: int, streams: int) -> Launch:
        base = super().launch(sim_url, workdir, workers, streams)
        # ``python -m`` puts the working directory first on sys.path: that revision's proxy/ and wire/ run.
        return Launch(argv=base.argv, url_pattern=base.url_pattern, env=base.env, cwd=self.tree)


# -- issue 26: moonrelay with one operating feature on --------------------------------------------------
# moonrelay with one of issue 26's operating features on, each the A side of an A/B against plain ``moonrelay`` on
# the same scenario (the token-rate bench): what tracing, the response cache's miss path and cost accounting cost
# per chunk.
#
# - ``moonrelay-traced``: every request sampled (``--otel-sample-ratio 1``) and exported over OTLP/HTTP to a
#   collector in a process of its own (bench.tracing's sink, started by the launch, outside the relay's process tree
#   so its CPU is not the relay's);
# - ``moonrelay-cached``: the upstream says ``cache = true``; the load generator's prompts are random, so every
#   request is a miss: looked up, its stream recorded as it goes out, stored when it ends;
# - ``moonrelay-priced``: a ``[prices]`` table: each answer's cost summed, logged and counted;
# - ``moonrelay-spend``: that table and the bench's key as a client key with a budget in money, so every stream is
#   metered and each request reserved and settled in money.

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


class MoonrelayAdmin(_Configured):
    """The admin API on (its own key, keys kept in a file): the bench's key is the keys file's, and with the admin
    API on every key's usage is counted per request (what the API reads back)."""

    name = "moonrelay-admin"

    def files(self, sim_url: str) -> tuple[str, str | None]:
        return _upstream(sim_url), f"{API_KEY} name=bench\n"

    def launch(self, sim_url: str, workdir: Path, workers: int, streams: int) -> Launch:
        base = super().launch(sim_url, workdir, workers, streams)
        argv = [*base.argv, "--admin-key-env", "MOONRELAY_BENCH_ADMIN_KEY",
                "--admin-keys-file", str(workdir / "admin-keys.json")]  # fmt: skip
        env = {**base.env, "MOONRELAY_BENCH_ADMIN_KEY": "mr-admin-bench-0123456789abcdef"}
        return Launch(argv=argv, url_pattern=base.url_pattern, env=env)


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


OPERATED = (MoonrelayTraced(), MoonrelayCached(), MoonrelayPriced(), MoonrelaySpend(), MoonrelayAdmin())


def peer(name: str) -> Peer:
    """The peer a target names: one of :data:`PEERS`, or ``moonrelay@REV``; KeyError for anything else."""
    if name.startswith("moonrelay@"):
        return MoonrelayAt(name.partition("@")[2])
    return PEERS[name]


PEERS: dict[str, Peer] = {p.name: p for p in (Moonrelay(), Nginx(), LiteLLM(), LiteLLMTuned(), OpenAIForward(),
                                              OpenAIForwardTuned(), MoonrelayQuiet(), MoonrelayNoPump(),
                                              MoonrelayCapped(), MoonrelayState(), MoonrelayAnthropic(),
                                              MoonrelayResponses(), *OPERATED)}  # fmt: skip
TARGETS = ("direct", *PEERS)
# the A/B variants run only when named
ON_REQUEST = {"moonrelay-quiet", "moonrelay-nopump", "moonrelay-capped", "moonrelay-state", "moonrelay-anthropic",
              "moonrelay-responses", *(p.name for p in OPERATED)}
DEFAULT_TARGETS = tuple(t for t in TARGETS if t not in ON_REQUEST)
_URL_SUFFIX = re.compile(r"/v1/?$")


def as_v1(url: str) -> str:
    url = url.rstrip("/")
    return url if _URL_SUFFIX.search(url) else url + "/v1"
