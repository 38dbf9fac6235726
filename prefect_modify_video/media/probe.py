"""Probing a video with ffprobe into a ``VideoInfo``."""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
import threading
from collections import OrderedDict
from fractions import Fraction
from pathlib import Path
from typing import Iterator, NamedTuple

from pydantic import BaseModel, Field

from prefect_modify_video.errors import FfmpegError, InvalidInputError
from prefect_modify_video.media.ffmpeg import FFPROBE, require_ffmpeg, run_ffmpeg

logger = logging.getLogger(__name__)

# A source whose average rate differs from its nominal rate by more than this is treated as VFR.
VFR_TOLERANCE = 0.002
# What ffprobe says of a file cut short; the error then says what to do.
TRUNCATION_SIGNS = ("moov atom not found", "partial file", "truncat", "end of file")
TRUNCATED_HINT = "the file is cut short (an interrupted recording, download or copy?); copy or export it again"


class AudioStreamInfo(BaseModel):
    """One audio stream of a source."""

    index: int = Field(description="Stream index in the container.")
    codec: str = Field(description="Codec name, e.g. aac.")
    channels: int = Field(default=0, description="Number of channels.")
    sample_rate: int = Field(default=0, description="Samples per second.")


class VideoInfo(BaseModel):
    """What the pipeline needs to know about a source video."""

    path: str = Field(description="The probed file.")
    container: str = Field(description="ffprobe's format name, e.g. mov,mp4,m4a,3gp,3g2,mj2.")
    size_bytes: int = Field(description="File size in bytes.")
    duration_s: float = Field(
        description="Duration of the video stream in seconds: the header's, or the packets' span where they disagree."
    )
    frames: int = Field(
        description="Exact number of video frames shown: the header's, or the packets counted where the header "
        "has none or disagrees with them."
    )
    r_frame_rate: str = Field(description="Nominal frame rate as a fraction, e.g. 30000/1001.")
    avg_frame_rate: str = Field(description="Average frame rate as a fraction.")
    frame_rate: str = Field(description="Frame rate the output is made at, as a fraction.")
    fps: float = Field(description="``frame_rate`` as a number.")
    is_vfr: bool = Field(description="Whether frame timing is variable.")
    width: int = Field(description="Stored width in pixels.")
    height: int = Field(description="Stored height in pixels.")
    sample_aspect_ratio: str = Field(default="1:1", description="Sample (pixel) aspect ratio.")
    rotation: int = Field(default=0, description="Display rotation in degrees (0, 90, 180, 270).")
    display_width: int = Field(description="Stored width after rotation (upright).")
    display_height: int = Field(description="Stored height after rotation (upright).")
    pix_fmt: str = Field(default="", description="Pixel format of the video stream.")
    video_codec: str = Field(description="Codec of the video stream.")
    video_index: int = Field(default=0, description="Index of the video stream in the container.")
    start_offset_s: float = Field(
        default=0.0,
        description="How long after the file's earliest stream the video starts (e.g. behind a late start or "
        "audio priming); frame k is at start_offset_s + k / frame_rate.",
    )
    audio_streams: list[AudioStreamInfo] = Field(default_factory=list, description="Audio streams.")
    header_mismatch: str = Field(
        default="",
        description="How the header's frame count or duration disagreed with the packets (whose timing is used), "
        "or empty.",
    )
    comment: str = Field(default="", description="The container's comment tag (an output of this plugin is marked there).")
    dropped_streams: list[str] = Field(
        default_factory=list,
        description="Streams the output does not carry (subtitles, data, cover art, other video), as 'type:codec'.",
    )

    @property
    def output_width(self) -> int:
        """Width of the output: the display width, rounded down to even for 4:2:0 video."""
        return max(2, self.display_width - self.display_width % 2)

    @property
    def output_height(self) -> int:
        """Height of the output: the display height, rounded down to even for 4:2:0 video."""
        return max(2, self.display_height - self.display_height % 2)


def _fraction(text: str | None) -> Fraction:
    try:
        numerator, _, denominator = (text or "0/1").partition("/")
        value = Fraction(int(numerator), int(denominator or 1))
    except (ValueError, ZeroDivisionError):
        return Fraction(0)
    return value


def _seconds(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "", "N/A") else 0.0
    except ValueError:
        return 0.0


def _rotation(stream: dict) -> int:
    rotation = 0
    tags = stream.get("tags") or {}
    if "rotate" in tags:
        rotation = int(float(tags["rotate"]))
    for side_data in stream.get("side_data_list") or []:
        if "rotation" in side_data:
            # Display matrix rotation is counter-clockwise; the rotate tag is clockwise.
            rotation = -int(float(side_data["rotation"]))
    return rotation % 360


def frame_seek_seconds(frame: int, frame_rate: str | Fraction, start_offset_s: float = 0.0) -> float:
    """The input ``-ss`` that makes frame ``frame`` the first one kept, with the ``fps`` filter at ``frame_rate``.

    ``-ss`` counts from the file's earliest stream, so the video's own start offset is added;
    seeking a quarter frame early makes the ``fps`` filter round the frame's timestamp to 0.
    """
    return max(0.0, start_offset_s + float((frame - Fraction(1, 4)) / Fraction(frame_rate)))


class PacketTiming(NamedTuple):
    """What the packets of one stream say, read from the container without decoding."""

    readable: int
    """Packets that can be read, shown or not (a header listing more means the file is cut short)."""
    shown: int
    """Packets a player shows: those an edit list does not discard."""
    seconds: float
    """Time the shown packets span, from the first one's start to the last one's end."""


def _packet_lines(path: Path, stream_index: int) -> Iterator[str]:
    """ffprobe's ``pts_time,duration_time,flags`` line for each packet of the stream, read as it comes."""
    command = [
        FFPROBE, "-v", "error", "-select_streams", str(stream_index),
        "-show_entries", "packet=pts_time,duration_time,flags", "-of", "csv=p=0", str(path),
    ]  # fmt: skip
    with tempfile.TemporaryFile() as log:
        with subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log) as process:
            assert process.stdout is not None
            try:
                for line in process.stdout:
                    yield line.decode(errors="replace")
            finally:
                process.stdout.close()
                returncode = process.wait()
        if returncode != 0:
            log.seek(0)
            raise FfmpegError(command, returncode, log.read().decode(errors="replace"))


def _packet_timing(path: Path, stream_index: int) -> PacketTiming:
    """Counts the stream's packets and measures the time the shown ones span.

    One pass over the container (``ffprobe -show_entries packet``), no decoding: about a second for
    a two-hour film, in constant memory (the packets are counted as ffprobe lists them). Packets an
    edit list discards (ffprobe flag ``D``, e.g. before the cut point of a ``-c copy`` trim) are read
    but not shown; a packet without a duration lasts the mean frame time.
    """
    readable = shown = timed = 0
    first, last = float("inf"), float("-inf")
    end_with_duration = last_without_duration = float("-inf")
    for line in _packet_lines(path, stream_index):
        if not line.strip():
            continue
        readable += 1
        # Some containers (MPEG-TS) end each line with an empty field: "1.48,0.04,K_,".
        pts, duration, flags = (line.strip().split(",") + ["", "", ""])[:3]
        if "D" in flags:
            continue
        shown += 1
        try:
            start = float(pts)
        except ValueError:
            continue
        timed += 1
        first, last = min(first, start), max(last, start)
        try:
            end_with_duration = max(end_with_duration, start + float(duration))
        except ValueError:
            last_without_duration = max(last_without_duration, start)
    if not timed:
        return PacketTiming(readable, shown, 0.0)
    mean = (last - first) / (timed - 1) if timed > 1 else 0.0
    end = max(end_with_duration, last_without_duration + mean)
    return PacketTiming(readable, shown, end - first)


def _header_disagrees(frames: int, duration: float, packets: PacketTiming) -> str | None:
    """How the header's frame count and duration disagree with the packets, or None when they agree.

    They agree within 2 frames and 2 frame times (an AVI's empty first chunk, a last frame's rounded
    duration), however long the file.
    """
    if packets.shown <= 1 or packets.seconds <= 0:
        return None
    frame_time = packets.seconds / packets.shown
    if abs(frames - packets.shown) > 2 or abs(duration - packets.seconds) > 2 * frame_time + 1e-3:
        return (
            f"its header says {frames} frames in {duration:.3f} s but its packets hold "
            f"{packets.shown} frames in {packets.seconds:.3f} s"
        )
    return None


# Probes of unchanged files, by (path, device, inode, size, modification time): a run probes the same clip
# in several steps (extract, the answer's check, conform, finish, the seam report), and each ffprobe
# costs about 0.1 s of CPU to start. Media files are written by rename (``atomic_write``), so a file
# written again is a new inode with a new time. Bounded: the oldest entries are dropped.
_PROBES: OrderedDict[tuple, VideoInfo] = OrderedDict()
_PROBES_LOCK = threading.Lock()
_PROBES_KEPT = 512


def forget_probes() -> None:
    """Empties the probes kept by ``probe_video`` (a benchmark times each path from scratch)."""
    with _PROBES_LOCK:
        _PROBES.clear()


def probe_video(path: str | Path) -> VideoInfo:
    """Probes a video file (a file probed before and unchanged since is not probed again).

    Args:
        path: A local video file.

    Returns:
        The source's ``VideoInfo``.

    Raises:
        InvalidInputError: the path is missing, not a file, not a video, or has no frames.
    """
    require_ffmpeg()
    path = Path(path)
    if not path.exists():
        raise InvalidInputError(f"{path}: no such file; check the path")
    if not path.is_file():
        raise InvalidInputError(f"{path}: is not a file (a directory?); give a video file")
    stat = path.stat()
    if stat.st_size == 0:
        raise InvalidInputError(f"{path}: the file is empty (0 bytes); give a video file")
    key = (str(path), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    with _PROBES_LOCK:
        known = _PROBES.get(key)
        if known is not None:
            _PROBES.move_to_end(key)
            return known.model_copy(deep=True)
    info = _probe(path)
    with _PROBES_LOCK:
        _PROBES[key] = info.model_copy(deep=True)
        while len(_PROBES) > _PROBES_KEPT:
            _PROBES.popitem(last=False)
    return info


def _probe(path: Path) -> VideoInfo:
    """Probes a video file with ffprobe: its streams, then its packets (``probe_video``)."""
    try:
        output = run_ffmpeg(
            ["-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
            program=FFPROBE,
        )
    except FfmpegError as error:
        lines = [line.strip() for line in error.stderr.strip().splitlines() if line.strip()]
        if any(sign in line.lower() for line in lines for sign in TRUNCATION_SIGNS):
            raise InvalidInputError(f"{path}: not a readable video: {TRUNCATED_HINT}") from error
        reason = lines[-1] if lines else "unreadable"
        raise InvalidInputError(f"{path}: not a readable video ({reason}); give a video file ffmpeg can play") from error
    data = json.loads(output)
    streams = data.get("streams") or []
    video_streams = [
        s for s in streams
        if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")
    ]
    if not video_streams:
        raise InvalidInputError(f"{path}: has no video stream (audio only or not a video); give a video file")
    video = video_streams[0]
    fmt = data.get("format") or {}

    r_rate = _fraction(video.get("r_frame_rate"))
    avg_rate = _fraction(video.get("avg_frame_rate"))
    duration = _seconds(video.get("duration"))
    frames = int(video.get("nb_frames") or 0)
    packets = _packet_timing(path, int(video["index"]))
    # A header may list frames the file no longer holds (a copy cut short, a faststart MP4).
    if frames > 0 and packets.readable < frames - max(2, 0.01 * frames):
        raise InvalidInputError(
            f"{path}: its header lists {frames} frames but only {packets.readable} can be read: {TRUNCATED_HINT}"
        )
    # Where the container gives no count or no length (MKV, WebM, MPEG-TS), the packets do.
    frames = frames if frames > 0 else packets.shown
    duration = duration if duration > 0 else packets.seconds
    if mismatch := _header_disagrees(frames, duration, packets):
        # A header can lie (a patched or badly written MP4, an edit list cutting frames the header
        # still counts): players follow the packets' timestamps, and so does the output.
        logger.debug("%s: %s; using the packets' timing", path, mismatch)
        frames, duration = packets.shown, packets.seconds
    if frames <= 0 or duration <= 0:
        raise InvalidInputError(f"{path}: the video stream has no frames; give a video with content")
    if frames == 1:
        raise InvalidInputError(f"{path}: has a single frame (a still image?); give a video")

    # Variable timing shows as an average rate unlike the nominal one, or (where the container
    # gives no average) as a frame count unlike duration × nominal rate.
    is_vfr = bool(r_rate) and (
        (bool(avg_rate) and abs(float(r_rate - avg_rate)) / float(r_rate) > VFR_TOLERANCE)
        or abs(frames - duration * float(r_rate)) > max(1.5, VFR_TOLERANCE * frames)
    )
    if is_vfr or not r_rate or r_rate > 240:
        # Variable timing: the output is constant-rate with the same frames in the same time.
        rate = (Fraction(frames) / Fraction(duration)).limit_denominator(1001)
    else:
        rate = r_rate

    rotation = _rotation(video)
    width, height = int(video.get("width") or 0), int(video.get("height") or 0)
    sar = video.get("sample_aspect_ratio") or "1:1"
    if _fraction(sar.replace(":", "/")) <= 0:
        sar = "1:1"
    display_width, display_height = width, height
    if rotation in (90, 270):
        display_width, display_height = display_height, display_width

    audio = [
        AudioStreamInfo(
            index=int(s["index"]),
            codec=s.get("codec_name") or "unknown",
            channels=int(s.get("channels") or 0),
            sample_rate=int(s.get("sample_rate") or 0),
        )
        for s in streams
        if s.get("codec_type") == "audio"
    ]
    return VideoInfo(
        path=str(path),
        container=fmt.get("format_name") or "",
        comment=next((str(v) for k, v in (fmt.get("tags") or {}).items() if k.lower() == "comment"), ""),
        size_bytes=path.stat().st_size,
        duration_s=duration,
        frames=frames,
        r_frame_rate=f"{r_rate.numerator}/{r_rate.denominator}",
        avg_frame_rate=f"{avg_rate.numerator}/{avg_rate.denominator}",
        frame_rate=f"{rate.numerator}/{rate.denominator}",
        fps=float(rate),
        is_vfr=is_vfr,
        width=width,
        height=height,
        sample_aspect_ratio=sar,
        rotation=rotation,
        display_width=display_width,
        display_height=display_height,
        pix_fmt=video.get("pix_fmt") or "",
        video_codec=video.get("codec_name") or "",
        video_index=int(video["index"]),
        dropped_streams=[
            f"{s.get('codec_type') or 'unknown'}:{s.get('codec_name') or s.get('codec_tag_string') or 'unknown'}"
            for s in streams
            if s is not video and s.get("codec_type") != "audio"
        ],
        start_offset_s=max(0.0, _seconds(video.get("start_time")) - _seconds(fmt.get("start_time"))),
        audio_streams=audio,
        header_mismatch=mismatch or "",
    )


IMAGE_CODECS = {"png", "mjpeg", "jpeg2000", "webp", "bmp", "tiff", "gif", "ppm", "pgm", "qoi", "jpegls"}


def check_image(path: str | Path) -> Path:
    """Checks that ``path`` is a still image ffmpeg can read (a first frame).

    Raises:
        InvalidInputError: the file is missing, empty or not an image.
    """
    require_ffmpeg()
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"{path}: first frame image not found; check the path")
    if path.stat().st_size == 0:
        raise InvalidInputError(f"{path}: first frame image is empty; give a PNG or JPEG image")
    try:
        output = run_ffmpeg(["-v", "error", "-show_streams", "-of", "json", str(path)], program=FFPROBE)
        streams = json.loads(output).get("streams") or []
        # Decoding one frame proves the picture is whole, not just its header.
        run_ffmpeg(["-i", str(path), "-frames:v", "1", "-f", "null", "-"])
    except FfmpegError:
        streams = []
    if not any(s.get("codec_type") == "video" and s.get("codec_name") in IMAGE_CODECS for s in streams):
        raise InvalidInputError(f"{path}: first frame is not an image; give a PNG or JPEG image")
    return path
