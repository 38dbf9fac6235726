"""A segment is paid for once, whatever polls and downloads go through; every billed answer is counted and used.

Each test counts billed jobs at the fake server (real HTTP on 127.0.0.1) and checks that the
run's reported paid calls and cost equal it.
"""

from __future__ import annotations

import pytest

from prefect_modify_video.flows import BackendSpec, ModifyVideoParameters, modify_video
from prefect_modify_video.parameters import flow_arguments
from prefect_modify_video.media.extract import extract_segment
from prefect_modify_video.media.files import sha256_of_file
from prefect_modify_video.media.probe import probe_video
from prefect_modify_video.media.sample import make_sample_video
from prefect_modify_video.media.plan import plan_video
from prefect_modify_video.testing import FakeModifyServer, Fault

FAKE_KEY = "sk-test-0123456789abcdef"
FAL_PRICE_PER_SECOND = 0.35


@pytest.fixture(scope="module")
def server():
    with FakeModifyServer(polls_to_complete=1, rate_limit_reset_seconds=0.1) as fake:
        yield fake


@pytest.fixture(autouse=True)
def fresh_server(server, monkeypatch):
    server.reset()
    monkeypatch.setenv("FAL_KEY", FAKE_KEY)
    yield
    server.wait_idle(30)


@pytest.fixture(scope="module")
def one_segment(tmp_path_factory):
    """2 s, 320x180, 30 fps, one shot, a tone: one segment on fal."""
    folder = tmp_path_factory.mktemp("one")
    return make_sample_video(folder / "one.mp4", seconds=2, width=320, height=180, fps=30, scenes=1)


def run(source, tmp_path, server, *, store=None, timeout_seconds=None, **overrides):
    spec = dict(name="fal", base_url=server.base_url, poll_interval_seconds=0.05, timeout_seconds=timeout_seconds)
    values = dict(
        source=str(source),
        prompt="watercolour painting",
        mode="flex_1",
        output=str(tmp_path / "out.mp4"),
        backend=BackendSpec(**spec),
        store_dir=str(store or tmp_path / "store"),
        retry_delay_seconds=0.05,
    )
    values.update(overrides)
    return modify_video(**flow_arguments(ModifyVideoParameters(**values)))


def assert_reported_equals_billed(result, server, billed):
    assert server.stats("fal").billed == billed
    assert result.billed_calls == billed
    assert result.cost_usd == pytest.approx(billed * FAL_PRICE_PER_SECOND * 2.0, rel=0.05)


# 4 is already more than the client's own retries; 10 (a Retry-After of 1 s each) runs with the slow tests.
@pytest.mark.parametrize("rate_limited_polls", [1, 4, pytest.param(10, marks=pytest.mark.slow)])
def test_rate_limited_polls_never_submit_again(rate_limited_polls, one_segment, tmp_path, server):
    server.script("fal", [Fault.rate_limited(0.1, retry_after=True)] * rate_limited_polls, on="poll")
    result = run(one_segment, tmp_path, server)
    assert server.stats("fal").calls == 1, "a rate-limited poll must never lead to a second create"
    assert_reported_equals_billed(result, server, 1)
    assert probe_video(result.output).frames == probe_video(one_segment).frames


@pytest.mark.parametrize("on", ["poll", "download"])
@pytest.mark.parametrize(
    "fault, timeout_seconds",
    [
        (Fault.SERVER_500, None),
        pytest.param(Fault.SERVER_502, None, marks=pytest.mark.slow),  # the same path as 500: with the slow tests
        pytest.param(Fault.timeout(2.5), 1, marks=pytest.mark.slow),
        (Fault.dropped_connection(), None),
    ],
    ids=["500", "502", "timeout", "dropped-connection"],
)
def test_failing_polls_and_downloads_are_paid_once(fault, timeout_seconds, on, one_segment, tmp_path, server):
    # Five in a row: more than the HTTP client's own retries, so the poll loop and the task's
    # retries (which reload the saved job) are what carry the segment through.
    server.script("fal", [fault] * 5, on=on)
    result = run(one_segment, tmp_path, server, timeout_seconds=timeout_seconds)
    assert server.stats("fal").calls == 1
    assert_reported_equals_billed(result, server, 1)
    assert probe_video(result.output).frames == probe_video(one_segment).frames


def test_a_retried_segment_is_extracted_once_and_paid_once(one_segment, tmp_path, server, monkeypatch):
    """A retryable create error retries the segment's one task: it keeps the clip its first try extracted."""
    from prefect_modify_video.media import extract

    encodes = []
    write = extract._write_segment

    def counted(info, segment, *args, **kwargs):
        encodes.append(segment.index)
        return write(info, segment, *args, **kwargs)

    monkeypatch.setattr(extract, "_write_segment", counted)
    server.script("fal", [Fault.SERVER_500])
    result = run(one_segment, tmp_path, server)
    assert server.stats("fal").calls == 2, "the create answered 500, then the retry's"
    assert encodes == [0], "the retry extracts nothing again"
    assert_reported_equals_billed(result, server, 1)
    assert probe_video(result.output).frames == probe_video(one_segment).frames


def test_a_short_answer_is_kept_and_only_the_remainder_is_sent(one_segment, tmp_path, server):
    server.script("fal", [Fault.wrong_length(0.5)])
    result = run(one_segment, tmp_path, server)
    first, second = server.received("fal")
    # The second call carries only the missing half: about half the bytes of the whole clip.
    assert second.video_bytes < 0.75 * first.video_bytes
    assert second.first_frame_bytes, "the remainder starts from the short answer's last frame"
    assert result.billed_calls == 2 and server.stats("fal").billed == 2
    assert result.cost_usd == pytest.approx(2 * FAL_PRICE_PER_SECOND * 2.0, rel=0.05)
    assert probe_video(result.output).frames == probe_video(one_segment).frames
    again = run(one_segment, tmp_path, server, output=str(tmp_path / "again.mp4"))
    assert again.billed_calls == 0 and server.stats("fal").billed == 2


def test_an_answer_that_is_not_a_video_is_downloaded_again_not_bought_again(one_segment, tmp_path, server):
    server.script("fal", [Fault.HTML_200] * 2, on="download")
    result = run(one_segment, tmp_path, server)
    assert server.stats("fal").calls == 1
    assert_reported_equals_billed(result, server, 1)


def test_covered_frames_lines_answers_up_with_the_start_of_what_was_sent(tmp_path):
    from prefect_modify_video.errors import ClipValidationError
    from prefect_modify_video.media.answers import covered_frames, join_answers, remainder_clip
    from prefect_modify_video.media.ffmpeg import run_ffmpeg

    sent = make_sample_video(tmp_path / "sent.mp4", seconds=3, width=160, height=90, fps=30, scenes=3, audio=False)
    # What a service returns: 24 fps, other colours; the first 40 % of the clip, or its last 40 %.
    look = "fps=24,hue=h=60:s=1.5,eq=brightness=0.1"
    start = tmp_path / "start.mp4"
    run_ffmpeg(["-i", str(sent), "-t", "1.2", "-vf", look, "-an", str(start)])
    end = tmp_path / "end.mp4"
    run_ffmpeg(["-ss", "1.8", "-i", str(sent), "-vf", look, "-an", str(end)])
    whole = tmp_path / "whole.mp4"
    run_ffmpeg(["-i", str(sent), "-vf", look, "-an", str(whole)])

    assert covered_frames(whole, sent) == 90
    assert covered_frames(start, sent) == 36
    with pytest.raises(ClipValidationError, match="does not line up"):
        covered_frames(end, sent)
    rest = remainder_clip(sent, 36, tmp_path / "rest.mp4")
    assert probe_video(rest).frames == 54
    joined = join_answers([start, whole], [36, 54], probe_video(sent).frame_rate, tmp_path / "joined.mp4")
    assert probe_video(joined).frames == 90


def test_the_key_is_logical_other_encoder_threads_pay_nothing(one_segment, tmp_path, server, monkeypatch):
    info = probe_video(one_segment)
    segment = plan_video(info, 9.0).segments[0]
    clips = {}
    for threads in ("1", "4"):
        monkeypatch.setenv("PREFECT_MODIFY_VIDEO_THREADS", threads)
        clips[threads] = sha256_of_file(extract_segment(info, segment, tmp_path / f"t{threads}.mp4", max_dimension=1280))
    assert clips["1"] != clips["4"], "the test needs two encodes whose bytes differ"

    store = tmp_path / "shared-store"
    monkeypatch.setenv("PREFECT_MODIFY_VIDEO_THREADS", "1")
    first = run(one_segment, tmp_path, server, store=store, output=str(tmp_path / "a.mp4"))
    monkeypatch.setenv("PREFECT_MODIFY_VIDEO_THREADS", "4")
    second = run(one_segment, tmp_path, server, store=store, output=str(tmp_path / "b.mp4"))
    assert first.billed_calls == 1 and second.billed_calls == 0 and second.reused_segments == 1
    assert server.stats("fal").billed == 1


@pytest.mark.slow
def test_every_job_rate_limited_on_its_first_six_polls_is_paid_once(tmp_path, server):
    """The reproduction of the review: 3 segments on fal, each job's first six polls answered 429
    with Retry-After: 1. It used to bill 18 jobs for 3 segments and report 3."""
    source = make_sample_video(tmp_path / "seven.mp4", seconds=7, width=320, height=180, fps=30, scenes=3)
    server.script_each_job("fal", [Fault.rate_limited(1, retry_after=True)] * 6, on="poll")
    try:
        result = run(source, tmp_path, server, max_segment_seconds=3.0)
    finally:
        server.script_each_job("fal", [], on="poll")
    assert result.segments == 3
    assert server.stats("fal").calls == 3
    assert server.stats("fal").billed == 3 and result.billed_calls == 3
    assert probe_video(result.output).frames == probe_video(source).frames


def test_rate_limited_creates_are_not_billed_and_the_segment_goes_through(one_segment, tmp_path, server):
    server.script("fal", [Fault.rate_limited(0.2, retry_after=True)] * 3)
    result = run(one_segment, tmp_path, server)
    assert server.stats("fal").calls == 4, "three refused creates, then the one that was accepted"
    assert_reported_equals_billed(result, server, 1)
