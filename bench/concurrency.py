"""Concurrency against a slow service, against an ideal measured apart, and Prefect's own cost per segment.

N segments (default 200) of a 320x180 24 fps video go through the fake server answering after
``--latency`` s, ``--concurrency`` at a time, in one run of the flow. It is judged against an
ideal built without that run:

- the calls: ceil(N / concurrency) x latency;
- the media work: the same plan's probe, plan, extract, the fake service's render of each clip
  (its CPU is spent on this machine), conform, finish, join and seam report, timed by calling the
  media functions directly (no Prefect, no HTTP), one after the other.

Prefect's own cost per segment is measured directly too: a flow of no-op tasks shaped like a
run's (per segment one task, as the run's ``modify-segment``, on the run's own task runner with
the run's own parameters, then its ``finish-NNNNN`` task on a one-thread runner; and as each
finishes the run's progress artifact, its segment event and its progress log line; a table
artifact at the end), its wall time
divided by N, and its CPU time divided by N: this process's and the Prefect server's (which on a
shared machine varies far less than wall time).

The last lines: Prefect's seconds per segment (target <= 0.05) and the run against the ideal
(target <= 1.1), then the second run's billed calls (0: everything is stored).

    python bench/concurrency.py [--segments 200] [--concurrency 8] [--latency 2]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import resource
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from prefect import flow, task  # noqa: E402
from prefect.artifacts import create_table_artifact  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.futures import as_completed, wait  # noqa: E402
from prefect.logging import get_run_logger  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402
from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from prefect_modify_video.flows import BackendSpec, ModifyVideoParameters, modify_video  # noqa: E402
from prefect_modify_video.media.conform import conform_clip, CONFORM_ENCODE  # noqa: E402
from prefect_modify_video.media.extract import extract_segment  # noqa: E402
from prefect_modify_video.media.plan import SegmentPlan  # noqa: E402
from prefect_modify_video.media.probe import VideoInfo, probe_video  # noqa: E402
from prefect_modify_video.media.sample import make_sample_video  # noqa: E402
from prefect_modify_video.media.seams import measure_seams_and_sheet  # noqa: E402
from prefect_modify_video.parameters import SeamOptions, flow_arguments  # noqa: E402
from prefect_modify_video.providers.registry import backend_class  # noqa: E402
from prefect_modify_video.testing import FakeModifyServer, Fault  # noqa: E402
from prefect_modify_video.testing.fake.render import render_modified_clip  # noqa: E402
from prefect_modify_video.progress import SegmentProgress  # noqa: E402
from prefect_modify_video.tasks.media import join_video_segments, plan_video_segments  # noqa: E402
from prefect_modify_video.tasks.report import RunProgressArtifact, emit_segment_event  # noqa: E402
from prefect_modify_video.tasks.runners import segment_task_runner  # noqa: E402
from prefect_modify_video.tasks.seams import finish_segment_clips, finished_in_conform  # noqa: E402

SERVICE = "segmind"


def media_alone(source: Path, work: Path, segment_seconds: float) -> tuple[float, int]:
    """Seconds of a run's media work for ``source``, the fake's renders included, without Prefect."""
    started = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    backend = backend_class(SERVICE)
    seams = SeamOptions().resolved_for(backend)
    info = probe_video(source)
    plan = plan_video_segments.fn(info, segment_seconds, seams.overlap_frames)
    ready = finished_in_conform(plan, seams)
    extracted, conformed = {}, {}
    for segment in plan.segments:
        clip = extract_segment(info, segment, work / f"x{segment.name}.mp4", max_dimension=backend.max_dimension)
        answer = work / f"a{segment.name}.mp4"
        answer.write_bytes(render_modified_clip(clip.read_bytes()))
        extracted[segment.index] = str(clip)
        final = segment.index in ready  # as the segment task's conform: ready to join, or pending for finish
        conformed[segment.index] = str(conform_clip(answer, info, segment, work / f"c{segment.name}.mp4",
                                                    encode=CONFORM_ENCODE if final else None, pending=not final))
    finished = finish_segment_clips.fn(plan, info, extracted, conformed, str(work), seams=seams)
    output = join_video_segments.fn(finished, info, str(work / "output.mp4"))
    later = plan.segments[1:]
    measure_seams_and_sheet(source, output, [s.first_frame for s in later], on_cut=[s.cut_before for s in later],
                            overlaps=[s.overlap_frames for s in later], sheet_png=work / "seams.png")  # fmt: skip
    return time.perf_counter() - started, len(plan.segments)


async def _answer(clip: str, segment) -> dict:
    return {"index": segment.index, "clip": clip, "paid": True}


@task(name="noop-segment", task_run_name="noop-{segment.index:05d}", cache_policy=NO_CACHE)
def _segment(info: VideoInfo, segment, settings: dict, work_dir: str) -> dict:
    """As the run's segment task (named per segment, its paid step a coroutine run in it): extract, modify,
    conform, none of them done."""
    clip = f"{work_dir}/{segment.name}.mp4"
    return {"extracted": clip, "modified": asyncio.run(_answer(clip, segment)), "conformed": clip}


@task(name="noop-finish", task_run_name="finish-{index:05d}", cache_policy=NO_CACHE)
def _finish(index: int) -> list[str]:
    """As the run's finish task (``tasks.seams.finish_segment``, one at a time beside the segment tasks): no encode."""
    return [f"/w/finish/{index:05d}.mp4"]


@flow(name="noop-segments")
def _noop_segments(info: VideoInfo, plan: SegmentPlan, concurrency: int) -> int:
    """A run's Prefect work per segment with no media work and no service."""
    progress_artifact = RunProgressArtifact(len(plan.segments))  # the run's own, updated as the run does
    progress = SegmentProgress(total=len(plan.segments))
    with segment_task_runner(concurrency) as runner, ThreadPoolTaskRunner(max_workers=1) as finish_runner:
        finals, finishing = [], []
        for segment in plan.segments:
            finals.append(runner.submit(_segment, parameters={
                "info": info, "segment": segment, "settings": {"prompt": "bench"}, "work_dir": "/w"
            }))
        for future in as_completed(finals):
            finishing.append(finish_runner.submit(_finish, parameters={"index": future.result()["modified"]["index"]}))
            progress.record(paid=True)
            emit_segment_event("paid", index=progress.done, output="/w/out.mp4", backend=SERVICE, mode="restyle",
                               cost_usd=0.1)
            progress_artifact.show(progress)
            get_run_logger().info("progress: %s", progress.describe())
        wait(finishing)
    create_table_artifact(table=[{"segment": s.index} for s in plan.segments], key="noop-segments")
    return progress.done


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds of this process, and of the Prefect server it started (its child processes)."""
    import psutil  # with distributed and pytest-xdist in the test environment

    own = resource.getrusage(resource.RUSAGE_SELF)
    server = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:
            continue
        server += times.user + times.system
    return own.ru_utime + own.ru_stime, server


def server_settled(timeout: float = 120.0) -> None:
    """Waits until the Prefect server has recorded what it was sent (under 5 % of a core for 1 s)."""
    deadline = time.monotonic() + timeout
    previous = cpu_seconds()[1]
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = cpu_seconds()[1]
        if now - previous < 0.05:
            return
        previous = now


def prefect_cost_per_segment(info: VideoInfo, plan: SegmentPlan, concurrency: int) -> tuple[float, float, float]:
    """Wall seconds, this process's CPU seconds and the server's CPU seconds per segment of the no-op flow.

    A short run first pays for imports and caches; the server is let settle before and after the
    measured run, so its CPU is that of recording this run (task runs, states, logs, events).
    """
    _noop_segments(info, plan.model_copy(update={"segments": plan.segments[:8]}), concurrency)
    server_settled()
    (own, server), started = cpu_seconds(), time.perf_counter()
    _noop_segments(info, plan, concurrency)
    wall = time.perf_counter() - started
    own_after = cpu_seconds()[0]
    server_settled()
    server_after = cpu_seconds()[1]
    count = len(plan.segments)
    return wall / count, (own_after - own) / count, (server_after - server) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--latency", type=float, default=2.0)
    args = parser.parse_args()
    os.environ["SEGMIND_API_KEY"] = "bench-key"
    segment_seconds = 2.0
    with tempfile.TemporaryDirectory() as folder, prefect_test_harness(server_startup_timeout=120):
        work = Path(folder)
        source = make_sample_video(
            work / "source.mp4", seconds=args.segments * segment_seconds, width=320, height=180, fps=24, scenes=4
        )
        cap = segment_seconds + 0.05
        media_seconds, segments = media_alone(source, work / "alone", cap)
        info = probe_video(source)
        plan = plan_video_segments.fn(info, cap, 0)
        prefect_wall, prefect_own_cpu, prefect_server_cpu = prefect_cost_per_segment(info, plan, args.concurrency)
        with FakeModifyServer(credits={SERVICE: 1e9}) as server:  # the default balance ends at ~160 calls
            server.script(SERVICE, [Fault.latency(args.latency)] * (args.segments * 2))  # cuts make more segments

            def run(output: str):
                params = ModifyVideoParameters(
                    source=str(source),
                    prompt="bench",
                    output=str(work / output),
                    backend=BackendSpec(name=SERVICE, base_url=server.base_url),
                    max_segment_seconds=cap,
                    concurrency=args.concurrency,
                    store_dir=str(work / "store"),
                )
                started = time.perf_counter()
                result = modify_video(**flow_arguments(params))
                return result, time.perf_counter() - started

            first, first_seconds = run("first.mp4")
            second, second_seconds = run("second.mp4")
        calls = math.ceil(first.segments / args.concurrency) * args.latency
        ideal = calls + media_seconds
        print(f"segments: {first.segments} ({segments} planned alone), concurrency {args.concurrency}, "
              f"service latency {args.latency:g} s")  # fmt: skip
        print(f"media work alone (no Prefect, no HTTP, the fake's renders included): {media_seconds:.1f} s")
        print(f"ideal: {calls:.1f} s of calls + {media_seconds:.1f} s of media work = {ideal:.1f} s")
        print(f"run: {first_seconds:.1f} s, {first.billed_calls} billed calls")
        print(f"second run (all stored): {second_seconds:.1f} s, {second.billed_calls} billed calls")
        print(f"Prefect per segment (no-op tasks, artifacts, events, progress): {prefect_wall:.3f} s "
              f"(CPU: {prefect_own_cpu:.3f} s in the flow's process, {prefect_server_cpu:.3f} s in the server)")
        print(f"concurrency ratio (run / ideal): {first_seconds / ideal:.2f}")


if __name__ == "__main__":
    main()
