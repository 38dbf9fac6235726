"""Where the segment tasks run: the flow's own threads, or the processes and machines of its task runner."""

from __future__ import annotations

import heapq
import itertools
import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner


class OrderedSlots:
    """A semaphore whose freed slot goes to the waiting holder of the lowest ``order`` (ties: who came first).

    Example:
        >>> slots = OrderedSlots(1)
        >>> with slots.held(order=3):
        ...     pass
    """

    def __init__(self, slots: int):
        self._free = slots
        self._lock = threading.Lock()
        self._waiting: list[tuple[int, int, threading.Event]] = []
        self._arrivals = itertools.count()

    @property
    def waiting(self) -> int:
        """How many holders wait for a slot."""
        with self._lock:
            return len(self._waiting)

    @contextmanager
    def held(self, order: int = 0) -> Iterator[None]:
        """Holds a slot for the ``with`` block, after every waiting holder of a lower order."""
        with self._lock:
            if self._free > 0:
                self._free -= 1
                turn = None
            else:
                turn = (order, next(self._arrivals), threading.Event())
                heapq.heappush(self._waiting, turn)
        if turn is not None:
            try:
                turn[2].wait()  # the slot is handed over by the holder who frees it
            except BaseException:  # interrupted while waiting: give back a slot handed over meanwhile
                with self._lock:
                    if turn[2].is_set():
                        self._hand_over()
                    else:
                        self._waiting.remove(turn)
                        heapq.heapify(self._waiting)
                raise
        try:
            yield
        finally:
            with self._lock:
                self._hand_over()

    def _hand_over(self) -> None:
        if self._waiting:
            heapq.heappop(self._waiting)[2].set()
        else:
            self._free += 1


_MEDIA_WORK = OrderedSlots(os.cpu_count() or 2)


def media_work(order: int = 0) -> AbstractContextManager[None]:
    """Held by a segment's media step (extract, conform): one per core runs at once in this process.

    However many of the pool's threads are free (most wait on the service), a run of 4K segments
    never has dozens of ffmpeg encodes in memory at once. A freed core goes to the waiting step of
    the lowest ``order`` (the segment's index): the clips the service takes next are extracted
    first, and a batch's runs started together all send their first segments before any extracts
    its tenth. (A function, not the slots themselves: a task's function sent to a Dask worker is
    pickled with the globals it names.)

    Args:
        order: The segment's index (lower goes first).
    """
    return _MEDIA_WORK.held(order)


def segment_task_runner(concurrency: int) -> AbstractContextManager[TaskRunner]:
    """The task runner the segment tasks (one a segment: extract → modify → conform) are submitted to.

    A flow given a task runner that spreads tasks over other processes or machines, e.g.
    prefect-dask's ``DaskTaskRunner``, sends them there (the runner is already started by the
    flow). Otherwise they run in a pool of the flow's threads. A segment's task holds its thread
    from its extract to its conform, so the pool has room for ``concurrency`` paid calls in
    flight, as many answers downloading and conforming once their slot is given back, and more
    segments extracted and waiting for a freed slot; the media work is one per core
    (``media_work`` keeps the media steps to that). (With three tasks a segment, each holding its
    thread while it waited for the one before, ``concurrency`` + cores threads extracted the next
    segment only after a slot was freed: ``bench/fleet.py --limit-by run`` measured 5 s from a
    freed slot to the next create, 0.2 s with this pool.)

    Args:
        concurrency: The run's paid calls in flight at once.

    Example:
        ```python
        from prefect_dask import DaskTaskRunner
        from prefect_modify_video.flows import modify_video

        on_cluster = modify_video.with_options(task_runner=DaskTaskRunner(address="tcp://scheduler:8786"))
        ```
    """
    from prefect.context import FlowRunContext

    if runs_elsewhere():
        return nullcontext(FlowRunContext.get().task_runner)
    return ThreadPoolTaskRunner(max_workers=3 * concurrency + (os.cpu_count() or 2))


def runs_elsewhere() -> bool:
    """Whether the current flow's task runner sends tasks to other processes or machines (not a thread pool)."""
    from prefect.context import FlowRunContext

    runner = getattr(FlowRunContext.get(), "task_runner", None)
    return runner is not None and not isinstance(runner, ThreadPoolTaskRunner)
