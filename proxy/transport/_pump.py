"""One task that reads every streaming upstream socket of a worker and relays what each read brings.

Why: at token rates a stream's cost is per chunk, and per chunk its own task pays trio's full round
trip (an ``epoll_ctl`` to re-arm the socket, the reschedule, a task step through the whole await chain,
the run loop's instrument checks) for a few microseconds of its own work: the relay's largest cost per
chunk. Here a stream's task *parks*: its upstream socket joins this
worker's own epoll set (registered once, not per chunk) and the task waits without a socket. The pump
task waits on that epoll set through trio, and each time it is readable it runs, for every ready socket,
the parked stream's synchronous step (read, decode, check, write to the client), in one pass, with no
task switch per chunk. This is how nginx relays: one event loop, a handler per ready socket.

A step that needs anything asynchronous hands the stream back to its task (the pump never waits for
one stream): the client's socket is full (its rest goes under the client write deadline), the body
ended or failed, a step raised. The task is woken too when something else must reach it: cancellation
(the client left: parking aborts at once), a timeout, a heartbeat or the shutdown
(:meth:`Pump.wake`, which the upstream connection calls instead of ``notify_closing``). If the pump
stops, parked streams go back to reading on their own. Every step keeps the parked stream's upstream
deadline current, so the watchdog and the heartbeats see what they saw before.

Only the public ``trio.lowlevel`` API (``wait_readable`` on the epoll fd, ``wait_task_rescheduled``,
``reschedule``); Linux only (``select.epoll``), elsewhere there is no pump and streams read on their own.
"""

from __future__ import annotations

import select
from collections.abc import Callable
from typing import Any

import trio

WOKEN = "woken"  # park() returns it when :meth:`Pump.wake` ended the park: the stream looks at why
RESUME = "resume"  # ... when the pump stopped: the stream reads on its own from now on

PASSES = 4  # epoll passes per wake-up of the pump task, at most
available = hasattr(select, "epoll")


class Pump:
    """Parked streams' upstream sockets, and the task that serves them (:meth:`run`)."""

    __slots__ = ("_ep", "_parked", "steps")

    def __init__(self) -> None:
        self._ep: Any = None  # the epoll set while run() runs
        # fd -> (the parked task, its step, the box its result goes in)
        self._parked: dict[int, tuple[trio.lowlevel.Task, Callable[[float], object], list[object]]] = {}
        self.steps = 0  # steps run (tests: the pump really relayed)

    @property
    def running(self) -> bool:
        return self._ep is not None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        ep = select.epoll()
        self._ep = ep
        parked = self._parked
        task_status.started()
        try:
            fd = ep.fileno()
            while True:
                await trio.lowlevel.wait_readable(fd)
                # Sockets that became readable while this pass ran are served in the same wake-up (one
                # poll, instead of trio's round trip back here), a few passes at most before other tasks run.
                for _ in range(PASSES):
                    events = ep.poll(0, max(1, len(parked)))
                    if not events:
                        break
                    now = trio.current_time()
                    self.steps += len(events)
                    for ready, _ in events:
                        entry = parked.get(ready)
                        if entry is None:
                            continue
                        try:
                            result = entry[1](now)
                        except BaseException as exc:  # a bug in a step: raised in its own task, not here
                            result = _Raised(exc)
                        if result is not None:
                            self._unpark(ready, result)
        finally:
            self._ep = None
            for ready in list(parked):
                self._unpark(ready, RESUME)
            ep.close()

    async def park(self, fd: int, step: Callable[[float], object]) -> object:
        """Wait until the pump hands ``fd``'s stream back: what ``step`` returned (not None), WOKEN or RESUME.

        ``step(now)`` runs in the pump task each time ``fd`` is readable; None keeps the stream parked.
        A cancelled park leaves the epoll set at once (the stream's task then ends its upstream request).
        """
        ep = self._ep
        if ep is None:
            return RESUME
        box: list[object] = [RESUME]
        ep.register(fd, select.EPOLLIN)
        self._parked[fd] = (trio.lowlevel.current_task(), step, box)

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._forget(fd)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        result = box[0]
        if type(result) is _Raised:
            raise result.exc
        return result

    def wake(self, fd: int) -> bool:
        """Hand ``fd``'s parked stream back to its task with WOKEN; False if it is not parked here."""
        if fd not in self._parked:
            return False
        self._unpark(fd, WOKEN)
        return True

    def _unpark(self, fd: int, result: object) -> None:
        task, _, box = self._parked[fd]
        box[0] = result
        self._forget(fd)
        trio.lowlevel.reschedule(task)

    def _forget(self, fd: int) -> None:
        del self._parked[fd]
        ep = self._ep
        if ep is not None:
            try:
                ep.unregister(fd)
            except OSError:  # closed already: the kernel dropped it from the set
                pass


class _Raised:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
