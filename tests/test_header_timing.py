"""A source whose header lies about its length: the output follows the packets, not the header.

An MP4 of 4 s (120 frames at 30 fps, 4 s of AAC) whose video track's header (``mdhd``, and in one
case ``tkhd`` and ``mvhd`` too) is patched to say 1 s, or 3.6 s. Players show 4 s at 30 fps: the
packets' timestamps say so. The probe once believed the header and made 120 fps for 1 s (or 33.3 fps
for 3.6 s) with 4 s of audio, and exited 0. (A header claiming more than the samples hold is capped
by ffmpeg's MP4 reader itself.) The same happened to an everyday file: a ``-c copy`` cut whose edit
list hides frames its header still counts (120 frames at 34.3 fps for 3.5 s instead of 105 at 30).
The outputs are checked with ffprobe and ffmpeg, not with the package's own probe.
"""

from __future__ import annotations

import json
import struct
import subprocess
import time
from pathlib import Path

import pytest

from conftest import audio_md5
from prefect_modify_video.flows import ModifyVideoParameters, modify_video
from prefect_modify_video.parameters import flow_arguments
from prefect_modify_video.media.probe import probe_video

SECONDS = 4
FPS = 30
FRAMES = SECONDS * FPS
CONTAINERS = {"moov", "trak", "mdia", "minf", "stbl", "edts"}


def _boxes(data: bytes, start: int, end: int, path: tuple[str, ...] = ()):
    """Yields (path of box types, offset, size) for every box of an ISO BMFF file, depth first."""
    offset = start
    while offset < end:
        size, kind = struct.unpack(">I4s", data[offset:offset + 8])
        kind = kind.decode("latin-1")
        yield (*path, kind), offset, size
        if kind in CONTAINERS:
            yield from _boxes(data, offset + 8, offset + size, (*path, kind))
        offset += size


def lie_about_length(source: Path, target: Path, factor: float, *, every_header: bool) -> None:
    """Copies an MP4 whose first track is video, writing ``factor`` × its real length into its headers.

    ``mdhd`` (the video's media duration) always; with ``every_header`` also the video's ``tkhd``
    and the movie's ``mvhd``. The samples, their timestamps and the audio track are unchanged.
    """
    data = bytearray(source.read_bytes())
    tracks = 0
    for path, offset, _ in list(_boxes(bytes(data), 0, len(data))):
        kind = path[-1]
        if kind == "trak":
            tracks += 1
        if data[offset + 8] != 0:  # version 1 (64-bit times): not written by ffmpeg for short files
            continue
        # Version 0 layouts: mvhd/mdhd: flags, created, modified, timescale, duration;
        # tkhd: flags, created, modified, track id, reserved, duration.
        field = {"mdhd": 24, "tkhd": 28, "mvhd": 24}.get(kind)
        if field is None or (kind != "mvhd" and tracks != 1) or (kind != "mdhd" and not every_header):
            continue
        (duration,) = struct.unpack(">I", data[offset + field:offset + field + 4])
        data[offset + field:offset + field + 4] = struct.pack(">I", round(duration * factor))
    target.write_bytes(bytes(data))


def ffprobe(path: Path, *args: str) -> dict:
    done = subprocess.run(["ffprobe", "-v", "error", *args, "-of", "json", str(path)], capture_output=True, check=True)
    return json.loads(done.stdout)


def video_frames(path: Path) -> tuple[int, float, float]:
    """Decoded video frames, the span of their timestamps (last frame's end included) and the mean rate."""
    frames = ffprobe(path, "-select_streams", "v:0", "-show_entries", "frame=best_effort_timestamp_time")["frames"]
    times = [float(f["best_effort_timestamp_time"]) for f in frames]
    rate = (len(times) - 1) / (times[-1] - times[0])
    return len(times), (times[-1] - times[0]) + 1 / rate, rate


def audio_seconds(path: Path) -> float:
    """Seconds of decoded audio (samples / sample rate) of the first audio stream."""
    stream = ffprobe(path, "-select_streams", "a:0", "-show_streams")["streams"][0]
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:a:0", "-f", "s16le", "-ac", "1", "-"],
        capture_output=True, check=True,
    ).stdout
    return len(raw) / 2 / int(stream["sample_rate"])


@pytest.fixture(scope="module")
def honest(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("honest") / "honest.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size=320x180:rate={FPS}:duration={SECONDS}",
         "-f", "lavfi", "-i", f"sine=frequency=440:duration={SECONDS}:sample_rate=48000",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)],
        check=True,
    )
    return path


LIES = {
    "media-header-says-1s": (0.25, False),
    "every-header-says-1s": (0.25, True),
    "media-header-says-3.6s": (0.9, False),
}


def liar(name: str, honest: Path, folder: Path) -> Path:
    source = folder / "liar.mp4"
    factor, every_header = LIES[name]
    lie_about_length(honest, source, factor, every_header=every_header)
    return source


@pytest.mark.parametrize("name", LIES)
def test_the_file_really_lies(honest, tmp_path, name):
    """ffprobe's header fields say what the patch wrote; the packets still say 120 frames in 4 s."""
    source = liar(name, honest, tmp_path)
    video = ffprobe(source, "-select_streams", "v:0", "-show_streams")["streams"][0]
    assert float(video["duration"]) == pytest.approx(SECONDS * LIES[name][0])
    assert int(video["nb_frames"]) == FRAMES
    assert video_frames(source)[0] == FRAMES
    assert video_frames(source)[1] == pytest.approx(SECONDS, abs=0.01)


@pytest.fixture(scope="module")
def trimmed(tmp_path_factory) -> Path:
    """``ffmpeg -ss 0.5 -i film.mp4 -c copy cut.mp4`` of a film with B-frames and a 2 s GOP: the cut is
    not on a key frame, so the MP4 keeps the 15 frames before it and an edit list hides them. Its
    header still counts 120 frames, for 3.5 s; players show 105."""
    folder = tmp_path_factory.mktemp("trimmed")
    whole, cut = folder / "whole.mp4", folder / "cut.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size=320x180:rate={FPS}:duration={SECONDS}",
         "-f", "lavfi", "-i", f"sine=frequency=440:duration={SECONDS}:sample_rate=48000",
         "-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-g", "60", "-pix_fmt", "yuv420p", "-c:a", "aac",
         str(whole)],
        check=True,
    )
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-ss", "0.5", "-i", str(whole), "-c", "copy", str(cut)],
                   check=True)
    video = ffprobe(cut, "-select_streams", "v:0", "-show_streams")["streams"][0]
    assert (int(video["nb_frames"]), float(video["duration"])) == (FRAMES, 3.5)
    assert video_frames(cut)[:2] == (105, pytest.approx(3.5, abs=0.01))
    return cut


@pytest.mark.parametrize("name", LIES)
def test_probe_takes_length_and_rate_from_the_packets(honest, tmp_path, name):
    info = probe_video(liar(name, honest, tmp_path))
    header_seconds = SECONDS * LIES[name][0]
    assert info.header_mismatch == (
        f"its header says {FRAMES} frames in {header_seconds:.3f} s but its packets hold {FRAMES} frames in 4.000 s"
    )
    assert info.frames == FRAMES
    assert info.duration_s == pytest.approx(SECONDS, abs=0.01)
    assert info.frame_rate == f"{FPS}/1"
    assert not info.is_vfr


def test_probe_counts_only_the_frames_an_edit_list_shows(trimmed):
    info = probe_video(trimmed)
    assert (info.frames, info.frame_rate, info.is_vfr) == (105, f"{FPS}/1", False)
    assert info.header_mismatch == "its header says 120 frames in 3.500 s but its packets hold 105 frames in 3.500 s"
    assert info.duration_s == pytest.approx(3.5, abs=0.01)


def test_probe_of_an_honest_file_is_unchanged(honest):
    info = probe_video(honest)
    assert (info.frames, info.frame_rate, info.is_vfr) == (FRAMES, f"{FPS}/1", False)
    assert info.duration_s == pytest.approx(SECONDS, abs=1e-6)
    assert info.header_mismatch == ""


@pytest.mark.parametrize("name", [*LIES, "trimmed-with-c-copy"])
def test_output_has_the_real_frames_rate_and_audio(honest, trimmed, tmp_path, caplog, name):
    source = trimmed if name == "trimmed-with-c-copy" else liar(name, honest, tmp_path)
    frames, seconds, rate = video_frames(source)
    assert rate == pytest.approx(FPS, abs=0.01)
    output = tmp_path / "out" / "out.mp4"
    result = modify_video(**flow_arguments(ModifyVideoParameters(
        source=str(source), prompt="black and white", mode="reimagine_3", output=str(output),
        max_segment_seconds=2, store_dir=str(tmp_path / "store"),
    )))
    assert Path(result.output) == output
    assert [r.getMessage() for r in caplog.records if "its header says" in r.getMessage()] == [
        f"{source}: {probe_video(source).header_mismatch}; the packets' timing is used"
    ]
    assert video_frames(output) == (frames, pytest.approx(seconds, abs=0.01), pytest.approx(FPS, abs=0.01))
    assert result.frames == frames
    assert audio_seconds(output) == pytest.approx(audio_seconds(source), abs=0.001)
    assert audio_md5(output) == audio_md5(source)


def test_reading_the_packets_of_an_hour_stays_fast(tmp_path):
    """An hour at 30 fps (108,000 packets, looped with -c copy): the packets are read, not decoded."""
    ten, hour = tmp_path / "ten.mp4", tmp_path / "hour.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=64x36:rate=30:duration=10", "-c:v", "libx264", "-preset", "ultrafast", "-g", "30",
                    str(ten)], check=True)
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-stream_loop", "359", "-i", str(ten), "-c", "copy",
                    str(hour)], check=True)
    started = time.monotonic()
    info = probe_video(hour)
    elapsed = time.monotonic() - started
    assert (info.frames, info.frame_rate, info.header_mismatch) == (108_000, "30/1", "")
    assert info.duration_s == pytest.approx(3600, abs=0.1)
    assert elapsed < 20, f"{elapsed:.1f} s"  # about 2 s on 2 busy cores; decoding it would take minutes
