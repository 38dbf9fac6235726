"""A fleet against one account: N videos x M segments on W workers, the account allowing C generations at once.

By default it is the fleet as a team runs it: each video a flow run of a ``modify-video`` deployment
on a process work pool served by W ``prefect worker start`` processes (one video at a time each: W
machines, each flow run a process of its own), sources, outputs and the store in a
LocalFileSystem block; the account's limit C an account-wide Prefect global concurrency limit (a
fresh account label, ``account_concurrency`` C, each run allowed C itself); the Prefect server
``prefect server start`` on a throwaway PostgreSQL, as production runs it (Debian's
``postgresql``); the fake Segmind answering each create after L = 30 s (real generations take
longer: the service, not the media work, is what the account's limit is about).

Printed: the wall time against the ideal ceil(N x M / C) x L plus the media work (the same batch
run again, every segment then found in the store: media work only), as a ratio (target <= 1.15),
and the share of the time from the first create to the last answer during which C generations
were in flight (read from the fake server's create spans; target >= 0.9). Where the time goes:
when the videos' flow runs began and the first creates went, how long after a slot was freed the
next create started (the k-th create can go no sooner than the (k - C)-th answer), and the time
with fewer than C in flight before the C-th create, between, and after the C-th last answer.

Other set-ups, to compare: ``--on threads`` runs the videos as subflows in the batch's own
process, W at a time; ``--limit-by run`` shares the account's limit out as each run's own
concurrency (C // W per run); ``--database sqlite`` uses ``prefect_test_harness``'s SQLite, where
runs that start or change state together get 503s ("database is locked") and their client waits
2, 4, 8 s before trying again (with ``--limit-by gcl --on threads`` on a loaded 2-core box it
answered 503 to a task-run create twice out of two, failing one video). With a short ``--latency``
(3 s) the media work, not the account, is the bottleneck and the share reads low (0.24).

    python bench/fleet.py [--videos 4] [--segments 10] [--limit 8] [--workers 4] [--latency 30]
                          [--limit-by gcl|run] [--database postgres|sqlite] [--on workers|threads]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# Waiting runs ask for a freed generation slot every ~2 s instead of every ~30 s (README, "How soon a freed slot is taken").
os.environ.setdefault("PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS", "2")

from prefect.client.orchestration import get_client  # noqa: E402
from prefect.client.schemas.actions import WorkPoolCreate  # noqa: E402
from prefect.filesystems import LocalFileSystem  # noqa: E402
from prefect.settings import PREFECT_API_URL, temporary_settings  # noqa: E402
from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from prefect_modify_video.flows.batch import BatchParameters, BatchSettings, modify_video_batch  # noqa: E402
from prefect_modify_video.media.sample import make_sample_video  # noqa: E402
from prefect_modify_video.testing import FakeModifyServer, Fault  # noqa: E402
from prefect_modify_video.flows.modify_video import modify_video  # noqa: E402
from prefect_modify_video.testing.servers import PREFECT, PostgresServer, PrefectServer  # noqa: E402

SEGMENT_SECONDS = 2.0
ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def prefect_server(database: str, folder: Path):
    """This process's Prefect API for the bench: the test harness (SQLite) or a server on PostgreSQL."""
    if database == "sqlite":
        with prefect_test_harness(server_startup_timeout=120):
            yield
        return
    postgres = PostgresServer()
    server = PrefectServer(folder / "prefect-home", database_url=postgres.url)
    try:
        postgres.start()
        server.start()
        with temporary_settings({PREFECT_API_URL: server.url}):
            yield
    finally:
        server.stop()
        postgres.stop()


def _intervals(spans: list[tuple[float, float]]) -> Iterator[tuple[float, float, int]]:
    """``(from, to, open)``: each stretch of time between two starts or ends, with how many spans were open."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans], key=lambda e: (e[0], e[1]))
    open_now, previous = 0, events[0][0]
    for moment, step in events:
        yield previous, moment, open_now
        open_now += step
        previous = moment


def full_share(spans: list[tuple[float, float]], limit: int) -> tuple[float, int]:
    """The share of the time from the first start to the last end with ``limit`` or more spans open, and the peak.

    Example:
        >>> full_share([(0, 2), (0, 1), (1, 2)], 2)
        (1.0, 2)
        >>> full_share([(0, 2), (1, 2)], 2)
        (0.5, 2)
    """
    if not spans:
        return 0.0, 0
    stretches = list(_intervals(spans))
    full = sum(end - start for start, end, open_now in stretches if open_now >= limit)
    peak = max(open_now for *_, open_now in stretches)
    span = max(end for _, end in spans) - min(start for start, _ in spans)
    return (full / span if span > 0 else 0.0), peak


def idle_parts(spans: list[tuple[float, float]], limit: int) -> tuple[float, float, float]:
    """Where the time with fewer than ``limit`` spans open went: seconds before the ``limit``-th start (the
    ramp), after the ``limit``-th last end (the tail: the last wave's ends spread out), and in between.

    Example:
        >>> idle_parts([(0, 4), (1, 3), (3, 6), (4, 5)], 2)
        (1.0, 1.0, 0.0)
    """
    ramp_end = sorted(start for start, _ in spans)[limit - 1]
    tail_start = sorted(end for _, end in spans)[-limit]
    parts = [0.0, 0.0, 0.0]
    for start, end, open_now in _intervals(spans):
        if open_now < limit and end > start:
            parts[0 if end <= ramp_end else 2 if start >= tail_start else 1] += end - start
    return parts[0], parts[2], parts[1]


def hand_overs(spans: list[tuple[float, float]], limit: int) -> list[float]:
    """For each create after the first ``limit``: how long after the slot it could take was freed it started.

    The k-th create (in start order) can go no sooner than the (k - limit)-th answer (in end order).

    Example:
        >>> hand_overs([(0, 2), (0, 3), (2.5, 4), (3, 5)], 2)
        [0.5, 0.0]
    """
    starts = sorted(start for start, _ in spans)
    ends = sorted(end for _, end in spans)
    return [max(0.0, starts[k] - ends[k - limit]) for k in range(limit, len(starts))]


def flow_run_starts(result, since: float) -> list[float]:
    """Seconds after ``since`` (``time.monotonic()``) at which each video's flow run began (runs on workers)."""
    ids = [v.flow_run_id for v in result.videos if v.flow_run_id]
    with get_client(sync_client=True) as client:
        began = sorted(run.start_time.timestamp() for run in map(client.read_flow_run, ids) if run.start_time)
    return [moment - time.time() + time.monotonic() - since for moment in began]


@contextlib.contextmanager
def process_workers(count: int, folder: Path):
    """A process work pool, a ``modify-video`` deployment of this checkout on it and ``count`` workers
    (one flow run at a time each, their own PREFECT_HOME): yields the deployment's name."""
    pool = f"bench-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    modify_video.from_source(
        source=str(ROOT), entrypoint="prefect_modify_video/flows/modify_video.py:modify_video"
    ).deploy(name=pool, work_pool_name=pool, print_next_steps=False)
    workers = []
    try:
        for index in range(count):
            home = folder / f"worker-{index}"
            home.mkdir(parents=True)
            env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_HOME": str(home),
                   "PYTHONPATH": str(ROOT), "PREFECT_WORKER_QUERY_SECONDS": "1"}
            workers.append(subprocess.Popen(
                [PREFECT, "worker", "start", "--pool", pool, "--type", "process", "--limit", "1"],
                cwd=ROOT, env=env, stdout=open(home / "worker.log", "w"), stderr=subprocess.STDOUT,
                start_new_session=True,
            ))
        yield f"modify-video/{pool}"
    finally:
        for worker in workers:
            os.killpg(worker.pid, signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4, help="N: videos")
    parser.add_argument("--segments", type=int, default=10, help="M: segments per video")
    parser.add_argument("--limit", type=int, default=8, help="C: generations the account allows at once")
    parser.add_argument("--workers", type=int, default=4, help="W: videos at once")
    parser.add_argument("--latency", type=float, default=30.0, help="L: seconds the service takes per create")
    parser.add_argument("--limit-by", choices=("gcl", "run"), default="gcl",
                        help="gcl: the account's global concurrency limit; run: C // W per run")
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres",
                        help="the Prefect server's database (postgres: a throwaway cluster, as in production)")
    parser.add_argument("--on", choices=("workers", "threads"), default="workers",
                        help="threads: the videos run in the batch's process; workers: on W process workers")
    args = parser.parse_args()
    per_run = args.limit if args.limit_by == "gcl" else max(1, args.limit // args.workers)
    account = {"account": f"bench-{uuid.uuid4().hex[:8]}", "account_concurrency": args.limit} if args.limit_by == "gcl" else {}
    os.environ["SEGMIND_API_KEY"] = "bench-key"
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        stack.enter_context(prefect_server(args.database, work))
        for i in range(args.videos):  # a different frame rate each: different clips, so no video reuses another's answers
            make_sample_video(work / "in" / f"v{i}.mp4", seconds=args.segments * SEGMENT_SECONDS,
                              width=320, height=180, fps=24 + i, scenes=1)
        root, deployment = str(work), None
        if args.on == "workers":  # every path through a storage block, as other machines would see it
            block = f"bench-{uuid.uuid4().hex[:8]}"
            LocalFileSystem(basepath=str(work)).save(block)
            root = f"block://local-file-system/{block}"
            deployment = stack.enter_context(process_workers(args.workers, work / "workers"))
        sources = [f"{root}/in/v{i}.mp4" for i in range(args.videos)]
        with FakeModifyServer() as server:
            server.script("segmind", [Fault.latency(args.latency)] * (args.videos * args.segments * 2))

            def run(output: str):
                params = BatchParameters(
                    sources=sources,
                    output_folder=f"{root}/{output}/",
                    settings=BatchSettings(
                        prompt="bench",
                        backend={"name": "segmind", "base_url": server.base_url, **account},
                        max_segment_seconds=SEGMENT_SECONDS + 0.05,
                        overlap_frames=0,
                        concurrency=per_run,
                        store_dir=f"{root}/store/",
                    ),
                    max_concurrent_videos=args.workers,
                    deployment=deployment,
                    poll_seconds=0.5,
                )
                started = time.perf_counter()
                result = modify_video_batch(params)
                return result, time.perf_counter() - started

            batch_began = time.monotonic()
            first, first_seconds = run("first")
            spans = server.create_spans("segmind")
            starts = flow_run_starts(first, batch_began)
            billed = server.stats("segmind").billed
            server.reset()
            second, media_seconds = run("second")
    segments = sum(v.segments for v in first.videos)
    reported = sum(v.billed_calls for v in first.videos)
    ideal_calls = math.ceil(segments / args.limit) * args.latency
    ideal = ideal_calls + media_seconds
    share, peak = full_share(spans, args.limit)
    print(f"videos N={args.videos} x segments {segments // args.videos} (total {segments}), account limit C={args.limit}, "
          f"W={args.workers} videos at once, {per_run} per run (limit by {args.limit_by}), latency L={args.latency:g} s, "
          f"Prefect server on {args.database}, videos on {args.on}")
    print(f"billed calls at the service: {billed} (reported by the runs: {reported}); second run: "
          f"{sum(v.billed_calls for v in second.videos)}")
    print(f"first run: {first_seconds:.1f} s; media work only (second run): {media_seconds:.1f} s")
    print(f"ideal: ceil({segments}/{args.limit}) x {args.latency:g} s = {ideal_calls:.1f} s of calls "
          f"+ {media_seconds:.1f} s of media work = {ideal:.1f} s")
    print(f"fleet ratio (first run / ideal): {first_seconds / ideal:.2f} (target <= 1.15)")
    print(f"account limit fully used: {share:.3f} of the time from the first create to the last answer "
          f"(peak {peak} in flight; target >= 0.9)")
    if gaps := sorted(hand_overs(spans, args.limit)):
        print(f"freed slot to the next create: median {gaps[len(gaps) // 2]:.2f} s, max {gaps[-1]:.2f} s "
              f"({len(gaps)} hand-overs); first create to the {args.limit}th: "
              f"{sorted(s for s, _ in spans)[min(args.limit, len(spans)) - 1] - spans[0][0]:.2f} s")
    if starts:
        print(f"videos' flow runs began {', '.join(f'{s:.1f}' for s in starts)} s after the batch; the first create "
              f"{spans[0][0] - batch_began:.1f} s, the {args.limit}th {sorted(s for s, _ in spans)[args.limit - 1] - batch_began:.1f} s")
    if len(spans) >= args.limit:
        ramp, tail, between = idle_parts(spans, args.limit)
        print(f"time with fewer than {args.limit} in flight: {ramp:.1f} s before the {args.limit}th create, "
              f"{between:.1f} s between, {tail:.1f} s after the {args.limit}th last answer")


if __name__ == "__main__":
    main()
