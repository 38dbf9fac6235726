"""Cutting segments out of a source, conforming returned clips, and joining them with the source's audio.

Every function here writes its output atomically (a temporary file beside it, then a rename).
"""

from __future__ import annotations

import logging
import math
from fractions import Fraction
from pathlib import Path

import ffmpeg

from prefect_modify_video.errors import ClipValidationError, InvalidInputError
from prefect_modify_video.media.ffmpeg import atomic_destination, encoder_threads, write_with_ffmpeg
from prefect_modify_video.media.plan import Segment
from prefect_modify_video.media.probe import VideoInfo, frame_seek_seconds, probe_video

logger = logging.getLogger(__name__)

# Extracted clips go to a service that re-encodes them: fast, but visually lossless.
EXTRACT_ENCODE = {"vcodec": "libx264", "preset": "veryfast", "crf": 16, "pix_fmt": "yuv420p"}
# What the local backend writes: like a service's answer, it is conformed afterwards, so speed first.
LOCAL_ENCODE = {"vcodec": "libx264", "preset": "ultrafast", "crf": 14, "pix_fmt": "yuv420p"}
# Conformed clips are what the user gets: x264's default speed, a quality close to the source's.
CONFORM_ENCODE = {"vcodec": "libx264", "preset": "medium", "crf": 18, "pix_fmt": "yuv420p"}
# Bumped whenever conform's output changes, so cached results made by an older one are not reused.
CONFORM_VERSION = "1"

# Audio codecs the MP4 muxer can carry as they are.
MP4_AUDIO_CODECS = {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac", "mp2", "mp1"}
MP4_EXTENSIONS = {".mp4", ".m4v"}
OUTPUT_EXTENSIONS = MP4_EXTENSIONS | {".mov", ".mkv"}


def _even(value: float) -> int:
    return max(2, int(value) - int(value) % 2)


def service_size(info: VideoInfo, max_dimension: int | None) -> tuple[int, int]:
    """Size of the clips sent to a service: upright, square pixels, even, longest side capped."""
    numerator, _, denominator = info.sample_aspect_ratio.partition(":")
    sar = Fraction(int(numerator), int(denominator or 1)) if numerator.isdigit() else Fraction(1)
    width, height = float(info.display_width), float(info.display_height)
    if info.rotation in (90, 270):
        height *= float(sar)
    else:
        width *= float(sar)
    if max_dimension and max(width, height) > max_dimension:
        scale = max_dimension / max(width, height)
        width, height = width * scale, height * scale
    return _even(width), _even(height)


def track_timescale(frame_rate: Fraction) -> int:
    """An MP4 timescale in which every frame lasts a whole number of ticks (at least 10 000)."""
    return frame_rate.numerator * math.ceil(10_000 / frame_rate.numerator)


# Quality steps tried in turn when an extracted clip is over the service's upload cap.
EXTRACT_CRF_STEPS = (16, 22, 28, 34)


def _frames_in(clip: Path) -> int:
    try:
        return probe_video(clip).frames
    except InvalidInputError:
        return 0


def _write_segment(
    info: VideoInfo, segment: Segment, destination: Path, max_dimension: int | None, crf: int, *, seek: bool
) -> None:
    """Encodes the segment's sent frames: after a seek (fast), or picked by number from the start (sure)."""
    rate = Fraction(info.frame_rate)
    width, height = service_size(info, max_dimension)
    if seek:
        start = frame_seek_seconds(segment.sent_first_frame, rate, info.start_offset_s)
        stream = ffmpeg.input(info.path, ss=f"{start:.6f}")[str(info.video_index)].filter("fps", fps=info.frame_rate)
        # A frame or two short at the very end (timestamps rounded onto the constant rate) is padded.
        padding = 2
    else:
        stream = (
            ffmpeg.input(info.path)[str(info.video_index)]
            .filter("fps", fps=info.frame_rate)
            .filter("trim", start_frame=segment.sent_first_frame, end_frame=segment.end_frame)
            .filter("setpts", "PTS-STARTPTS")
        )
        padding = segment.sent_frames
    stream = (
        stream.filter("scale", width, height, flags="bicubic")
        .filter("setsar", "1")
        .filter("tpad", stop_mode="clone", stop=padding)
    )
    threads = {"threads": encoder_threads()} if encoder_threads() else {}
    args = stream.output(
        "out.mp4",
        an=None,
        r=info.frame_rate,
        **{"frames:v": segment.sent_frames, "movflags": "+faststart"},
        **{**EXTRACT_ENCODE, "crf": crf},
        **threads,
    ).get_args()
    write_with_ffmpeg(args[:-1], destination)


def extract_segment(
    info: VideoInfo,
    segment: Segment,
    destination: Path,
    *,
    max_dimension: int | None = None,
    max_bytes: int | None = None,
) -> Path:
    """Cuts ``segment`` out of the source, frame-exact, as a clip a service accepts.

    The clip holds the segment's sent frames: its own plus its overlap before (``Segment.sent_frames``).
    The clip is re-encoded (not stream-copied, so it starts on the exact frame), at the
    source's constant frame rate, upright (rotation baked in), with square pixels, an even
    size no larger than ``max_dimension`` on its longest side, and without audio. A clip over
    ``max_bytes`` is encoded again at lower quality until it fits. Frames are found by seeking
    (``frame_seek_seconds``); where seeking fails on a file, by decoding it from the start.

    Returns:
        ``destination``.

    Raises:
        InvalidInputError: the clip is over ``max_bytes`` even at the lowest quality step.
    """
    for crf in EXTRACT_CRF_STEPS:
        _write_segment(info, segment, destination, max_dimension, crf, seek=True)
        if _frames_in(destination) < segment.sent_frames:
            # Seeking failed on this file (some MPEG-TS do): decode from the start instead.
            logger.warning("%s: seeking to segment %s failed; decoding from the start", info.path, segment.name)
            _write_segment(info, segment, destination, max_dimension, crf, seek=False)
        if max_bytes is None or destination.stat().st_size <= max_bytes:
            return destination
    size = destination.stat().st_size
    destination.unlink(missing_ok=True)
    raise InvalidInputError(
        f"{info.path}: segment {segment.name} is {size / 1e6:.0f} MB even at low quality, over the service's "
        f"{max_bytes / 1e6:.0f} MB cap; use a shorter --max-segment-seconds"
    )


def conform_clip(clip: Path, info: VideoInfo, segment: Segment, destination: Path) -> Path:
    """Brings a returned clip back to the source's frame rate, size and the segment's exact sent frame count.

    A clip whose length differs a little from the segment's (services return 24 fps) is
    retimed to the segment's length, then resampled to the source's rate; a missing last
    frame is repeated. All conformed clips share one codec setup so they join by stream copy.

    Returns:
        ``destination``.
    """
    rate = Fraction(info.frame_rate)
    returned = probe_video(clip)
    returned_seconds = returned.frames / Fraction(returned.frame_rate)
    stretch = Fraction(segment.sent_frames) / rate / returned_seconds
    stream = ffmpeg.input(str(clip)).video
    if stretch != 1:
        stream = stream.filter("setpts", f"(PTS-STARTPTS)*{float(stretch):.9f}")
    stream = (
        stream.filter("fps", fps=info.frame_rate)
        .filter("scale", info.output_width, info.output_height, flags="bicubic")
        .filter("setsar", info.sample_aspect_ratio.replace(":", "/"))
        .filter("tpad", stop_mode="clone", stop=segment.sent_frames)
    )
    args = stream.output(
        "out.mp4",
        an=None,
        r=info.frame_rate,
        video_track_timescale=track_timescale(rate),
        **{"frames:v": segment.sent_frames},
        **CONFORM_ENCODE,
    ).get_args()
    return write_with_ffmpeg(args[:-1], destination)


def check_output_path(info: VideoInfo, output: Path) -> None:
    """Refuses an output path that would overwrite the source or cannot hold its audio.

    Raises:
        InvalidInputError: naming the path and what to do.
    """
    source = Path(info.path).resolve()
    if output.resolve() == source:
        raise InvalidInputError(f"{output}: the output path is the source itself; choose another output path")
    if output.exists() and output.is_dir():
        raise InvalidInputError(f"{output}: the output path is a directory; give a file name")
    if output.suffix.lower() not in OUTPUT_EXTENSIONS:
        raise InvalidInputError(
            f"{output}: unsupported output extension {output.suffix!r}; use one of {sorted(OUTPUT_EXTENSIONS)}"
        )
    if output.suffix.lower() in MP4_EXTENSIONS:
        unfit = sorted({a.codec for a in info.audio_streams if a.codec not in MP4_AUDIO_CODECS})
        if unfit:
            raise InvalidInputError(
                f"{output}: MP4 cannot carry the source's {', '.join(unfit)} audio unchanged; "
                "use a .mov or .mkv output path"
            )


def default_output_path(source: Path) -> Path:
    """``<stem>.modified<ext>`` beside the source, in a container that can carry its audio."""
    suffix = source.suffix.lower() if source.suffix.lower() in OUTPUT_EXTENSIONS else ".mkv"
    return source.with_name(f"{source.stem}.modified{suffix}")


def write_frame_image(
    video: str | Path, frame_index: int, destination: Path, size: tuple[int, int] | None = None
) -> Path:
    """Writes frame ``frame_index`` (from 0, in decoding order) of a video as a PNG, upright.

    Args:
        video: The video.
        frame_index: Which frame.
        destination: The PNG (written atomically).
        size: ``(width, height)`` to scale to; the video's own size when omitted.

    Returns:
        ``destination``.
    """
    filters = [f"select=eq(n\\,{int(frame_index)})"]
    if size is not None:
        filters.append(f"scale={size[0]}:{size[1]}:flags=bicubic,setsar=1")
    args = ["-i", str(video), "-map", "0:v:0", "-vf", ",".join(filters), "-fps_mode", "passthrough", "-frames:v", "1"]
    return write_with_ffmpeg(args, destination)


def _concat_line(path: Path) -> str:
    escaped = str(path.resolve()).replace("\\", "\\\\").replace("'", "'\\''")
    return f"file '{escaped}'\n"


def join_segments(clips: list[Path], info: VideoInfo, destination: Path) -> Path:
    """Joins conformed clips by stream copy and adds every audio stream of the source, copied once.

    The video starts as far after the audio as the source's does (``info.start_offset_s``).

    Args:
        clips: Conformed clips in order.
        info: The source; its audio streams are copied as they are.
        destination: The output file; written atomically.

    Returns:
        ``destination``.
    """
    if not clips:
        raise InvalidInputError("join: no clips to join")
    destination.parent.mkdir(parents=True, exist_ok=True)
    concat_list = atomic_destination(destination).with_suffix(".txt")
    concat_list.write_text("".join(_concat_line(c) for c in clips))
    offset = ["-itsoffset", f"{info.start_offset_s:.6f}"] if info.start_offset_s > 0 else []
    args = [
        *offset, "-f", "concat", "-safe", "0", "-i", str(concat_list),
        "-i", info.path,
        "-map", "0:v:0", "-map", "1:a?", "-c", "copy",
        "-map_metadata", "-1", "-map_chapters", "-1",
    ]
    if destination.suffix.lower() in MP4_EXTENSIONS | {".mov"}:
        args += ["-movflags", "+faststart"]
    try:
        return write_with_ffmpeg(args, destination)
    finally:
        concat_list.unlink(missing_ok=True)


def length_tolerance_seconds(segment: Segment) -> float:
    """How far a returned clip's length may be from its segment's: 0.5 s or 15 %, whichever is more."""
    return max(0.5, 0.15 * segment.sent_duration_s)


def check_returned_clip(clip: Path, segment: Segment, tolerance_s: float | None = None) -> VideoInfo:
    """Checks that a service's answer is a video with frames and about the segment's length.

    Raises:
        ClipValidationError: it is not a video, has no frames, or its length is off by more
            than ``tolerance_s`` (default ``length_tolerance_seconds(segment)``).
    """
    try:
        returned = probe_video(clip)
    except InvalidInputError as error:
        raise ClipValidationError(f"segment {segment.name}: the answer is not a usable video: {error}") from error
    tolerance = length_tolerance_seconds(segment) if tolerance_s is None else tolerance_s
    seconds = returned.frames / returned.fps
    if abs(seconds - segment.sent_duration_s) > tolerance:
        raise ClipValidationError(
            f"segment {segment.name}: the answer lasts {seconds:.2f} s but the segment "
            f"{segment.sent_duration_s:.2f} s (tolerance {tolerance:.2f} s)"
        )
    return returned
