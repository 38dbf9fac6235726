"""Where the segment tasks run: the flow's own threads, or the processes and machines of its task runner."""

from __future__ import annotations

import os
import threading
from contextlib import AbstractContextManager, nullcontext

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

_MEDIA_WORK = threading.BoundedSemaphore(os.cpu_count() or 2)


def media_work() -> threading.BoundedSemaphore:
    """Held by a segment's media step (extract, conform): one per core runs at once in this process.

    However many of the pool's threads are free (most wait on the service), a run of 4K segments
    never has dozens of ffmpeg encodes in memory at once. (A function, not the semaphore itself:
    a task's function sent to a Dask worker is pickled with the globals it names.)
    """
    return _MEDIA_WORK


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
