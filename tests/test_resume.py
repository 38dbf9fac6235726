"""Never pay twice: a re-run after a fault, a SIGKILL, a credit stop or alongside another run
pays only for what is not stored; a budget is never passed."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid

import pytest
from prefect.settings import PREFECT_API_URL

from prefect_modify_video.errors import BudgetExceededError
from prefect_modify_video.flows import BackendSpec, ModifyVideoParameters, SegmentsFailedError, modify_video
from prefect_modify_video.parameters import flow_arguments
from prefect_modify_video.media.probe import probe_video
from prefect_modify_video.media.sample import make_sample_video
from prefect_modify_video.testing import FakeModifyServer, Fault

pytestmark = pytest.mark.slow  # run by `make test-slow` (CI runs both)


@pytest.fixture(scope="module")
def six_segments(tmp_path_factory):
    """7.5 s at 24 fps: three segments of 2.5 s under a 2.6 s cap."""
    folder = tmp_path_factory.mktemp("resume")
    return make_sample_video(folder / "six.mp4", seconds=7.5, width=160, height=90, fps=24, scenes=3)


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("SEGMIND_API_KEY", "sk-resume-test")
    with FakeModifyServer(polls_to_complete=3) as fake:
        yield fake
        fake.wait_idle(30)


def params(source, tmp_path, server, backend="segmind", **overrides) -> ModifyVideoParameters:
    values = dict(
        source=str(source),
        prompt="pencil sketch",
        output=str(tmp_path / "out.mp4"),
        backend=BackendSpec(name=backend, base_url=server.base_url, poll_interval_seconds=0.1),
        max_segment_seconds=2.6,
        store_dir=str(tmp_path / "store"),
        retry_delay_seconds=0.05,
    )
    values.update(overrides)
    return ModifyVideoParameters(**values)


def test_a_segment_failing_for_good_costs_one_more_call_on_the_next_run(six_segments, tmp_path, server):
    # Segment 2's call fails on every try of this run (1 + 3 retries).
    server.script("segmind", [None, None] + [Fault.SERVER_500] * 4)
    with pytest.raises(SegmentsFailedError, match="1 of 3 segments failed"):
        modify_video(**flow_arguments(params(six_segments, tmp_path, server, concurrency=1)))
    assert server.stats("segmind").billed == 2
    result = modify_video(**flow_arguments(params(six_segments, tmp_path, server, concurrency=1)))
    assert result.billed_calls == 1 and result.reused_segments == 2
    assert server.stats("segmind").billed == 3
    assert probe_video(result.output).frames == probe_video(six_segments).frames


def test_budget_refuses_to_start_and_never_passes(six_segments, tmp_path, server):
    with pytest.raises(BudgetExceededError, match="max_cost_usd"):
        modify_video(**flow_arguments(params(six_segments, tmp_path, server, max_cost_usd=1.0)))  # 3 x $0.60
    assert server.stats("segmind").calls == 0
    result = modify_video(**flow_arguments(params(six_segments, tmp_path, server, max_cost_usd=1.80)))
    assert result.billed_calls == 3 and result.cost_usd == pytest.approx(1.80)


def _cli_run(source, tmp_path, server, backend, *flags) -> subprocess.Popen:
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "SEGMIND_API_KEY": "sk-resume-test"}
    return subprocess.Popen(
        [
            sys.executable, "-m", "prefect_modify_video.cli", "run", str(source), "--backend", backend,
            "--base-url", server.base_url, "--output", str(tmp_path / "out.mp4"), "--store", str(tmp_path / "store"),
            "--max-segment-seconds", "2.6", "--concurrency", "1", "--poll-interval-seconds", "0.1", "--json", *flags,
        ],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.parametrize("backend", ["segmind-async", "segmind"])
def test_sigkill_at_random_points_then_rerun_pays_each_segment_once(backend, six_segments, tmp_path, server):
    """Queue APIs save the job id before waiting, so a killed run loses nothing; the blocking
    API can lose the one call in flight (its answer went to the dead process)."""
    rng = random.Random(7)
    server.polls_to_complete = 4
    segments = 3
    for round_number, kill_after_calls in enumerate(sorted(rng.sample(range(1, segments + 1), 2))):
        process = _cli_run(six_segments, tmp_path, server, backend)
        deadline = time.monotonic() + 120
        while server.stats("segmind").calls < kill_after_calls and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL, "the run ended before it could be killed"
    server.wait_idle(30)
    final = _cli_run(six_segments, tmp_path, server, backend)
    stdout, stderr = final.communicate(timeout=300)
    resent = final.returncode != 0
    if resent:
        # A create killed in flight (a blocking call, or a queued one before its id was saved) may have been
        # billed: never sent blind, until the user says so.
        assert "--resend-unknown" in stderr, stderr[-3000:]
        final = _cli_run(six_segments, tmp_path, server, backend, "--resend-unknown")
        stdout, stderr = final.communicate(timeout=300)
    assert final.returncode == 0, stderr[-3000:]
    result = json.loads(stdout.strip().splitlines()[-1])
    assert probe_video(result["output"]).frames == probe_video(six_segments).frames
    server.wait_idle(30)
    billed = server.stats("segmind").billed
    lost_allowed = 2 if backend == "segmind" or resent else 0  # at most one in flight per killed run
    assert segments <= billed <= segments + lost_allowed


def test_two_runs_at_once_pay_for_each_segment_once(six_segments, tmp_path, server):
    server.script("segmind", [Fault.latency(0.5)] * 6)
    first = _cli_run(six_segments, tmp_path, server, "segmind")
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "SEGMIND_API_KEY": "sk-resume-test"}
    second = subprocess.Popen(
        [
            sys.executable, "-m", "prefect_modify_video.cli", "run", str(six_segments), "--backend", "segmind",
            "--base-url", server.base_url, "--output", str(second_dir / "out.mp4"), "--store", str(tmp_path / "store"),
            "--max-segment-seconds", "2.6", "--concurrency", "1", "--poll-interval-seconds", "0.1", "--json",
        ],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    for process in (first, second):
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
    assert server.stats("segmind").billed == 3


def test_a_store_in_a_storage_block_outlives_the_machine(six_segments, tmp_path, server, monkeypatch, s3_server, s3_bucket_block):
    """Results kept in a RemoteFileSystem block on S3 (moto's server) are found by a run on a "new
    machine" (an empty PREFECT_HOME, so no local mirror); no claim is left behind in the bucket."""
    block, bucket = s3_bucket_block
    s3 = s3_server[1]
    store = f"block://remote-file-system/{block}/modify-video"
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "first-machine"))
    first = modify_video(**flow_arguments(params(six_segments, tmp_path, server, store_dir=store, output=str(tmp_path / "a.mp4"))))
    assert first.billed_calls == 3

    def keys(prefix):
        return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))

    stored = [key.rsplit("/", 1)[1] for key in keys("modify-video/clips/")]
    assert len(stored) == 6 and {name.rsplit(".", 1)[1] for name in stored} == {"mp4", "json"}
    assert not keys("modify-video/jobs/"), "finished jobs are forgotten in the block too"
    assert not keys("modify-video/claims/"), "every claim is released"

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "second-machine"))
    second = modify_video(**flow_arguments(params(six_segments, tmp_path, server, store_dir=store, output=str(tmp_path / "b.mp4"))))
    assert (second.billed_calls, second.reused_segments) == (0, 3)
    assert server.stats("segmind").billed == 3
    assert probe_video(second.output).frames == probe_video(six_segments).frames
