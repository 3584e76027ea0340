"""``python -m loadtest.sim``: the command line, and ``--workers`` processes sharing one port.

With ``--workers W`` the parent binds W SO_REUSEPORT sockets (the first picks the port), forks one serving
process per socket with its counters in shared memory, prints ``sim listening on URL`` once every worker
listens, and stops them all on SIGINT/SIGTERM (or when one exits on its own).
"""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.connection
import signal
import socket
import sys
from functools import partial

import trio

from loadtest.sim._config import SimConfig
from loadtest.sim._http import write_tls_files
from loadtest.sim._server import serve_sim
from loadtest.sim._state import SharedSimStats, SimServer
from wire import STOP_SIGNALS, listen_socket, raise_nofile_limit, split_bind

__all__ = ["build_parser", "config_from_args", "main"]

DESCRIPTION = "The simulated Moonshot/OpenAI upstream: a raw trio + h11 server cheap enough for 10,000 open streams."


def _parse_bind(value: str) -> tuple[str, int]:
    try:
        return split_bind(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest.sim", description=DESCRIPTION)
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


def _worker(config: SimConfig, sock: socket.socket, array, row: int, workers: int, ready) -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    raise_nofile_limit()
    if config.seed is not None:
        config.seed += row
    stats = SharedSimStats(array, row, workers)

    def on_ready(server: SimServer) -> None:
        ready.send(server.url)
        ready.close()

    trio.run(partial(_run_until_signal, config, sock=sock, stats=stats, on_ready=on_ready))


class _Stop(Exception):
    pass


def _raise_stop(signum, frame) -> None:
    raise _Stop


def _run_workers(config: SimConfig, workers: int) -> int:
    ctx = multiprocessing.get_context("fork")
    socks = []
    port = config.port
    for _ in range(workers):
        sock = listen_socket(config.host, port, config.backlog, reuse_port=True)
        port = sock.getsockname()[1]  # with port 0, the first socket picks the port for the rest
        socks.append(sock)
    if config.tls_dir is not None:
        write_tls_files(config.tls_dir, config.host)
        config.tls_reuse = True
    array = SharedSimStats.allocate(workers, ctx)
    procs, pipes = [], []
    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise_stop)
    code = 0
    try:
        for row, sock in enumerate(socks):
            receiver, sender = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_worker, args=(config, sock, array, row, workers, sender), daemon=True)
            proc.start()
            sender.close()
            sock.close()
            procs.append(proc)
            pipes.append(receiver)
        url = None
        for receiver in pipes:
            try:
                url = receiver.recv()
            except EOFError:
                print("sim: a worker failed to start", file=sys.stderr, flush=True)
                return 1
        print(f"sim listening on {url}", flush=True)
        multiprocessing.connection.wait([p.sentinel for p in procs])
        code = 1  # a worker exited on its own
    except _Stop:
        pass
    finally:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    raise_nofile_limit()
    if args.workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return 2
    if args.workers > 1:
        return _run_workers(config, args.workers)
    try:
        trio.run(partial(_run_until_signal, config, on_ready=_announce))
    except KeyboardInterrupt:
        pass
    return 0
