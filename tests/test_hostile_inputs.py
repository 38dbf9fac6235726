"""Hostile real-world sources through the whole flow (local backend, real ffmpeg, the test Prefect server).

Each source is made with ffmpeg (3 s, 320x180 or smaller) in a form found in the wild: WebM, AVI,
MKV with several tracks, a rotated VFR phone clip, odd and tiny sizes, anamorphic pixels, 10-bit
HEVC, full-range and 4:4:4 H.264, audio longer, shorter, late or absent, a name with quotes, an
MPEG-TS, truncated and empty files. Every run is checked against the source with ffprobe, not
with the package's own probe: decoded frame count, duration, displayed size and aspect, every
audio stream's packets (and decoded samples), and which source frame each output frame shows.

Media-level cases already in test_media.py (VFR, odd size, rotation, mov with pcm, video not
first) are not repeated here; this file runs whole flows.

Sources whose video starts after their audio or container (WebM's Opus pre-skip, AAC priming in
MKV, a late video track, MPEG-TS) once lost frames at every seam and their A/V offset; a truncated
faststart MP4 once ran with a frozen tail; MPEG-TS once crashed the probe. Each case below guards that.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from conftest import audio_md5
from prefect_modify_video.errors import InvalidInputError
from prefect_modify_video.flows import ModifyVideoParameters, modify_video
from prefect_modify_video.parameters import flow_arguments

# One worker runs this module (``--dist loadgroup``): each case's flow run, kept by the ``hostile``
# fixture, then serves both of its tests instead of running again on the other worker.
pytestmark = pytest.mark.xdist_group("hostile-inputs")

SECONDS = 3
VIDEO = f"testsrc2=size=320x180:rate=25:duration={SECONDS}"
TONE = f"sine=frequency=440:duration={SECONDS}:sample_rate=48000"
X264 = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")


def lavfi(*graphs: str) -> tuple[str, ...]:
    return tuple(item for graph in graphs for item in ("-f", "lavfi", "-i", graph))


def av_source(*codecs: str, video: str = VIDEO, tone: str = TONE) -> tuple[tuple[str, ...], ...]:
    """One ffmpeg command: a test picture and a tone, encoded with ``codecs``, written to ``{out}``."""
    return ((*lavfi(video, tone), *codecs, "{out}"),)


# A phone clip: 1.5 s at 30 fps then 1.5 s at 24 fps (variable timing), stereo AAC at 48 kHz,
# stored landscape with a display matrix that shows it portrait.
PHONE = (
    (
        *lavfi("testsrc2=size=320x180:rate=30:duration=1.5", "testsrc2=size=320x180:rate=24:duration=1.5", TONE),
        "-filter_complex",
        "[0:v]settb=1/720,setpts=PTS-STARTPTS[a];[1:v]settb=1/720,setpts=PTS-STARTPTS[b];"
        "[a][b]concat=n=2:v=1:a=0[v];[2:a]pan=stereo|c0=c0|c1=c0[s]",
        "-map", "[v]", "-map", "[s]", "-fps_mode", "vfr", *X264, "-c:a", "aac", "-ar", "48000",
        "-video_track_timescale", "90000", "{dir}/raw.mp4",
    ),
    ("-i", "{dir}/raw.mp4", "-c", "copy", "-metadata:s:v:0", "rotate=90", "{out}"),
)


@dataclass(frozen=True)
class Case:
    """A hostile source and what its run must give."""

    file: str
    make: tuple[tuple[str, ...], ...]
    output: str | None = None  # name in the case's output folder; None: the default beside the source
    suffix: str | None = None  # the output's extension (default: the output's or the source's own)
    extra_frames: int = 0  # output frames beyond the source's decoded ones (frame times the source holds)
    packet_audio_equal: bool = True
    decoded_audio_equal: bool = True
    content: bool = True  # whether each output frame can be matched to a source frame (not for 2x2)


CASES = {
    # 1. WebM: VP9 + Opus. WebM in, WebM out (VP9 encoded, Opus copied): the default output is .webm.
    "webm": Case(
        "clip.webm",
        av_source("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "300k", "-c:a", "libopus"),
        suffix=".webm",
    ),
    # An explicit .mp4 is accepted (MP4 carries Opus). The packets are copied unchanged, but
    # ffmpeg 5.1's MP4 muxer does not keep Opus's pre-skip as WebM's CodecDelay had it: the
    # decoded audio has 13.5 ms more at its start. `ffmpeg -i clip.webm -c copy x.mp4` does the same.
    "webm-to-mp4": Case(
        "clip.webm",
        av_source("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "300k", "-c:a", "libopus"),
        output="out.mp4",
        decoded_audio_equal=False,
        content=False,  # same frames as "webm"
    ),
    # 2. AVI: MPEG-4 Part 2 with MP3 (ffmpeg writes a null chunk: frame 0 lasts two frame times,
    # players show 76 frame times from 75 pictures; the output repeats frame 0 once), and with PCM.
    "avi-mp3": Case(
        "clip.avi", av_source("-c:v", "mpeg4", "-q:v", "5", "-c:a", "libmp3lame"), suffix=".mkv", extra_frames=1
    ),
    "avi-pcm": Case("clip.avi", av_source("-c:v", "mpeg4", "-q:v", "5", "-c:a", "pcm_s16le"), suffix=".mkv"),
    # 3. MKV: H.264 + Vorbis; and two audio tracks (AAC, Vorbis) plus an SRT subtitle track.
    "mkv-vorbis": Case("clip.mkv", av_source(*X264, "-c:a", "libvorbis"), suffix=".mkv"),
    "mkv-two-audio-subs": Case(
        "clip.mkv",
        (
            (
                *lavfi(VIDEO, TONE, f"sine=frequency=880:duration={SECONDS}"), "-i", "{dir}/subs.srt",
                "-map", "0", "-map", "1", "-map", "2", "-map", "3", *X264,
                "-c:a:0", "aac", "-c:a:1", "libvorbis", "-c:s", "srt", "{out}",
            ),
        ),
        suffix=".mkv",
    ),
    # 4. A phone clip: portrait by display matrix, VFR, stereo AAC 48 kHz.
    "phone-rotated-vfr": Case("IMG_0001.mp4", PHONE, output="out.mp4"),
    # 5. Odd size (4:4:4 H.264, so x264 keeps it odd), tiny without audio, anamorphic (DV NTSC
    # 720x480 at SAR 32:27, scaled down).
    "odd-319x179-yuv444p": Case(
        "clip.mp4",
        av_source("-vf", "scale=319:179,setsar=1", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p",
                  "-c:a", "aac"),
    ),
    "tiny-2x2-no-audio": Case("clip.mp4", ((*lavfi(VIDEO), "-vf", "scale=2:2,setsar=1", *X264, "{out}"),), content=False),
    "anamorphic": Case(
        "clip.mp4",
        av_source("-vf", "scale=180:120,setsar=32/27", *X264, "-c:a", "aac",
                  video=f"testsrc2=size=720x480:rate=30000/1001:duration={SECONDS}"),
        output="out.mp4",
    ),
    # 6. 10-bit HEVC tagged hvc1 (as Apple writes it), full-range (yuvj420p, as phones write JPEG range) H.264.
    "hevc-10bit": Case(
        "clip.mp4",
        av_source("-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error",
                  "-pix_fmt", "yuv420p10le", "-tag:v", "hvc1", "-c:a", "aac"),
    ),
    "h264-full-range": Case(
        "clip.mp4",
        av_source("-vf", "scale=out_range=full", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuvj420p",
                  "-color_range", "pc", "-c:a", "aac"),
        output="out.mp4",
    ),
    # 7. Audio longer and shorter than the video (two tracks: 4 s and 1.5 s), starting late; and
    # video starting late (audio first). No audio at all: "tiny-2x2-no-audio".
    "audio-longer-and-shorter": Case(
        "clip.mp4",
        ((*lavfi(VIDEO, "sine=frequency=440:duration=4:sample_rate=48000", "sine=frequency=880:duration=1.5"),
          "-map", "0", "-map", "1", "-map", "2", *X264, "-c:a", "aac", "{out}"),),
        output="out.mp4",
    ),
    "audio-late": Case(
        "clip.mp4",
        ((*lavfi(VIDEO), "-itsoffset", "0.5", *lavfi("sine=frequency=440:duration=2.5:sample_rate=48000"),
          *X264, "-c:a", "aac", "{out}"),),
        output="out.mp4",
    ),
    "video-late": Case(
        "clip.mkv",
        (("-itsoffset", "0.5", *lavfi(VIDEO), *lavfi("sine=frequency=440:duration=3.5:sample_rate=48000"),
          *X264, "-c:a", "aac", "{out}"),),
        suffix=".mkv",
    ),
    # 8. A name with spaces, both quotes and non-ASCII letters; the default output goes beside it.
    "quoted-name": Case("my \"clip\" it's é.mp4", av_source(*X264, "-c:a", "aac")),
    # Broadcast / camcorder MPEG-TS (AVCHD .mts, HLS downloads): timestamps start at 1.4 s, B-frames.
    # Its AAC is ADTS; MKV needs it raw (ffmpeg's aac_adtstoasc, lossless): the packets differ, the
    # decoded samples must not.
    "mpeg-ts": Case(
        "clip.ts",
        av_source("-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-pix_fmt", "yuv420p", "-c:a", "aac",
                  "-f", "mpegts"),
        suffix=".mkv",
        packet_audio_equal=False,
    ),
}

def ffprobe(path: Path, *args: str) -> dict:
    done = subprocess.run(["ffprobe", "-v", "error", *args, "-of", "json", str(path)], capture_output=True, check=True)
    return json.loads(done.stdout)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Streams:
    """What ffprobe reads of a file, decoding every frame."""

    frames: int
    video_seconds: float
    width: int
    height: int
    sar: float
    rotation: int
    rate: float
    video_start: float
    audio_starts: list[float]
    kinds: list[str]
    times: tuple[float, ...]  # every frame's time, in decoding order

    @property
    def display_aspect(self) -> float:
        aspect = self.width * self.sar / self.height
        return 1 / aspect if self.rotation in (90, 270) else aspect


@functools.lru_cache(maxsize=None)
def _streams(path: Path, stamp: tuple[int, int]) -> Streams:
    data = ffprobe(path, "-count_frames", "-show_streams")
    video = next(s for s in data["streams"] if s["codec_type"] == "video" and not s["disposition"]["attached_pic"])
    times = [
        float(f["best_effort_timestamp_time"])
        for f in ffprobe(path, "-select_streams", str(video["index"]), "-show_entries",
                         "frame=best_effort_timestamp_time")["frames"]
    ]
    numerator, _, denominator = (video.get("sample_aspect_ratio") or "1:1").partition(":")
    sar = int(numerator) / int(denominator) if int(numerator) else 1.0
    rotation = next((int(float(d["rotation"])) for d in video.get("side_data_list", []) if "rotation" in d), 0)
    rate_n, _, rate_d = video["avg_frame_rate"].partition("/")
    return Streams(
        frames=int(video["nb_read_frames"]),
        # The last frame lasts one frame time (the mean one, for variable timing).
        video_seconds=(times[-1] - times[0]) * len(times) / (len(times) - 1),
        width=int(video["width"]),
        height=int(video["height"]),
        sar=sar,
        rotation=rotation % 360,
        rate=int(rate_n) / int(rate_d),
        video_start=times[0],
        audio_starts=[float(s.get("start_time") or 0) for s in data["streams"] if s["codec_type"] == "audio"],
        kinds=[s["codec_type"] for s in data["streams"]],
        times=tuple(times),
    )


def streams(path: Path) -> Streams:
    """``_streams``, read once per version of the file."""
    status = path.stat()
    return _streams(path, (status.st_mtime_ns, status.st_size))


def decoded_audio_md5(path: Path) -> list[str]:
    """The md5 of every audio stream's decoded samples."""
    audio = [s for s in ffprobe(path, "-show_streams")["streams"] if s["codec_type"] == "audio"]
    return [
        subprocess.run(
            ["ffmpeg", "-v", "error", "-i", str(path), "-map", f"0:{s['index']}", "-f", "md5", "-"],
            capture_output=True, check=True, text=True,
        ).stdout.strip()
        for s in audio
    ]


def grey_frames(path: Path, width: int = 96, height: int = 54) -> np.ndarray:
    """Every decoded frame (upright, as players show it), grey and small: (frames, height, width)."""
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-vf", f"scale={width}:{height},format=gray",
         "-fps_mode", "passthrough", "-f", "rawvideo", "-"],
        capture_output=True, check=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width).astype(np.float32)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """Makes each case's source on first use, runs the flow on it once, and keeps what it gave."""
    root = tmp_path_factory.mktemp("hostile")
    made: dict[str, tuple[Path, str]] = {}
    runs: dict[str, tuple] = {}

    def source(name: str) -> Path:
        if name not in made:
            case = CASES[name]
            folder = root / name / "source"
            folder.mkdir(parents=True)
            (folder / "subs.srt").write_text("1\n00:00:00,500 --> 00:00:01,500\nhello\n\n2\n00:00:02,000 --> 00:00:02,800\nworld\n")
            path = folder / case.file
            for command in case.make:
                args = [a.replace("{out}", str(path)).replace("{dir}", str(folder)) for a in command]
                subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True, capture_output=True)
            for helper in ("subs.srt", "raw.mp4"):
                (folder / helper).unlink(missing_ok=True)
            made[name] = (path, sha256(path))
        return made[name][0]

    def run(name: str):
        if name not in runs:
            case = CASES[name]
            path = source(name)
            out_dir = root / name / "out"
            out_dir.mkdir()
            output = str(out_dir / case.output) if case.output else None
            try:
                result = modify_video(
                    **flow_arguments(ModifyVideoParameters(
                        source=str(path), prompt="black and white", mode="reimagine_3", output=output,
                        max_segment_seconds=2, store_dir=str(root / "store"),
                    ))
                )
                runs[name] = (path, Path(result.output), result)
            except Exception as error:  # kept, so that every test of this case sees it without a re-run
                runs[name] = error
        if isinstance(runs[name], Exception):
            raise runs[name]
        return runs[name]

    source.run = run
    source.sha256 = lambda name: made[name][1]
    return source


@pytest.mark.parametrize("name", list(CASES))
def test_output_keeps_frames_length_size_and_audio(hostile, name):
    case = CASES[name]
    source, output, result = hostile.run(name)
    before, after = streams(source), streams(output)

    assert output.is_file()
    expected_suffix = case.suffix or (Path(case.output).suffix if case.output else source.suffix)
    assert output.suffix == expected_suffix
    if case.output is None:
        assert output.parent == source.parent and output.name.startswith(source.stem + ".modified")
    assert result.segments >= 2  # at least one seam

    # Frames and length.
    assert after.frames == before.frames + case.extra_frames == result.frames
    assert abs(after.video_seconds - before.video_seconds) <= 1 / after.rate

    # Shown as the source is shown: upright, same size (rounded down to even), same aspect.
    shown = (before.height, before.width) if before.rotation in (90, 270) else (before.width, before.height)
    assert after.rotation == 0
    assert (after.width, after.height) == tuple(max(2, v - v % 2) for v in shown)
    assert after.display_aspect == pytest.approx(before.display_aspect, rel=0.01)

    # Every audio stream, packets unchanged (and decoded samples, where the container allows).
    assert after.kinds.count("audio") == before.kinds.count("audio")
    if case.packet_audio_equal:
        assert audio_md5(output) == audio_md5(source)
    if case.decoded_audio_equal:
        assert decoded_audio_md5(output) == decoded_audio_md5(source)

    # The source untouched, no work files left beside the output.
    assert sha256(source) == hostile.sha256(name)
    assert not [p.name for p in output.parent.iterdir() if p.name.startswith(".")]


CONTENT_CASES = [name for name, case in CASES.items() if case.content]


@pytest.mark.parametrize("name", CONTENT_CASES)
def test_each_output_frame_shows_the_source_frame_of_its_time(hostile, name):
    """With "black and white" the local backend keeps luma: each output frame must look most like the
    source frame shown at its time (counted from the first frame), and the audio must keep its offset."""
    source, output, _ = hostile.run(name)
    before, after = streams(source), streams(output)
    ours, theirs = grey_frames(output), grey_frames(source)
    distance = np.abs(ours[:, None] - theirs[None]).mean(axis=(2, 3))
    shown = distance.argmin(axis=1)
    assert distance[np.arange(len(ours)), shown].max() < 2.0  # the same pictures, grey (orientation, range)

    # The source frame on screen at each output frame's time, by the rule of ffmpeg's fps filter.
    ticks = (np.array(before.times) - before.video_start) * after.rate
    slots = np.floor(ticks + 0.5)
    expected = np.array([np.flatnonzero(slots <= i).max() for i in range(len(ours))])
    if np.abs(ticks - slots).max() > 0.1:
        # Variable timing resampled to a constant rate: within one frame of its time, in order.
        assert np.abs(shown - expected).max() <= 1, list(zip(shown, expected))
        assert (np.diff(shown) >= 0).all()
    else:
        assert shown.tolist() == expected.tolist()

    # Audio against video: the offset between their starts kept within half a frame.
    for source_start, output_start in zip(before.audio_starts, after.audio_starts):
        assert abs((output_start - after.video_start) - (source_start - before.video_start)) <= 0.5 / after.rate


def test_truncated_mp4_with_its_index_first_is_refused(tmp_path):
    """A download cut off at 60 % whose moov (index) is at the front: ffprobe reads the header, not the frames."""
    whole = tmp_path / "whole.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", *lavfi(VIDEO, TONE), *X264, "-c:a", "aac", "-movflags", "+faststart", "-y", str(whole)],
        check=True,
    )
    source = tmp_path / "cut.mp4"
    data = whole.read_bytes()
    source.write_bytes(data[: len(data) * 60 // 100])
    assert streams(source).frames < 75  # what a player can show
    output = tmp_path / "out" / "out.mp4"
    with pytest.raises(InvalidInputError, match="cut.mp4: its header lists 75 frames but only .* cut short"):
        modify_video(**flow_arguments(ModifyVideoParameters(source=str(source), prompt="black and white", output=str(output),
                                           store_dir=str(tmp_path / "store"))))
    assert not output.parent.exists()


def _truncated(folder: Path) -> Path:
    """The first 60 % of an MP4 whose index (moov) is at its end: what an interrupted copy leaves."""
    whole = folder / "whole.mp4"
    subprocess.run(["ffmpeg", "-v", "error", *lavfi(VIDEO, TONE), *X264, "-c:a", "aac", "-y", str(whole)], check=True)
    source = folder / "cut clip.mp4"
    data = whole.read_bytes()
    source.write_bytes(data[: len(data) * 60 // 100])
    whole.unlink()
    return source


def _empty(folder: Path) -> Path:
    source = folder / "empty clip.mp4"
    source.write_bytes(b"")
    return source


def _made(name: str):
    def make(folder: Path, hostile) -> Path:
        source = folder / CASES[name].file
        source.write_bytes(hostile(name).read_bytes())
        return source

    return make


# Each: how the source is made, the output asked for, the message, and which path it names first.
REFUSED = {
    "truncated": (lambda folder, hostile: _truncated(folder), "out.mp4", r"not a readable video: the file is cut short", "source"),
    "empty": (lambda folder, hostile: _empty(folder), "out.mp4", r"empty \(0 bytes\); give a video file", "source"),
    "webm-to-avi": (_made("webm"), "out.avi", r"unsupported output extension '\.avi'; use one of", "output"),
    "avi-pcm-to-mp4": (
        _made("avi-pcm"), "out.mp4", r"MP4 cannot carry the source's pcm_s16le audio unchanged; use a \.mov or \.mkv",
        "output",
    ),
    "mkv-vorbis-to-mp4": (
        _made("mkv-vorbis"), "out.mp4", r"MP4 cannot carry the source's vorbis audio unchanged; use a \.mov or \.mkv",
        "output",
    ),
}


@pytest.mark.parametrize("name", REFUSED)
def test_unusable_input_is_refused_naming_it_and_writing_nothing(hostile, tmp_path, name):
    make, output_name, message, named = REFUSED[name]
    folder = tmp_path / "source"
    folder.mkdir()
    source = make(folder, hostile)
    before = sha256(source)
    output = tmp_path / "out" / output_name
    with pytest.raises(InvalidInputError, match=message) as refused:
        modify_video(**flow_arguments(ModifyVideoParameters(source=str(source), prompt="black and white", output=str(output),
                                           store_dir=str(tmp_path / "store"))))
    # The message starts with the file at fault: the source, or the output path that cannot be written.
    assert str(refused.value).startswith(f"{source if named == 'source' else output}: ")
    assert sha256(source) == before
    assert [p.name for p in folder.iterdir()] == [source.name]
    assert not (tmp_path / "out").exists() and not (tmp_path / "store").exists()


@pytest.mark.parametrize("make", [_truncated, _empty], ids=["truncated", "empty"])
def test_cli_refuses_a_broken_file_in_one_line(tmp_path, make):
    folder = tmp_path / "source"
    folder.mkdir()
    source = make(folder)
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    done = subprocess.run(
        [sys.executable, "-m", "prefect_modify_video.cli", "run", str(source), "--output", str(tmp_path / "out" / "o.mp4"),
         "--store", str(tmp_path / "store"), "--json"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"error: {source}: ")
    assert done.stdout == ""
    assert [p.name for p in folder.iterdir()] == [source.name]
    assert not (tmp_path / "out").exists() and not (tmp_path / "store").exists()
