"""The newer editing services (Runway Aleph 2, Luma Ray 3.2 edit, Decart Lucy on fal) end to end against the fake.

Each test asserts what a user would check: the output keeps the source's frames, rate, size and audio whatever
rate the service answers at; the guide keyframes each segment carried; what the service billed (counted at the
fake) equals what the run reports; each service's own failures end as its documented error.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from conftest import audio_md5, read_frames
from prefect_modify_video.flows import BackendSpec, ModifyVideoParameters, SegmentsFailedError, modify_video
from prefect_modify_video.parameters import flow_arguments
from prefect_modify_video.media.plan import plan_video
from prefect_modify_video.media.probe import probe_video
from prefect_modify_video.media.sample import make_sample_video
from prefect_modify_video.testing import FakeModifyServer, Fault

SERVICES = {
    # backend name -> (fake server service, env var holding the key)
    "runway": ("runway", "RUNWAYML_API_SECRET"),
    "luma-agents": ("luma-agents", "LUMA_AGENTS_API_KEY"),
    "lucy": ("fal", "FAL_KEY"),
}
FAKE_KEY = "sk-test-0123456789abcdef"


@pytest.fixture(scope="module")
def server():
    with FakeModifyServer(polls_to_complete=1, rate_limit_reset_seconds=0.5) as fake:
        yield fake


@pytest.fixture(autouse=True)
def fresh_server(server, monkeypatch):
    server.reset()
    server.dialects["runway"].throttled_polls = 1
    for _, env_var in SERVICES.values():
        monkeypatch.setenv(env_var, FAKE_KEY)
    yield
    server.wait_idle(30)


@pytest.fixture(scope="module")
def one_shot(tmp_path_factory):
    """4 s, 320x180, 30 fps, one shot, a tone: two segments under a 2.5 s cap, the second with a 12-frame overlap."""
    folder = tmp_path_factory.mktemp("one-shot")
    return make_sample_video(folder / "shot.mp4", seconds=4, width=320, height=180, fps=30, scenes=1)


def run(source, tmp_path, server, backend, **overrides):
    spec = dict(name=backend, base_url=server.base_url, poll_interval_seconds=0.05)
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
    assert audio_md5(output) == audio_md5(source)


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "backend", [pytest.param(name, marks=() if name == "runway" else pytest.mark.slow) for name in SERVICES]
)
def test_each_new_service_end_to_end(backend, one_shot, tmp_path, server):
    result = run(one_shot, tmp_path, server, backend)
    service = SERVICES[backend][0]
    assert result.segments == 2 and result.billed_calls == 2 == server.stats(service).billed
    assert_same_shape_and_sound(result.output, one_shot)
    assert abs(read_frames(result.output) - read_frames(one_shot)).mean() > 10, "the restyle must show"
    calls = server.received(service)
    if backend == "runway":
        # Every task waited THROTTLED once, then ran: two polls each; the clip came through Runway's uploads.
        assert server.stats("runway").polls == 4
        assert {c.params["video_source"] for c in calls} == {"runway-upload"}
    if backend == "luma-agents":
        assert {c.params["mode"] for c in calls} == {"flex_1"} and {c.params["video_source"] for c in calls} == {"base64"}
    if backend == "lucy":
        # Lucy answers at 22 fps; the output is still the source's 30 fps, frame for frame.
        assert [c.route for c in calls] == ["fal.lucy"] * 2
        assert {c.params["enhance_prompt"] for c in calls} == {False}


@pytest.mark.parametrize(
    "backend, unit, sequential",
    [
        pytest.param("runway", 1 / 30, True, id="runway-sequential"),
        pytest.param("runway", 1 / 30, False, id="runway-parallel", marks=pytest.mark.slow),
        pytest.param("luma-agents", 1, True, id="luma-agents-sequential", marks=pytest.mark.slow),
        pytest.param("luma-agents", 1, False, id="luma-agents-parallel", marks=pytest.mark.slow),
    ],
)
def test_the_style_image_goes_to_every_segment_as_a_keyframe(
    backend, unit, sequential, one_shot, tmp_path, server, first_frame_image
):
    result = run(one_shot, tmp_path, server, backend, first_frame=str(first_frame_image), sequential=sequential)
    plan = plan_video(probe_video(one_shot), 2.5, 12)
    assert [s.overlap_frames for s in plan.segments] == [0, 12]
    style = sha(first_frame_image)
    calls = server.received(backend)
    assert result.billed_calls == len(calls) == 2
    # Segment 0: the style image at its first frame. Segment 1: the style image at its own first frame, after
    # the 12 overlap frames; in the sequential mode also the previous answer's frame at the clip's start.
    firsts = [c for c in calls if c.keyframes == ((style, 0.0),)]
    assert len(firsts) == 1
    second = next(c for c in calls if c is not firsts[0])
    assert any(image == style and abs(where - 12 * unit) < 1e-3 for image, where in second.keyframes)
    if sequential:
        assert len(second.keyframes) == 2
        seam = [image for image, where in second.keyframes if where == 0.0]
        assert seam and seam[0] != style
    else:
        assert len(second.keyframes) == 1
    assert_same_shape_and_sound(result.output, one_shot)


def test_runway_bills_a_moderated_task_and_the_run_reports_it(one_shot, tmp_path, server):
    server.script("runway", [Fault.MODERATION])
    with pytest.raises(SegmentsFailedError, match="ContentModerationError.*SAFETY") as caught:
        run(one_shot, tmp_path, server, "runway", concurrency=1)
    # Runway bills a moderated task like a finished one: the run books both calls.
    assert server.stats("runway").billed == 2
    assert "1 of 2 segments failed (2 paid calls" in str(caught.value)
    result = run(one_shot, tmp_path, server, "runway")
    assert result.billed_calls == 1 and result.reused_segments == 1 and server.stats("runway").billed == 3


@pytest.mark.slow
def test_runway_s_daily_cap_stops_the_run_without_paying(one_shot, tmp_path, server):
    server.script("runway", [Fault.rate_limited(0.5)] * 2)
    with pytest.raises(SegmentsFailedError, match="InsufficientCreditsError.*daily") as caught:
        run(one_shot, tmp_path, server, "runway", concurrency=1)
    assert "(0 paid calls" in str(caught.value)
    assert server.stats("runway").billed == 0 and server.stats("runway").calls <= 2


@pytest.mark.slow
@pytest.mark.parametrize(
    "fault, calls, billed", [(Fault.rate_limited(0.5), 3, 2), (Fault.JOB_FAILED, 3, 2), (Fault.SERVER_502, 3, 2)],
    ids=["429-retry-after", "generation-failed", "502"],
)
def test_luma_agents_passing_failures_are_retried(fault, calls, billed, one_shot, tmp_path, server):
    server.script("luma-agents", [fault])
    result = run(one_shot, tmp_path, server, "luma-agents")
    assert server.stats("luma-agents").calls == calls and server.stats("luma-agents").billed == billed
    assert result.billed_calls == billed
    assert_same_shape_and_sound(result.output, one_shot)


@pytest.mark.slow
def test_luma_agents_moderation_is_fatal_and_not_billed(one_shot, tmp_path, server):
    server.script("luma-agents", [Fault.MODERATION])
    with pytest.raises(SegmentsFailedError, match="ContentModerationError") as caught:
        run(one_shot, tmp_path, server, "luma-agents", concurrency=1)
    assert server.stats("luma-agents").billed == 1 and "(1 paid calls" in str(caught.value)


def test_lucy_refuses_a_first_frame_before_any_work(one_shot, tmp_path, server, first_frame_image):
    from prefect_modify_video.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="lucy takes no image"):
        run(one_shot, tmp_path, server, "lucy", first_frame=str(first_frame_image))
    assert server.stats("fal").calls == 0


def test_plan_fits_segments_to_billing_blocks_when_cheaper(tmp_path):
    # 20.5 s in one shot at 30 fps: under Luma's 18 s cap, two ~10.5 s segments (with their 0.4 s overlap) bill as
    # 15 s each (6 blocks); segments of at most 5 s bill 5 blocks.
    source = make_sample_video(tmp_path / "long.mp4", seconds=20.5, width=64, height=36, fps=30, scenes=1)
    out = subprocess.run(
        [sys.executable, "-m", "prefect_modify_video.cli", "plan", str(source), "--backend", "luma-agents", "--json"],
        capture_output=True, text=True, check=True,
    )
    report = json.loads(out.stdout)
    billed = [s["billed_s"] for s in report["segments"]]
    assert set(billed) == {5.0} and report["billed_seconds"] == 5.0 * len(billed)
    assert report["estimated_cost_usd"] == pytest.approx(0.72 * len(billed))
    assert report["estimated_cost_usd"] < 6 * 0.72
