"""The whole flow against the fake server for every service, and each fault's outcome.

Each test asserts what a user would check: the output (frames, rate, size, audio), the error
class and message when a segment fails for good, and how many calls were billed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import audio_md5, read_frames
from prefect_modify_video.flows import BackendSpec, ModifyVideoParameters, SegmentsFailedError, modify_video
from prefect_modify_video.parameters import flow_arguments
from prefect_modify_video.media.probe import probe_video
from prefect_modify_video.media.sample import make_sample_video
from prefect_modify_video.media.plan import plan_video
from prefect_modify_video.testing import FakeModifyServer, Fault

SERVICES = {
    # backend name -> (fake server provider, env var holding the key)
    "segmind": ("segmind", "SEGMIND_API_KEY"),
    "segmind-async": ("segmind", "SEGMIND_API_KEY"),
    "luma": ("luma", "LUMAAI_API_KEY"),
    "fal": ("fal", "FAL_KEY"),
    "replicate": ("replicate", "REPLICATE_API_TOKEN"),
}
FAKE_KEY = "sk-test-0123456789abcdef"


@pytest.fixture(scope="module")
def server():
    with FakeModifyServer(polls_to_complete=1, rate_limit_reset_seconds=0.5) as fake:
        yield fake


@pytest.fixture(autouse=True)
def fresh_server(server, monkeypatch):
    server.reset()
    server.output_size = None
    for _, env_var in SERVICES.values():
        monkeypatch.setenv(env_var, FAKE_KEY)
    yield
    server.wait_idle(30)


@pytest.fixture(scope="module")
def short_video(tmp_path_factory):
    """4 s, 320x180, 30 fps with a tone: two segments under a 2.5 s cap."""
    folder = tmp_path_factory.mktemp("short")
    return make_sample_video(folder / "short.mp4", seconds=4, width=320, height=180, fps=30, scenes=2)


def run(source, tmp_path, server, backend="segmind", **overrides):
    spec = dict(name=backend, base_url=server.base_url, poll_interval_seconds=0.05)
    if backend == "luma":
        spec["upload_url"] = server.base_url
    spec.update(overrides.pop("spec", {}))
    values = dict(
        source=str(source),
        prompt="watercolour painting",
        mode="flex_1",
        output=str(tmp_path / "out.mp4"),
        backend=BackendSpec(**spec),
        max_segment_seconds=2.5,
        store_dir=str(tmp_path / "store"),
        retry_delay_seconds=0.05,
    )
    values.update(overrides)
    return modify_video(**flow_arguments(ModifyVideoParameters(**values)))


def assert_same_shape_and_sound(output, source):
    out, src = probe_video(output), probe_video(source)
    assert out.frames == src.frames
    assert out.frame_rate == src.frame_rate
    assert (out.width, out.height) == (src.width, src.height)
    assert abs(out.duration_s - src.duration_s) <= 1 / src.fps
    assert audio_md5(output) == audio_md5(source)


@pytest.mark.parametrize("backend", list(SERVICES))
def test_every_service_end_to_end(backend, short_video, tmp_path, server):
    result = run(short_video, tmp_path, server, backend)
    provider = SERVICES[backend][0]
    assert result.segments == 2 and result.billed_calls == 2
    assert server.stats(provider).billed == 2
    assert_same_shape_and_sound(result.output, short_video)
    change = abs(read_frames(result.output) - read_frames(short_video)).mean()
    assert change > 10, "the service's restyle must show in the output"
    booked = tmp_path / "store" / "billing"
    assert booked.is_dir() and not list(booked.iterdir()), "the run's billing records, added up, are removed"


@pytest.mark.parametrize("fps", [24, 25, 60])
def test_conform_at_other_frame_rates_and_sizes(fps, tmp_path, server):
    source = make_sample_video(tmp_path / f"src{fps}.mp4", seconds=3, width=320, height=180, fps=fps, scenes=2)
    server.output_size = (256, 144)  # the service answers at another size, and at 24 fps
    result = run(source, tmp_path, server, "fal")
    assert_same_shape_and_sound(result.output, source)


@pytest.mark.parametrize(
    "fault, calls",
    [
        (Fault.SERVER_500, 3),
        pytest.param(Fault.SERVER_502, 3, marks=pytest.mark.slow),  # the 500 path: with the slow tests
        pytest.param(Fault.SERVER_504, 3, marks=pytest.mark.slow),
        (Fault.rate_limited(0.5), 3),
        (Fault.HTML_200, 3),
        pytest.param(Fault.latency(0.5), 2, marks=pytest.mark.slow),
    ],
    ids=["500", "502", "504", "429", "html-200", "latency"],
)
def test_passing_faults_are_retried_and_the_video_completes(fault, calls, short_video, tmp_path, server):
    server.script("segmind", [fault])
    result = run(short_video, tmp_path, server, "segmind")
    assert_same_shape_and_sound(result.output, short_video)
    assert server.stats("segmind").billed == 2
    assert server.stats("segmind").calls == calls


def test_a_clip_of_the_wrong_length_is_refused_and_sent_again(short_video, tmp_path, server):
    server.script("fal", [Fault.wrong_length(0.5)])
    result = run(short_video, tmp_path, server, "fal")
    assert_same_shape_and_sound(result.output, short_video)
    # The short clip was billed by the service but never used; the retry paid once more.
    assert server.stats("fal").billed == 3


def test_a_failed_job_is_retried(short_video, tmp_path, server):
    server.script("replicate", [Fault.JOB_FAILED])
    result = run(short_video, tmp_path, server, "replicate")
    assert result.billed_calls == 2 and server.stats("replicate").billed == 2


def test_moderation_fails_the_segment_with_the_service_reason(short_video, tmp_path, server):
    server.script("luma", [Fault.MODERATION])
    with pytest.raises(SegmentsFailedError, match="ContentModerationError.*moderation") as caught:
        run(short_video, tmp_path, server, "luma")
    assert "1 of 2 segments failed" in str(caught.value)
    assert server.stats("luma").billed == 1
    assert not (tmp_path / "out.mp4").exists()
    # The next run sends only the refused segment.
    result = run(short_video, tmp_path, server, "luma")
    assert result.billed_calls == 1 and result.reused_segments == 1


@pytest.mark.parametrize(
    "fault, spec",
    [(Fault.dropped_connection(), {}), (Fault.timeout(3), {"timeout_seconds": 1})],
    ids=["dropped-connection", "timeout"],
)
def test_an_unanswered_create_is_not_sent_again_in_the_run(fault, spec, short_video, tmp_path, server):
    server.script("segmind", [fault])
    with pytest.raises(SegmentsFailedError, match="SubmitOutcomeUnknownError") as caught:
        run(short_video, tmp_path, server, "segmind", spec=spec)
    assert "re-run" in str(caught.value)
    assert server.stats("segmind").calls == 2  # no automatic resend of the unanswered call


@pytest.mark.slow
def test_no_credits_stops_the_run_and_a_rerun_resumes(tmp_path, server):
    source = make_sample_video(tmp_path / "six.mp4", seconds=6, width=320, height=180, fps=30, scenes=3)
    server.set_credits("segmind", 0.6 * 1)  # enough for one call of $0.60
    with pytest.raises(SegmentsFailedError, match="credits") as caught:
        run(source, tmp_path, server, "segmind", concurrency=1)
    assert "InsufficientCreditsError" in str(caught.value)
    assert server.stats("segmind").billed == 1
    server.restore_credits("segmind")
    result = run(source, tmp_path, server, "segmind", concurrency=1)
    assert result.billed_calls == 2 and result.reused_segments == 1
    assert server.stats("segmind").billed == 3  # three segments, each paid once
    assert_same_shape_and_sound(result.output, source)


def test_a_wrong_key_is_a_clear_fatal_error(short_video, tmp_path, server, monkeypatch):
    server.api_key = "the-right-key"
    try:
        with pytest.raises(SegmentsFailedError, match="AuthenticationError.*SEGMIND_API_KEY"):
            run(short_video, tmp_path, server, "segmind")
    finally:
        server.api_key = None
    assert server.stats("segmind").billed == 0


def test_luma_without_an_upload_store_is_refused_before_any_work(short_video, tmp_path, server):
    from prefect_modify_video.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="upload_url"):
        run(short_video, tmp_path, server, "luma", spec={"upload_url": None})
    assert server.stats("luma").calls == 0


@pytest.mark.slow
def test_anchoring_and_overlaps_hide_a_drifting_service_at_in_shot_seams(tmp_path, server):
    # One 6 s shot under a 2.5 s cap: three segments, two seams inside the shot.
    source = make_sample_video(tmp_path / "shot.mp4", seconds=6, width=320, height=180, fps=30, scenes=1)
    server.drift, server.drift_seed = 1.0, 3
    try:
        raw = run(
            source, tmp_path, server, "fal", output=str(tmp_path / "raw.mp4"), anchor_colours=False, overlap_frames=0
        )
        billed_raw = server.stats("fal").billed
        hidden = run(source, tmp_path, server, "fal", output=str(tmp_path / "hidden.mp4"))
    finally:
        server.drift = 0.0
    assert raw.segments == hidden.segments == 3
    # Segment 0 (no overlap) is the same clip, reused; the two with an overlap are other clips, paid.
    assert raw.billed_calls == 3
    assert (hidden.billed_calls, hidden.reused_segments) == (2, 1) and server.stats("fal").billed - billed_raw == 2
    assert raw.worst_seam_ratio > 1.5 and len(raw.seams_flagged) == 2
    assert hidden.worst_seam_ratio <= 1.5 and hidden.seams_flagged == []
    assert Path(hidden.contact_sheet).is_file()
    assert_same_shape_and_sound(hidden.output, source)


@pytest.mark.slow
@pytest.mark.parametrize("sequential", [False, True])
def test_first_frames_sent_with_each_segment(tmp_path, server, first_frame_image, sequential):
    # Two 3 s shots, each split in two under 2.5 s: seams in a shot, on the cut, in a shot.
    source = make_sample_video(tmp_path / "two.mp4", seconds=6, width=320, height=180, fps=30, scenes=2)
    result = run(source, tmp_path, server, "fal", first_frame=str(first_frame_image), sequential=sequential)
    plan = plan_video(probe_video(source), 2.5, 12)
    assert [(s.cut_before, s.overlap_frames) for s in plan.segments[1:]] == [(False, 12), (True, 0), (False, 12)]
    in_shot = 2
    assert result.billed_calls == len(plan.segments) == 4
    with_frame = [call for call in server.received("fal") if call.first_frame_bytes]
    # The run's image is the video's first frame: only segment 0 gets it. The sequential mode
    # adds the previous answer's frame to every segment that starts inside a shot.
    assert len(with_frame) == 1 + (in_shot if sequential else 0)
    assert_same_shape_and_sound(result.output, source)


def test_sequential_segments_after_a_failed_one_say_so(tmp_path, server):
    """In the sequential mode a segment's first frame is the previous answer's: after a segment that failed for good,
    the rest of its shot is not sent, and each says why (not Prefect's "Run is in PENDING state")."""
    # One 5 s shot under a 2.5 s cap: three segments, each waiting for the one before.
    source = make_sample_video(tmp_path / "one.mp4", seconds=5, width=320, height=180, fps=30, scenes=1)
    server.script("fal", [Fault.MODERATION])
    with pytest.raises(SegmentsFailedError) as caught:
        run(source, tmp_path, server, "fal", sequential=True)
    lines = str(caught.value).splitlines()[1:]
    assert len(lines) == 3 and "3 of 3 segments failed" in str(caught.value)
    assert lines[0].startswith("segment 00000 ") and "modify failed: ContentModerationError" in lines[0], lines
    for index, line in enumerate(lines[1:], 1):
        assert line.startswith(f"segment {index:05d} ") and "PreviousSegmentFailedError: not sent" in line, lines
        assert "PENDING" not in line and "UnfinishedRun" not in line
    assert server.stats("fal").calls == 1 and server.stats("fal").billed == 0


@pytest.mark.slow
def test_luma_reads_segments_from_a_storage_block_by_presigned_url(
    tmp_path, server, sample_video, s3_server, s3_bucket_block
):
    _, s3 = s3_server
    name, bucket = s3_bucket_block
    folder = f"block://remote-file-system/{name}/luma-uploads/"
    result = run(sample_video, tmp_path, server, "luma", spec={"upload_url": None, "upload_block": folder})
    calls = server.received("luma")
    assert result.billed_calls == len(calls) == result.segments
    # Luma fetched every segment by URL, from the bucket (the fake server GETs the presigned URLs).
    assert {call.params["video_source"] for call in calls} == {"url"}
    uploaded = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="luma-uploads/")["Contents"]]
    assert len(uploaded) == result.segments
    assert_same_shape_and_sound(result.output, sample_video)


@pytest.mark.slow  # a whole run (or two) against the server: over ~20 s on a loaded machine
def test_an_output_announced_as_a_new_video_starts_no_paid_work(short_video, tmp_path, server):
    """A trigger on a folder an output lands in would restyle it without end: outputs carry a mark the flow checks."""
    import uuid

    from prefect.filesystems import LocalFileSystem

    from prefect_modify_video.errors import InvalidInputError
    from prefect_modify_video.media.join import OUTPUT_MARK

    incoming = tmp_path / "incoming"
    made = run(short_video, tmp_path, server, "local", output=str(incoming / "film.modified.mp4"))
    assert OUTPUT_MARK in probe_video(made.output).comment
    assert OUTPUT_MARK not in probe_video(short_video).comment
    # Renamed, as a storage notification would announce it: the mark, not the name, stops it.
    Path(made.output).rename(incoming / "new.mp4")
    block = f"incoming-{uuid.uuid4().hex[:8]}"
    LocalFileSystem(basepath=str(incoming)).save(block)
    with pytest.raises(InvalidInputError, match="new.mp4: is an output of prefect-modify-video"):
        run(f"block://local-file-system/{block}/new.mp4", tmp_path, server, "fal", output=str(tmp_path / "again.mp4"))
    assert server.stats("fal").calls == 0 and server.stats("fal").billed == 0
    assert not (tmp_path / "again.mp4").exists()


def _events_of(flow_run_id, expected: int, timeout: float = 30.0) -> list:
    """The plugin's events about one flow run, read back from the Prefect server (they arrive asynchronously)."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

    event_filter = EventFilter(
        event=EventNameFilter(prefix=["modify-video."]), related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"])
    )
    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            events = client.read_events(event_filter, limit=50).events
        if len(events) >= expected or time.monotonic() > deadline:
            return sorted(events, key=lambda e: (e.event, e.payload.get("segment", -1)))
        time.sleep(0.5)


@pytest.mark.slow
def test_each_segment_and_each_run_emits_an_event_with_cost_and_output(short_video, tmp_path, server):
    output = str(tmp_path / "out.mp4")
    state = modify_video(**flow_arguments(ModifyVideoParameters(
        source=str(short_video), prompt="watercolour painting", output=output, max_segment_seconds=2.5,
        store_dir=str(tmp_path / "store"), backend=BackendSpec(name="fal", base_url=server.base_url,
                                                               poll_interval_seconds=0.05),
    )), return_state=True)
    result = state.result()
    events = _events_of(state.state_details.flow_run_id, expected=3)
    assert [e.event for e in events] == ["modify-video.run.completed", "modify-video.segment.paid",
                                         "modify-video.segment.paid"]
    ended, *segments = events
    assert server.stats("fal").billed == result.billed_calls == 2 == ended.payload["billed_calls"]
    assert ended.payload["output"] == output and ended.payload["cost_usd"] == pytest.approx(result.cost_usd)
    assert result.cost_usd > 0 and sum(e.payload["cost_usd"] for e in segments) == pytest.approx(result.cost_usd)
    assert [e.payload["segment"] for e in segments] == [0, 1] and segments[0].resource.id == f"modify-video.output.{output}"

    again = modify_video(**flow_arguments(ModifyVideoParameters(
        source=str(short_video), prompt="watercolour painting", output=str(tmp_path / "again.mp4"),
        max_segment_seconds=2.5, store_dir=str(tmp_path / "store"),
        backend=BackendSpec(name="fal", base_url=server.base_url, poll_interval_seconds=0.05),
    )), return_state=True)
    reused = _events_of(again.state_details.flow_run_id, expected=3)
    assert [e.event for e in reused] == ["modify-video.run.completed", "modify-video.segment.reused",
                                         "modify-video.segment.reused"]
    assert reused[0].payload["cost_usd"] == 0 and server.stats("fal").billed == 2

    missing = modify_video(**flow_arguments(ModifyVideoParameters(source=str(tmp_path / "missing.mp4"), output=str(tmp_path / "x.mp4"))),
                           return_state=True)
    assert missing.is_failed()
    failed = _events_of(missing.state_details.flow_run_id, expected=1)
    assert [e.event for e in failed] == ["modify-video.run.failed"]
    assert "missing.mp4" in failed[0].payload["error"] and failed[0].payload["cost_usd"] == 0
