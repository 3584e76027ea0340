"""``python -m loadtest.sim``: the command line, and ``--workers`` processes sharing one port.

With ``--workers W``, ``wire.run_workers`` forks W serving processes, each on its own SO_REUSEPORT socket on one
port, with their counters in shared memory; the parent prints ``sim listening on URL`` once every worker listens,
and stops them all on SIGINT/SIGTERM (or when one exits on its own, with that worker's status).
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import sys
from functools import partial

import trio

from loadtest.sim._config import SimConfig
from loadtest.sim._http import write_tls_files
from loadtest.sim._server import serve_sim
from loadtest.sim._state import SharedSimStats, SimServer
from wire import (
    STOP_SIGNALS,
    ArgumentParser,
    BindError,
    Ready,
    listen_socket,
    raise_nofile_limit,
    run_workers,
    split_bind,
)

__all__ = ["build_parser", "config_from_args", "main"]

DESCRIPTION = "The simulated Moonshot/OpenAI upstream: a raw trio + h11 server cheap enough for 10,000 open streams."


def _parse_bind(value: str) -> tuple[str, int]:
    try:
        return split_bind(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m loadtest.sim", description=DESCRIPTION)
    p.add_argument("--bind", type=_parse_bind, default=("127.0.0.1", 9100), metavar="HOST:PORT")
    p.add_argument("--ttft", type=float, help="seconds to the first chunk (default 1.0)")
    p.add_argument("--ttft-jitter", type=float)
    p.add_argument("--chunks", type=int, help="content chunks per stream (default 20)")
    p.add_argument("--interval", type=float, help="seconds between chunks (default 0.1)")
    p.add_argument("--interval-jitter", type=float)
    p.add_argument("--tokens-per-chunk", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int, default=1, help="processes sharing the port via SO_REUSEPORT")
    p.add_argument("--backlog", type=int)
    p.add_argument("--tls", metavar="DIR", help="serve https; writes DIR/ca.pem for clients to trust")
    p.add_argument("--require-key", metavar="KEY")
    return p


def config_from_args(args: argparse.Namespace) -> SimConfig:
    config = SimConfig(host=args.bind[0], port=args.bind[1])
    for name in ("ttft", "ttft_jitter", "chunks", "interval", "interval_jitter", "tokens_per_chunk", "seed", "backlog"):
        value = getattr(args, name)
        if value is not None:  # only flags the user passed override the defaults
            setattr(config, name, value)
    config.tls_dir = args.tls
    config.require_key = args.require_key
    return config


async def _run_until_signal(config: SimConfig, *, sock=None, stats=None, on_ready) -> None:
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(serve_sim, config, sock=sock, stats=stats))
            on_ready(server)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()


def _announce(server: SimServer) -> None:
    print(f"sim listening on {server.url}", flush=True)


def _worker(sock: socket.socket, row: int, ready: Ready, config: SimConfig, array, workers: int) -> None:
    """One forked worker (wire.run_workers): its own seed and row of the shared counters, until SIGINT/SIGTERM."""
    if config.seed is not None:
        config.seed += row
    stats = SharedSimStats(array, row, workers)
    trio.run(partial(_run_until_signal, config, sock=sock, stats=stats, on_ready=lambda server: ready(server.url)))


def _run_workers(config: SimConfig, workers: int) -> int:
    if config.tls_dir is not None:  # one certificate for every worker, written before the fork
        write_tls_files(config.tls_dir, config.host)
        config.tls_reuse = True
    array = SharedSimStats.allocate(workers, multiprocessing.get_context("fork"))
    announced = []

    def on_ready(url: str) -> None:
        announced.append(url)
        print(f"sim listening on {url}", flush=True)

    def on_exit(index: int, status: int) -> None:
        what = "exited" if announced else "failed to start"
        print(f"sim: worker {index} {what} (status {status})", file=sys.stderr, flush=True)

    return run_workers(
        workers,
        _worker,
        (config, array, workers),
        host=config.host,
        port=config.port,
        backlog=config.backlog,
        grace_s=10.0,
        on_ready=on_ready,
        on_exit=on_exit,
    )


def main(argv: list[str] | None = None) -> int:
    """Exit status 2, with one line, for a usage error or a port that cannot be had (``wire.BindError``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    config = config_from_args(args)
    raise_nofile_limit()
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    try:
        if args.workers > 1:
            return _run_workers(config, args.workers)
        sock = listen_socket(config.host, config.port, config.backlog)  # before trio: one line if it fails
    except BindError as exc:
        print(f"sim: {exc}", file=sys.stderr)
        return 2
    try:
        trio.run(partial(_run_until_signal, config, sock=sock, on_ready=_announce))
    except KeyboardInterrupt:
        pass
    return 0
