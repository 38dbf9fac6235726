"""Media helpers on real generated videos: probe, extract, conform, join."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import audio_md5, read_frames
from plans import plan_segments
from prefect_modify_video.errors import ClipValidationError, InvalidInputError
from prefect_modify_video.media.answers import covered_frames
from prefect_modify_video.media.conform import conform_clip
from prefect_modify_video.media.extract import extract_segment
from prefect_modify_video.media.join import check_output_path, join_segments
from prefect_modify_video.media.ffmpeg import run_ffmpeg, write_with_ffmpeg
from prefect_modify_video.media.probe import check_image, probe_video
from prefect_modify_video.media.sample import make_sample_video


def lavfi_video(path: Path, *, size="320x180", rate="30", seconds=3, extra_args=(), audio=True) -> Path:
    args = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"]
    args += [*extra_args, "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "ultrafast", "-y", str(path)]
    run_ffmpeg(args)
    return path


def test_probe_reads_the_sample(sample_video):
    info = probe_video(sample_video)
    assert info.frames == 180
    assert info.frame_rate == "30/1" and info.fps == 30.0
    assert (info.width, info.height) == (320, 180)
    assert info.duration_s == pytest.approx(6.0, abs=1 / 30)
    assert not info.is_vfr
    assert [a.codec for a in info.audio_streams] == ["aac"]
    assert info.size_bytes == sample_video.stat().st_size


def test_sample_has_hard_cuts_where_promised(sample_video):
    frames = read_frames(sample_video)
    jumps = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))
    biggest = sorted(int(i) + 1 for i in np.argsort(jumps)[-3:])
    assert biggest == [45, 90, 135]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.mp4", "no such file"),
        (lambda d: d, "not a file"),
        (lambda d: (d / "notes.mp4").write_text("hello") and d / "notes.mp4", "not a readable video"),
        (lambda d: (d / "empty.mp4").write_bytes(b"") or d / "empty.mp4", "empty"),
    ],
)
def test_probe_refuses_bad_input_naming_it(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(InvalidInputError, match=message) as caught:
        probe_video(path)
    assert str(path) in str(caught.value)


def test_probe_refuses_audio_only(tmp_path):
    audio = tmp_path / "tone.m4a"
    run_ffmpeg(["-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", "-y", str(audio)])
    with pytest.raises(InvalidInputError, match="no video stream"):
        probe_video(audio)


def test_extract_is_frame_exact(sample_video, tmp_path):
    info = probe_video(sample_video)
    plan = plan_segments(info.frames, info.frame_rate, 2.5)
    source = read_frames(sample_video)
    for segment in plan.segments:
        clip = extract_segment(info, segment, tmp_path / f"{segment.name}.mp4")
        clip_info = probe_video(clip)
        assert clip_info.frames == segment.frames
        assert clip_info.audio_streams == []
        got = read_frames(clip)
        expected = source[segment.first_frame : segment.end_frame]
        # Same pictures, frame by frame (small differences come from re-encoding).
        error = np.abs(got - expected).mean(axis=(1, 2, 3))
        assert error.max() < 6, (segment.name, error.max())


def test_extract_caps_size_and_bakes_rotation(tmp_path):
    rotated = lavfi_video(tmp_path / "rotated.mp4", size="640x360", audio=False)
    tagged = tmp_path / "tagged.mp4"
    run_ffmpeg(["-i", str(rotated), "-c", "copy", "-metadata:s:v:0", "rotate=90", "-y", str(tagged)])
    info = probe_video(tagged)
    assert info.rotation in (90, 270) and (info.display_width, info.display_height) == (360, 640)
    segment = plan_segments(info.frames, info.frame_rate, 30).segments[0]
    clip = probe_video(extract_segment(info, segment, tmp_path / "clip.mp4", max_dimension=320))
    assert (clip.width, clip.height) == (180, 320)
    assert clip.rotation == 0


@pytest.mark.parametrize("rate", ["24", "25", "30", "60", "30000/1001"])
def test_conform_brings_a_24fps_answer_back_to_the_source(tmp_path, rate):
    source = lavfi_video(tmp_path / "source.mp4", rate=rate, seconds=2)
    info = probe_video(source)
    segment = plan_segments(info.frames, info.frame_rate, 30).segments[0]
    answer = tmp_path / "answer.mp4"
    # What a service sends back: 24 fps, silent, another size.
    run_ffmpeg(["-i", str(source), "-vf", "fps=24,scale=256:144", "-an", "-c:v", "libx264", "-y", str(answer)])
    out = probe_video(conform_clip(answer, info, segment, tmp_path / "conformed.mp4"))
    assert out.frames == segment.frames
    assert out.frame_rate == info.frame_rate
    assert (out.width, out.height) == (info.width, info.height)


def test_conform_retimes_a_clip_of_another_length(tmp_path):
    source = lavfi_video(tmp_path / "source.mp4", seconds=2, audio=False)
    info = probe_video(source)
    segment = plan_segments(info.frames, info.frame_rate, 30).segments[0]
    longer = tmp_path / "longer.mp4"
    run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=24:duration=2.2", "-c:v", "libx264", "-y", str(longer)])
    out = probe_video(conform_clip(longer, info, segment, tmp_path / "conformed.mp4"))
    assert out.frames == 60


def test_returned_clip_checks(tmp_path, sample_video):
    # A short answer is no longer refused: it covers the start of what was sent (media/answers.py).
    html = tmp_path / "answer.mp4"
    html.write_text("<html><body>Bad gateway</body></html>")
    with pytest.raises(ClipValidationError, match="not a usable video"):
        covered_frames(html, sample_video)
    short = tmp_path / "short.mp4"
    run_ffmpeg(["-i", str(sample_video), "-t", "2", "-an", "-vf", "fps=24", "-y", str(short)])
    assert covered_frames(short, sample_video) == 60
    assert covered_frames(sample_video, sample_video) == 180


def test_join_keeps_frames_and_copies_audio_unchanged(sample_video, tmp_path):
    info = probe_video(sample_video)
    plan = plan_segments(info.frames, info.frame_rate, 2.5)
    clips = [
        conform_clip(
            extract_segment(info, s, tmp_path / f"x{s.name}.mp4"), info, s, tmp_path / f"c{s.name}.mp4"
        )
        for s in plan.segments
    ]
    out = join_segments(clips, info, tmp_path / "joined.mp4")
    joined = probe_video(out)
    assert joined.frames == info.frames
    assert joined.frame_rate == info.frame_rate
    assert abs(joined.duration_s - info.duration_s) <= 1 / info.fps
    assert audio_md5(out) == audio_md5(sample_video)
    assert not list(tmp_path.glob(".*partial*"))


def test_join_copies_every_audio_stream_of_a_mov_with_pcm(tmp_path):
    source = tmp_path / "two_tracks.mov"
    run_ffmpeg([
        "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration=2",
        "-f", "lavfi", "-i", "sine=frequency=440:duration=2",
        "-f", "lavfi", "-i", "sine=frequency=880:duration=2",
        "-map", "0", "-map", "1", "-map", "2", "-c:v", "libx264", "-c:a:0", "pcm_s16le", "-c:a:1", "aac",
        "-y", str(source),
    ])
    info = probe_video(source)
    with pytest.raises(InvalidInputError, match="use a .mov or .mkv"):
        check_output_path(info, tmp_path / "out.mp4")
    segment = plan_segments(info.frames, info.frame_rate, 30).segments[0]
    clip = conform_clip(extract_segment(info, segment, tmp_path / "x.mp4"), info, segment, tmp_path / "c.mp4")
    out = join_segments([clip], info, tmp_path / "out.mov")
    assert audio_md5(out) == audio_md5(source)
    assert len(audio_md5(out)) == 2


def test_output_path_may_not_be_the_source(sample_video):
    info = probe_video(sample_video)
    with pytest.raises(InvalidInputError, match="the source itself"):
        check_output_path(info, sample_video)


def test_vfr_source_keeps_its_frame_count_and_length(tmp_path):
    cfr = lavfi_video(tmp_path / "cfr.mp4", seconds=3)
    vfr = tmp_path / "vfr.mkv"
    # Drop every third frame: irregular frame timing, as phones make.
    run_ffmpeg(["-i", str(cfr), "-vf", "select='mod(n\\,3)'", "-fps_mode", "vfr", "-c:v", "libx264", "-c:a", "copy", "-y", str(vfr)])
    info = probe_video(vfr)
    assert info.is_vfr
    plan = plan_segments(info.frames, info.frame_rate, 2.5)
    clips = [conform_clip(extract_segment(info, s, tmp_path / f"x{s.name}.mp4"), info, s, tmp_path / f"c{s.name}.mp4") for s in plan.segments]
    out = probe_video(join_segments(clips, info, tmp_path / "out.mkv"))
    assert out.frames == info.frames
    assert abs(out.duration_s - info.duration_s) < 2 / info.fps


def test_odd_size_source_is_made_even(tmp_path):
    odd = lavfi_video(tmp_path / "odd.mkv", size="321x181", seconds=1, extra_args=["-c:v", "libx264rgb"])
    info = probe_video(odd)
    segment = plan_segments(info.frames, info.frame_rate, 30).segments[0]
    clip = probe_video(extract_segment(info, segment, tmp_path / "x.mp4"))
    assert (clip.width, clip.height) == (320, 180)


def test_check_image(tmp_path, first_frame_image, sample_video):
    assert check_image(first_frame_image) == first_frame_image
    with pytest.raises(InvalidInputError, match="not an image"):
        check_image(sample_video)
    text = tmp_path / "frame.png"
    text.write_text("not a picture")
    with pytest.raises(InvalidInputError, match="not an image"):
        check_image(text)


def test_sample_video_of_other_sizes(tmp_path):
    path = make_sample_video(tmp_path / "s.mp4", seconds=2, width=160, height=90, fps=24, scenes=2)
    info = probe_video(path)
    assert (info.frames, info.width, info.height, info.frame_rate) == (48, 160, 90, "24/1")


def test_extract_meets_the_upload_cap_or_says_what_to_do(sample_video, tmp_path):
    info = probe_video(sample_video)
    segment = plan_segments(info.frames, info.frame_rate, 30).segments[0]
    best = extract_segment(info, segment, tmp_path / "best.mp4").stat().st_size
    capped = extract_segment(info, segment, tmp_path / "capped.mp4", max_bytes=best // 2)
    assert capped.stat().st_size <= best // 2
    assert probe_video(capped).frames == segment.frames
    with pytest.raises(InvalidInputError, match="shorter --max-segment-seconds"):
        extract_segment(info, segment, tmp_path / "tiny.mp4", max_bytes=1000)
    assert not (tmp_path / "tiny.mp4").exists()


def test_video_that_is_not_the_first_stream(tmp_path):
    source = tmp_path / "audio_first.mkv"
    run_ffmpeg([
        "-f", "lavfi", "-i", "sine=duration=2", "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=25:duration=2",
        "-map", "0:a", "-map", "1:v", "-c:v", "libx264", "-c:a", "aac", "-y", str(source),
    ])
    info = probe_video(source)
    assert info.video_index == 1 and info.frames == 50 and info.dropped_streams == []
    segment = plan_segments(info.frames, info.frame_rate, 30).segments[0]
    assert probe_video(extract_segment(info, segment, tmp_path / "x.mp4")).frames == 50


def test_streams_the_output_does_not_carry_are_named(tmp_path):
    subtitles = tmp_path / "subs.srt"
    subtitles.write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    source = tmp_path / "with_subs.mkv"
    run_ffmpeg([
        "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=25:duration=2", "-f", "lavfi", "-i", "sine=duration=2",
        "-i", str(subtitles), "-map", "0", "-map", "1", "-map", "2", "-c:v", "libx264", "-c:a", "aac",
        "-c:s", "srt", "-y", str(source),
    ])  # fmt: skip
    info = probe_video(source)
    assert info.dropped_streams == ["subtitle:subrip"] and len(info.audio_streams) == 1


def test_a_probe_is_reused_until_the_file_is_written_again(tmp_path, monkeypatch):
    """Issue 15: a run probes the same clip in several steps; ffprobe runs once per file version."""
    import prefect_modify_video.media.probe as probe_module

    calls = []
    original = probe_module._probe
    monkeypatch.setattr(probe_module, "_probe", lambda path: calls.append(path) or original(path))
    clip = tmp_path / "clip.mp4"
    make = lambda frames: write_with_ffmpeg(  # noqa: E731
        ["-f", "lavfi", "-i", f"testsrc2=size=64x64:rate=10,trim=end_frame={frames}", "-c:v", "libx264"], clip
    )
    make(10)
    assert probe_video(clip).frames == probe_video(clip).frames == 10
    assert len(calls) == 1
    make(7)  # written again (a new file renamed over it): probed again
    assert probe_video(clip).frames == 7
    assert len(calls) == 2
