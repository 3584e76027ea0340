"""One timer task per process that wakes sleeping tasks at absolute deadlines, in batches.

Why not ``trio.sleep`` per chunk: every ``trio.sleep`` opens a cancel scope and registers its deadline
with the run loop; at 10,000 streaming tasks that costs several times the CPU per chunk of one shared
timer that keeps plain ``(deadline, seq, waiter)`` tuples in a heap and reschedules every task whose
deadline has passed in one batch. Absolute deadlines (``start + k *
interval``) also keep a stream's schedule from drifting by the time each send took.

Usage::

    timer = DeadlineTimer()
    await nursery.start(timer.run)
    ...
    await timer.sleep_until(trio.current_time() + 0.5)

Cancellation works as for any trio sleep: the waiter's entry is marked dead (lazy deletion) and
dropped when it reaches the top of the heap.
"""

from __future__ import annotations

import heapq
import math

import outcome
import trio

__all__ = ["DeadlineTimer"]


class _Waiter:
    __slots__ = ("task",)

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task: trio.lowlevel.Task | None = task


class DeadlineTimer:
    """A heap of absolute trio-clock deadlines served by one task (:meth:`run`)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Waiter]] = []
        self._seq = 0
        self._scope: trio.CancelScope | None = None  # the timer task's current sleep
        self._running = False
        self.woken = 0  # tasks rescheduled so far (for tests and stats)

    def __len__(self) -> int:
        """Entries in the heap, cancelled ones not yet dropped included."""
        return len(self._heap)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve deadlines until cancelled; on exit, every task still waiting gets a RuntimeError."""
        if self._running:
            raise RuntimeError("DeadlineTimer.run is already running")
        self._running = True
        task_status.started()
        heap = self._heap
        try:
            while True:
                now = trio.current_time()
                while heap and heap[0][0] <= now:
                    waiter = heapq.heappop(heap)[2]
                    task = waiter.task
                    if task is not None:
                        waiter.task = None
                        trio.lowlevel.reschedule(task)
                        self.woken += 1
                # Sleep until the earliest deadline; sleep_until() moves this scope's deadline earlier
                # when a new waiter needs to wake first.
                with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as self._scope:
                    await trio.sleep_forever()
                self._scope = None
                # Checkpointing here lets the batch we just woke run before we look at the heap again.
        finally:
            self._scope = None
            self._running = False
            error = RuntimeError("DeadlineTimer stopped")
            while heap:
                waiter = heapq.heappop(heap)[2]
                if waiter.task is not None:
                    trio.lowlevel.reschedule(waiter.task, outcome.Error(error))
                    waiter.task = None

    async def sleep_until(self, deadline: float) -> None:
        """Sleep until ``trio.current_time() >= deadline``. Always a checkpoint; cancellable."""
        if deadline <= trio.current_time():
            await trio.lowlevel.checkpoint()
            return
        if not self._running:
            raise RuntimeError("DeadlineTimer.run is not running")
        task = trio.lowlevel.current_task()
        waiter = _Waiter(task)
        self._seq += 1
        heap = self._heap
        heapq.heappush(heap, (deadline, self._seq, waiter))
        scope = self._scope
        if scope is not None and deadline < scope.deadline:
            scope.deadline = deadline

        def abort(_raise_cancel: object) -> trio.lowlevel.Abort:
            waiter.task = None  # lazy deletion: run() drops the entry when it reaches the top
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    async def sleep(self, seconds: float) -> None:
        """Sleep for ``seconds`` relative to now (a convenience over :meth:`sleep_until`)."""
        await self.sleep_until(trio.current_time() + seconds)
