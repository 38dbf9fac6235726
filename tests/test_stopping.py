"""Issue 11, item 6: nothing hangs. A per-job deadline the user sets, validated intervals, and a CLI run
that stops on the first SIGINT/SIGTERM (keeping every saved job) and exits at once on the second.

Real processes and real HTTP: the CLI runs as a subprocess against ``FakeModifyServer``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import suppress
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL
from pydantic import ValidationError

from prefect_modify_video import stopping
from prefect_modify_video.blocks import build_backend
from prefect_modify_video.cli import main
from prefect_modify_video.errors import InvalidInputError
from prefect_modify_video.flows import BackendSpec, ModifyVideoParameters, SegmentsFailedError, modify_video
from prefect_modify_video.parameters import flow_arguments
from prefect_modify_video.media.ffmpeg import run_ffmpeg, write_with_ffmpeg
from prefect_modify_video.media.probe import probe_video
from prefect_modify_video.media.sample import make_sample_video
from prefect_modify_video.providers.base import JobState, ModifyBackend, ModifyJob, ModifyRequest, wait_for_job
from prefect_modify_video.providers.segmind import SegmindAsyncBackend
from prefect_modify_video.stopping import StopRequested
from prefect_modify_video.testing import FakeModifyServer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_stop_left():
    stopping.clear_stop()
    yield
    stopping.clear_stop()


@pytest.fixture(scope="module")
def three_segments(tmp_path_factory):
    """7.5 s at 24 fps: three segments of 2.5 s under a 2.6 s cap."""
    folder = tmp_path_factory.mktemp("stopping")
    return make_sample_video(folder / "three.mp4", seconds=7.5, width=160, height=90, fps=24, scenes=3)


@pytest.fixture(scope="module")
def one_segment(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stopping-one")
    return make_sample_video(folder / "one.mp4", seconds=2, width=160, height=90, fps=24, scenes=1)


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("SEGMIND_API_KEY", "sk-stop-test")
    with FakeModifyServer(polls_to_complete=2) as fake:
        yield fake
        fake.wait_idle(30)


# ----------------------------------------------------------------------------- validation and the deadline


@pytest.mark.parametrize(
    "flag, value", [("--poll-interval-seconds", "-1"), ("--max-wait-seconds", "0"), ("--timeout-seconds", "-5")]
)
def test_intervals_and_deadlines_must_be_positive_on_the_command_line(flag, value, one_segment, capsys):
    code = main(["run", str(one_segment), "--backend", "segmind-async", flag, value])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "greater than 0" in err, err


def test_intervals_and_deadlines_must_be_positive_everywhere():
    with pytest.raises(ValidationError):
        BackendSpec(name="segmind-async", poll_interval_seconds=0)
    with pytest.raises(ValidationError):
        ModifyVideoParameters(source="a.mp4", backend={"name": "fal", "max_wait_seconds": -1})
    with pytest.raises(InvalidInputError, match="poll_interval_seconds must be more than 0"):
        SegmindAsyncBackend("key", poll_interval_seconds=-1)

    class Queued(ModifyBackend):
        name = "queued"
        poll_interval_seconds = 0.0

        def estimate_cost_usd(self, seconds, width, height):
            return 0.0

        async def submit(self, request, workdir):
            raise NotImplementedError

        async def download(self, job, destination):
            raise NotImplementedError

    job = ModifyJob(provider="queued", state=JobState.QUEUED, job_id="j")
    with pytest.raises(InvalidInputError, match="must be more than 0"):
        asyncio.run(wait_for_job(Queued(), job))


def test_max_wait_seconds_reaches_the_backend(server):
    spec = BackendSpec(name="segmind-async", base_url=server.base_url, max_wait_seconds=7)
    assert build_backend(spec, api_key="key").max_wait_seconds == 7
    assert build_backend(BackendSpec(name="fal"), api_key="key").max_wait_seconds == 900  # the documented default
    flags = subprocess.run(
        [sys.executable, "-m", "prefect_modify_video.cli", "run", "--help"], capture_output=True, text=True,
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout
    assert "--max-wait-seconds" in flags and "--max-source-bytes" in flags


def _params(source, tmp_path, server, **overrides) -> ModifyVideoParameters:
    values = dict(
        source=str(source), prompt="pencil sketch", output=str(tmp_path / "out.mp4"),
        backend=BackendSpec(name="segmind-async", base_url=server.base_url, poll_interval_seconds=0.1),
        max_segment_seconds=2.6, store_dir=str(tmp_path / "store"), retry_delay_seconds=0.05,
    )
    values.update(overrides)
    return ModifyVideoParameters(**values)


def test_a_stuck_job_is_waited_on_once_per_run_whatever_the_retries(one_segment, tmp_path, server):
    """max_wait_seconds bounds the whole wait: Prefect's retries do not wait on the same job again
    (today's complaint: 900 s x 4 tries = 61 minutes)."""
    server.polls_to_complete = 10**6
    spec = BackendSpec(name="segmind-async", base_url=server.base_url, poll_interval_seconds=0.1, max_wait_seconds=1.5)
    with pytest.raises(SegmentsFailedError, match="JobTimedOutError"):
        modify_video(**flow_arguments(_params(one_segment, tmp_path, server, backend=spec, segment_retries=3)))
    stats = server.stats("segmind")
    assert stats.calls == 1
    # One wait of 1.5 s at 0.1 s between polls is about 15 polls; four would be about 60.
    assert stats.polls <= 25


def test_a_stuck_job_fails_after_max_wait_seconds_and_the_rerun_polls_the_same_job(one_segment, tmp_path, server):
    server.polls_to_complete = 10**6  # never done in this run
    spec = BackendSpec(name="segmind-async", base_url=server.base_url, poll_interval_seconds=0.1, max_wait_seconds=1.5)
    started = time.monotonic()
    with pytest.raises(SegmentsFailedError, match=r"JobTimedOutError: .*after 1.5 s \(max_wait_seconds\)"):
        modify_video(**flow_arguments(_params(one_segment, tmp_path, server, backend=spec, segment_retries=0)))
    assert time.monotonic() - started < 60, "seconds, not minutes"
    assert server.stats("segmind").calls == 1
    assert list((tmp_path / "store" / "jobs").glob("*.json")), "the timed-out job is kept"

    server.polls_to_complete = 1  # the service finishes it later
    result = modify_video(**flow_arguments(_params(one_segment, tmp_path, server)))
    assert (result.billed_calls, result.reused_segments) == (1, 0)
    stats = server.stats("segmind")
    assert (stats.calls, stats.billed) == (1, 1), "the re-run polled the same job: one create, billed once"


# ----------------------------------------------------------------------------- stopping


class _Running(ModifyBackend):
    name = "running"
    poll_interval_seconds = 5.0

    def __init__(self):
        self.polls = 0

    def estimate_cost_usd(self, seconds, width, height):
        return 0.0

    async def submit(self, request, workdir):
        raise NotImplementedError

    async def poll(self, job):
        self.polls += 1
        return job.with_changes(state=JobState.RUNNING)

    async def download(self, job, destination):
        raise NotImplementedError


def test_a_stop_request_ends_the_waiting_between_polls():
    backend = _Running()
    job = ModifyJob(provider="running", state=JobState.QUEUED, job_id="job-7")
    threading.Timer(0.3, stopping.request_stop, args=("SIGINT",)).start()
    started = time.monotonic()
    with pytest.raises(StopRequested, match="job job-7 stays saved"):
        asyncio.run(wait_for_job(backend, job, poll_first=True))
    assert time.monotonic() - started < 1.5, "the 5 s interval is not slept through"
    assert backend.polls == 1


def test_no_new_job_is_created_once_a_stop_is_requested(server, tmp_path):
    clip = make_sample_video(tmp_path / "clip.mp4", seconds=1, width=160, height=90, fps=24)
    stopping.request_stop("SIGTERM")

    async def go():
        async with SegmindAsyncBackend("key", server.base_url) as backend:
            await backend.submit(ModifyRequest(clip=clip, prompt="x", mode="flex_1"), tmp_path)

    with pytest.raises(StopRequested, match="no new job is sent"):
        asyncio.run(go())
    assert server.stats("segmind").calls == 0


_LOOP = textwrap.dedent(
    """
    import sys, time
    from prefect_modify_video.stopping import stop_on_signals, stop_requested
    with stop_on_signals():
        print("ready", flush=True)
        while not (stop_requested() and sys.argv[1] == "obeys"):
            time.sleep(0.05)
        raise RuntimeError("the work stopped half-way")
    """
)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_first_signal_stops_second_exits_at_once(signum, code):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # Work that ignores the stop: the second signal ends it at once, with one line each.
    process = subprocess.Popen([sys.executable, "-c", _LOOP, "ignores"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signum)
    first = process.stderr.readline()
    assert "stopping" in first and signum.name in first
    started = time.monotonic()
    process.send_signal(signum)
    assert process.wait(timeout=5) == code and time.monotonic() - started < 2
    rest = process.stderr.read().strip().splitlines()
    assert len(rest) == 1 and "exiting now" in rest[0], rest

    # Work that obeys: it ends, and the run exits with the signal's code and one more line, no traceback.
    process = subprocess.Popen([sys.executable, "-c", _LOOP, "obeys"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signum)
    _, err = process.communicate(timeout=10)
    assert process.returncode == code
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "re-run" in lines[1] and "Traceback" not in err, err


_LONG_ENCODE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from prefect_modify_video.media.ffmpeg import write_with_ffmpeg
    from prefect_modify_video.stopping import stop_on_signals
    with stop_on_signals():
        print("ready", flush=True)
        # A long film's extraction: 10 minutes of video read in real time (-re), encoded.
        write_with_ffmpeg(["-re", "-f", "lavfi", "-i", "testsrc=size=320x180:rate=24:duration=600",
                           "-c:v", "libx264", "-preset", "ultrafast"], Path(sys.argv[1]))
    """
)


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with suppress(OSError):
            found |= {int(p) for p in (task / "children").read_text().split()}
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143)])
def test_the_first_signal_ends_a_running_ffmpeg_within_a_second(signum, code, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = tmp_path / "long.mp4"
    process = subprocess.Popen([sys.executable, "-c", _LONG_ENCODE, str(out)], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 10
    while not (ffmpegs := _children(process.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ffmpegs, "ffmpeg started"
    time.sleep(0.5)
    started = time.monotonic()
    process.send_signal(signum)  # to the Python process only, as a process manager sends it
    _, err = process.communicate(timeout=10)
    took = time.monotonic() - started
    assert process.returncode == code, err
    assert took < 2, f"ffmpeg ran on for {took:.1f} s after the stop"
    assert not any(_alive(pid) for pid in ffmpegs), "no ffmpeg left running"
    assert "Traceback" not in err and len(err.strip().splitlines()) == 2, err
    assert list(tmp_path.iterdir()) == [], "no output and no partial file"


def test_ffmpeg_failing_after_a_stop_is_the_stop_and_none_starts_after_it(tmp_path):
    threading.Timer(0.3, stopping.request_stop, args=("SIGINT",)).start()
    started = time.monotonic()
    with pytest.raises(StopRequested, match="ffmpeg ended"):
        write_with_ffmpeg(["-re", "-f", "lavfi", "-i", "testsrc=size=320x180:rate=24:duration=60",
                           "-c:v", "libx264", "-preset", "ultrafast"], tmp_path / "a.mp4")
    assert time.monotonic() - started < 2.5
    with pytest.raises(StopRequested, match="ffmpeg not started"):
        run_ffmpeg(["-version"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(60)
def test_ffmpeg_reading_a_large_input_slowly_gets_all_of_it():
    """Input longer than a pipe holds, read for longer than one wait slice, reaches ffmpeg whole (no hang)."""
    frames = bytes(range(256)) * (320 * 180 * 20 // 256)  # 20 grey frames, 1.15 MB
    out = run_ffmpeg(["-re", "-f", "rawvideo", "-pix_fmt", "gray", "-s", "320x180", "-r", "25", "-i", "-",
                      "-f", "rawvideo", "-"], input_bytes=frames)
    assert out == frames


def _cli_run(source, tmp_path, server) -> subprocess.Popen:
    env = {
        **os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "SEGMIND_API_KEY": "sk-stop-test",
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.Popen(
        [
            sys.executable, "-m", "prefect_modify_video.cli", "run", str(source), "--backend", "segmind-async",
            "--base-url", server.base_url, "--output", str(tmp_path / "out.mp4"), "--store", str(tmp_path / "store"),
            "--max-segment-seconds", "2.6", "--concurrency", "1", "--poll-interval-seconds", "0.1",
            "--retry-delay-seconds", "0.05", "--json",
        ],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_a_cli_run_waiting_on_a_queued_job_and_keeps_it(signum, code, three_segments, tmp_path, server):
    server.polls_to_complete = 10**6  # the first segment's job stays queued while the run waits on it
    process = _cli_run(three_segments, tmp_path, server)
    jobs = tmp_path / "store" / "jobs"
    deadline = time.monotonic() + 120
    while not (jobs.is_dir() and list(jobs.glob("*.json"))) and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.05)
    time.sleep(0.5)  # polling
    process.send_signal(signum)
    started = time.monotonic()
    _, stderr = process.communicate(timeout=30)
    assert time.monotonic() - started < 10, "the first signal stops the waiting within seconds"
    assert process.returncode == code, stderr[-3000:]
    after = stderr[stderr.index(f"prefect-modify-video: {signum.name}"):].strip().splitlines()
    assert len(after) <= 3 and "Traceback" not in stderr, stderr[-3000:]
    saved = list(jobs.glob("*.json"))
    assert len(saved) == 1, "the job waited on is kept in the store"
    assert server.stats("segmind").calls == 1, "no new job was sent after the signal"

    if signum is signal.SIGINT:
        server.polls_to_complete = 2
        rerun = _cli_run(three_segments, tmp_path, server)
        stdout, stderr = rerun.communicate(timeout=300)
        assert rerun.returncode == 0, stderr[-3000:]
        result = json.loads(stdout.strip().splitlines()[-1])
        assert probe_video(result["output"]).frames == probe_video(three_segments).frames
        stats = server.stats("segmind")
        assert (stats.calls, stats.billed) == (3, 3), "the saved job was followed: 0 new jobs for its segment"
