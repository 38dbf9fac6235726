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
    server.dialects["runway"].failure_code = "INTERNAL.BAD_OUTPUT.CODE01"
    server.dialects["luma-agents"].failure_code = "generation_failed"
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


@pytest.fixture(scope="module")
def sixty_fps(tmp_path_factory):
    """3 s, 320x180, 60 fps, one shot, a tone: over Aleph 2's 30 fps input cap."""
    folder = tmp_path_factory.mktemp("sixty")
    return make_sample_video(folder / "sixty.mp4", seconds=3, width=320, height=180, fps=60, scenes=1)


@pytest.mark.slow  # two flow runs; the clip's frames at the divided rate are checked by a fast test
def test_a_source_over_runway_s_frame_rate_cap_is_sent_divided_and_comes_back_whole(sixty_fps, tmp_path, server):
    # Aleph 2 takes at most 30 fps (the fake fails a faster clip's task as ASSET.INVALID, as Runway does): the 60 fps
    # source goes at 30 fps, every second source frame; the 24 fps answers come back as all 180 frames at 60 fps.
    # The first answer covers only half its clip, so the rest of that clip is sent again (30 fps too).
    server.script("runway", [Fault.wrong_length(0.5)])
    result = run(sixty_fps, tmp_path, server, "runway")
    calls = server.received("runway")
    assert {c.params["input_fps"] for c in calls} == {30.0}
    # The segments (87 and 105 frames, 44 and 53 at 30 fps) and the remainder go padded to Aleph 2's 2 s minimum.
    assert {c.params["input_seconds"] for c in calls} == {2.0}
    assert result.segments == 2 and result.billed_calls == len(calls) == 3 == server.stats("runway").billed
    assert_same_shape_and_sound(result.output, sixty_fps)
    assert abs(read_frames(result.output) - read_frames(sixty_fps)).mean() > 10, "the restyle must show"
    # A re-run finds both answers complete in the store (counted in sent frames, not source frames): nothing paid.
    again = run(sixty_fps, tmp_path, server, "runway", output=str(tmp_path / "again.mp4"))
    assert again.billed_calls == 0 and again.reused_segments == 2 and server.stats("runway").billed == 3
    assert_same_shape_and_sound(again.output, sixty_fps)


def test_runway_s_fake_refuses_a_clip_over_30_fps_unbilled(sixty_fps, server, tmp_path):
    # What the fix guards against: the same 60 fps clip sent as it is fails its task as bad input (not retried).
    import asyncio

    from prefect_modify_video.errors import InvalidRequestError
    from prefect_modify_video.providers.base import ModifyRequest, wait_for_job
    from prefect_modify_video.providers.runway import RunwayBackend

    async def send():
        async with RunwayBackend(FAKE_KEY, server.base_url, poll_interval_seconds=0.05) as backend:
            job = await backend.submit(ModifyRequest(clip=sixty_fps, prompt="ink", mode="flex_1"), tmp_path)
            await wait_for_job(backend, job)

    with pytest.raises(InvalidRequestError, match="ASSET.INVALID.*60 fps"):
        asyncio.run(send())
    assert server.stats("runway").calls == 1 and server.stats("runway").billed == 0


def test_a_clip_sent_at_a_divided_rate_holds_every_second_source_frame(sixty_fps, tmp_path):
    from prefect_modify_video.media.extract import extract_segment
    from prefect_modify_video.media.plan import sent_frame_step

    info = probe_video(sixty_fps)
    step = sent_frame_step(info.frame_rate, 30)
    segment = plan_video(info, 2.5, 12).as_sent(step).segments[1]
    assert step == 2 and segment.overlap_frames == 12 and segment.clip_index(segment.first_frame) == 6
    clip = probe_video(extract_segment(info, segment, tmp_path / "clip.mp4"))
    assert (clip.frames, clip.frame_rate) == (segment.clip_frames, "30/1") == (-(-segment.sent_frames // 2), "30/1")
    sent = read_frames(tmp_path / "clip.mp4").astype(float)
    source = read_frames(sixty_fps).astype(float)
    wanted = source[segment.sent_first_frame:segment.end_frame:2]
    others = source[segment.sent_first_frame + 1:segment.end_frame:2][: len(sent)]
    assert len(sent) == len(wanted) and abs(sent - wanted).mean() < 1.0 < abs(sent[: len(others)] - others).mean()


@pytest.mark.parametrize(
    "model", ["ray-3.2", pytest.param("luma/agent/ray/v3.2/video-to-video", marks=pytest.mark.slow)]
)
def test_ray_3_2_through_fal_is_refused_with_a_pointer_to_luma_agents(model, one_shot, server):
    # fal's Ray 3.2 edit endpoint takes only 5 s / 10 s outputs and leaves other source lengths undocumented: no
    # request is sent, and one line says which backend runs the model.
    out = subprocess.run(
        [sys.executable, "-m", "prefect_modify_video.cli", "plan", str(one_shot), "--backend", "fal", "--model", model],
        capture_output=True, text=True,
    )
    assert out.returncode != 0 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Ray 3.2" in lines[0] and "--backend luma-agents" in lines[0]
    assert server.stats("fal").calls == 0


def test_a_clip_under_runway_s_2_s_minimum_goes_padded_and_comes_back_at_its_own_length(tmp_path, server):
    # 1.5 s, one segment: Aleph 2 takes 2-30 s (the fake fails a shorter clip's task as ASSET.INVALID), so the clip
    # goes with its last frame repeated to 2 s (billed as 2 s in any case), and the answer's padding is dropped.
    source = make_sample_video(tmp_path / "short.mp4", seconds=1.5, width=320, height=180, fps=30, scenes=1)
    result = run(source, tmp_path, server, "runway")
    calls = server.received("runway")
    assert [c.params["input_seconds"] for c in calls] == [2.0]
    assert result.billed_calls == 1 == server.stats("runway").billed and result.cost_usd == pytest.approx(0.56)
    assert_same_shape_and_sound(result.output, source)
    assert abs(read_frames(result.output) - read_frames(source)).mean() > 10, "the restyle must show"


def paid_calls_reported(error: pytest.ExceptionInfo) -> int:
    """The paid calls a failed run reports in its error ("... (N paid calls, $...)")."""
    import re

    return int(re.search(r"\((\d+) paid calls", str(error.value)).group(1))


@pytest.mark.slow
@pytest.mark.parametrize(
    "service, code",
    [
        # Runway: INTERNAL and INTERNAL.BAD_OUTPUT.* failures are worth retrying.
        ("runway", "INTERNAL.BAD_OUTPUT.CODE01"),
        ("runway", "INTERNAL"),
        # Luma says to retry output_not_found (like generation_failed); rate_limited passes with time.
        ("luma-agents", "output_not_found"),
        ("luma-agents", "rate_limited"),
    ],
)
def test_failures_that_pass_are_sent_again_and_only_finished_jobs_billed(service, code, one_shot, tmp_path, server):
    server.dialects[service].failure_code = code
    server.script(service, [Fault.JOB_FAILED])
    result = run(one_shot, tmp_path, server, service)
    assert server.stats(service).calls == 3 and server.stats(service).billed == 2 == result.billed_calls
    assert_same_shape_and_sound(result.output, one_shot)


@pytest.mark.slow
def test_luma_agents_budget_exhausted_stops_the_segment_as_no_credits(one_shot, tmp_path, server):
    server.dialects["luma-agents"].failure_code = "budget_exhausted"
    server.script("luma-agents", [Fault.JOB_FAILED])
    with pytest.raises(SegmentsFailedError, match="InsufficientCreditsError.*budget is exhausted") as caught:
        run(one_shot, tmp_path, server, "luma-agents", concurrency=1)
    # Not sent again: one create for the refused segment; what was billed is what the run reports.
    stats = server.stats("luma-agents")
    assert stats.calls - stats.billed == 1 and paid_calls_reported(caught) == stats.billed


@pytest.mark.slow
def test_lucy_moderation_is_fatal_and_not_billed(one_shot, tmp_path, server):
    # fal bills "only successful outputs": a refused Lucy request costs nothing and is not sent again.
    server.script("fal", [Fault.MODERATION])
    with pytest.raises(SegmentsFailedError, match="ContentModerationError") as caught:
        run(one_shot, tmp_path, server, "lucy", concurrency=1)
    stats = server.stats("fal")
    assert stats.calls - stats.billed == 1 and paid_calls_reported(caught) == stats.billed


@pytest.mark.slow
def test_lucy_s_failed_request_is_sent_again_and_not_billed(one_shot, tmp_path, server):
    server.script("fal", [Fault.JOB_FAILED])
    result = run(one_shot, tmp_path, server, "lucy")
    assert server.stats("fal").calls == 3 and server.stats("fal").billed == 2 == result.billed_calls
    assert_same_shape_and_sound(result.output, one_shot)


def test_runway_and_luma_agents_say_what_of_a_long_prompt_is_cut_and_runway_keeps_url_clips_under_32_mb():
    from prefect_modify_video.providers.luma_agents import LumaAgentsBackend
    from prefect_modify_video.providers.runway import RunwayBackend
    from prefect_modify_video.providers.uploaders import HttpPutUploader

    runway, luma = RunwayBackend("k"), LumaAgentsBackend("k")
    assert runway.prompt_warnings("x" * 1000) == [] and luma.prompt_warnings("x" * 6000) == []
    assert "1001 characters; Aleph 2 takes 1000" in runway.prompt_warnings("x" * 1001)[0]
    assert "6001 characters; Ray 3.2 takes 6000" in luma.prompt_warnings("x" * 6001)[0]
    # Runway's upload endpoint takes 200 MB; a clip it reads from a URL, 32 MB.
    assert runway.max_upload_bytes == 200_000_000
    assert RunwayBackend("k", uploader=HttpPutUploader("http://127.0.0.1:9/put")).max_upload_bytes == 32_000_000


@pytest.mark.slow
def test_a_divided_rate_segment_s_saved_job_is_resumed_without_paying_again(sixty_fps, tmp_path, server):
    # The first run stops waiting while Runway keeps both tasks THROTTLED; their ids stay saved. The re-run polls
    # them, downloads the 30 fps answers and conforms them to the 60 fps source: no new task, nothing paid twice.
    server.dialects["runway"].throttled_polls = 10_000
    with pytest.raises(SegmentsFailedError, match="JobTimedOutError") as caught:
        run(sixty_fps, tmp_path, server, "runway", spec={"max_wait_seconds": 0.5})
    server.dialects["runway"].throttled_polls = 0
    result = run(sixty_fps, tmp_path, server, "runway")
    stats = server.stats("runway")
    assert stats.calls == 2 == stats.billed == paid_calls_reported(caught) + result.billed_calls
    assert_same_shape_and_sound(result.output, sixty_fps)


def test_an_excerpt_is_sent_as_its_plan_s_clips_are():
    # The preview's excerpt of a plan for Runway: a 60 fps source's 1.5 s excerpt goes at 30 fps, padded to 2 s.
    from prefect_modify_video.media.plan import Segment, plan_segments_on_cuts

    plan = plan_segments_on_cuts(600, "60/1", 29.9, []).as_sent(2, 2.0)
    excerpt = plan.sent(Segment(index=0, first_frame=60, end_frame=150, start_s=1.0, end_s=2.5))
    assert (excerpt.frame_step, excerpt.clip_frames, excerpt.pad_frames) == (2, 60, 15)
    assert excerpt.sent_duration_s == pytest.approx(2.0) and excerpt.clip_index(60) == 0
    assert plan.as_sent(2, 2.0) is plan and plan.segments[0].pad_frames == 0
