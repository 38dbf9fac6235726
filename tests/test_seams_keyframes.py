"""The seam report reads the output from a keyframe just before each seam's window, and measures as a full decode would."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from prefect_modify_video.media.conform import conformed_output_args
from prefect_modify_video.media.ffmpeg import FFPROBE, run_ffmpeg
from prefect_modify_video.media.frames import FrameWindow, read_frame_windows, read_frames
from prefect_modify_video.media.plan import plan_video
from prefect_modify_video.media.probe import frame_seek_seconds, probe_video
from prefect_modify_video.media.sample import make_sample_video
from prefect_modify_video.media.seams import (
    keyframe_before_seam,
    measure_seams,
    measure_size,
    plane_means,
    seam_window,
)
from prefect_modify_video.parameters import SeamOptions
from prefect_modify_video.tasks import media as media_tasks
from prefect_modify_video.tasks.seams import finish_segment_clips, finished_in_conform


@pytest.fixture(scope="module")
def two_shots(tmp_path_factory) -> Path:
    """6 s, 320x180, 30 fps, two shots with a hard cut at 3 s (each longer than the 2 s cap: split inside)."""
    return make_sample_video(tmp_path_factory.mktemp("keyframes") / "two.mp4", seconds=6, width=320, height=180, scenes=2)


def key_frames(path: Path) -> list[int]:
    """Numbers of the frames ffprobe decodes as keyframes."""
    flags = run_ffmpeg(
        ["-v", "error", "-select_streams", "v:0", "-show_entries", "frame=key_frame", "-of", "csv=p=0", str(path)],
        program=FFPROBE,
    ).decode().split()
    return [k for k, flag in enumerate(flags) if flag.strip(",") == "1"]


def media_run(source: Path, work: Path, seams: SeamOptions) -> tuple[Path, list]:
    """A service run's media path (the extracted clip stands for the answer): extract, conform, finish, join."""
    info = probe_video(source)
    plan = plan_video(info, 2.0, seams.overlap_frames or 0)
    ready = finished_in_conform(plan, seams)
    extracted, conformed = {}, {}
    for segment in plan.segments:
        clip = media_tasks.extract_clip(info, segment, str(work), None)
        extracted[segment.index] = str(clip)
        conformed[segment.index] = str(media_tasks.conform_answer(
            clip, info, segment, str(work), final=segment.index in ready, pending=segment.index not in ready,
        ))  # fmt: skip
    finished = finish_segment_clips.fn(plan, info, extracted, conformed, str(work), seams=seams)
    output = media_tasks.join_video_segments.fn(finished, info, str(work / "output.mp4"))
    return Path(output), plan.segments


@pytest.mark.parametrize(
    "seams",
    [SeamOptions(anchor_colours=True, overlap_frames=6), SeamOptions(anchor_colours=False, overlap_frames=0)],
    ids=["finished", "conformed"],
)
def test_each_seam_window_starts_after_a_keyframe_and_measures_as_a_full_decode(two_shots, tmp_path, seams):
    output, segments = media_run(two_shots, tmp_path, seams)
    later = segments[1:]
    assert any(s.cut_before for s in later) and not all(s.cut_before for s in later)
    assert any(s.overlap_frames for s in later) == bool(seams.overlap_frames)
    keys = key_frames(output)
    info = probe_video(output)
    for segment in later:
        first, _ = seam_window(segment.first_frame, segment.overlap_frames)
        wanted = segment.first_frame - keyframe_before_seam(segment.overlap_frames)
        assert wanted == first - 1
        assert wanted in keys, (segment.first_frame, keys)
        # A seek to the window's first frame, as ``read_frames`` seeks, lands on that keyframe.
        seek = frame_seek_seconds(first, info.frame_rate, info.start_offset_s)
        shown = run_ffmpeg([
            "-copyts", "-noaccurate_seek", "-ss", f"{seek:.6f}", "-i", str(output), "-map", "0:v:0",
            "-frames:v", "1", "-f", "framemd5", "-",
        ]).decode()  # fmt: skip
        pts = int([line for line in shown.splitlines() if not line.startswith("#")][0].split(",")[2])
        timebase = next(line for line in shown.splitlines() if line.startswith("#tb 0"))
        assert Fraction(pts) * Fraction(timebase.split(":")[1].strip()) == pytest.approx(
            float(Fraction(wanted) / Fraction(info.frame_rate)) + info.start_offset_s, abs=1e-3
        )

    # The figures equal those of the frames decoded from the start of each file.
    seams = [s.first_frame for s in later]
    metrics = measure_seams(
        two_shots, output, seams, on_cut=[s.cut_before for s in later], overlaps=[s.overlap_frames for s in later]
    )
    size = measure_size(info)
    means = {
        name: plane_means(read_frames(path, 0, info.frames, frame_rate=info.frame_rate, size=size), size)
        for name, path in (("source", two_shots), ("output", output))
    }
    jumps = {name: np.abs(np.diff(value, axis=0)) for name, value in means.items()}
    for metric, segment in zip(metrics, later):
        into = slice(max(1, segment.first_frame - segment.overlap_frames) - 1, segment.first_frame)
        assert metric.output_jump == pytest.approx(tuple(jumps["output"][into].mean(axis=0)), abs=1e-9)
        assert metric.source_jump == pytest.approx(tuple(jumps["source"][into].mean(axis=0)), abs=1e-9)


def test_a_clip_written_as_conformed_has_its_keyframe_before_the_seam_after_it(sample_video, tmp_path):
    clip = tmp_path / "clip.mp4"
    run_ffmpeg(["-i", str(sample_video), "-map", "0:v:0", "-frames:v", "60", "-c:v", "libx264", "-preset", "ultrafast",
                "-y", str(clip)])  # fmt: skip
    written = tmp_path / "conformed.mp4"
    run_ffmpeg(["-i", str(clip), "-map", "0:v:0", *conformed_output_args(probe_video(clip)), "-y", str(written)])
    assert 60 - keyframe_before_seam() in key_frames(written)
    last = tmp_path / "last.mp4"
    run_ffmpeg(["-i", str(clip), "-map", "0:v:0", *conformed_output_args(probe_video(clip), seam_after=False),
                "-y", str(last)])  # fmt: skip
    assert 60 - keyframe_before_seam() not in key_frames(last)


def test_windows_read_in_one_run_are_the_frames_of_a_full_decode(sample_video):
    info = probe_video(sample_video)
    size = (64, 36)
    every = read_frames(sample_video, 0, info.frames, frame_rate=info.frame_rate, size=size)
    windows = [FrameWindow(sample_video, first, 5, info.frame_rate, info.start_offset_s) for first in (1, 44, 90)]
    # The last one runs past the end: read again by ``read_frames``, as it was read before.
    past_end = FrameWindow(sample_video, info.frames - 3, 5, info.frame_rate, info.start_offset_s)
    *read, last = read_frame_windows([*windows, past_end], size=size)
    for window, frames in zip(windows, read):
        assert np.array_equal(frames, every[window.first : window.first + window.count]), window.first
    assert np.array_equal(last, read_frames(sample_video, past_end.first, 5, frame_rate=info.frame_rate, size=size))
