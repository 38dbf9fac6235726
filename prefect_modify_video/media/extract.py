"""Cutting a segment out of a source as the clip a service is sent, and single frames as images.

Every function here writes its output atomically (``media.files.atomic_write``).
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import ffmpeg

from prefect_modify_video.errors import InvalidInputError
from prefect_modify_video.media.anchor import write_with_frame_sums
from prefect_modify_video.media.ffmpeg import encoder_threads, write_with_ffmpeg
from prefect_modify_video.media.pending import conformed_reading
from prefect_modify_video.media.plan import Segment
from prefect_modify_video.media.probe import VideoInfo, frame_seek_seconds, probe_video

logger = logging.getLogger(__name__)

EXTRACT_VERSION = "1"
"""Bumped whenever what is sent for a frame range changes (frame selection, size rules, filters), so
that answers to other input are not reused (it is part of every segment's store key)."""
# Extracted clips go to a service that re-renders them: x264's fastest preset (half the CPU of
# veryfast here, files about 2.4 times larger), at a quality that stays visually lossless.
EXTRACT_ENCODE = {"vcodec": "libx264", "preset": "ultrafast", "crf": 16, "pix_fmt": "yuv420p"}


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
        if segment.pad_frames:
            # The padding repeats the segment's last frame, not the frames after it.
            stream = stream.filter("trim", end_frame=segment.sent_frames)
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
    sent_rate = rate / segment.frame_step
    if segment.frame_step > 1:
        # One frame in frame_step, from the first: on the source's exact grid, each sent frame is a source frame.
        stream = stream.filter("fps", fps=f"{sent_rate.numerator}/{sent_rate.denominator}")
        padding = -(-padding // segment.frame_step)
    # A clip under the service's shortest input ends with copies of its last frame (pad_frames).
    padding += segment.pad_frames
    stream = (
        stream.filter("scale", width, height, flags="bicubic")
        .filter("setsar", "1")
        .filter("tpad", stop_mode="clone", stop=padding)
    )
    # The source statistics the finish step anchors colours with are taken on the way (``anchor.segment_statistics``).
    write_with_frame_sums(
        stream,
        destination,
        an=None,
        r=f"{sent_rate.numerator}/{sent_rate.denominator}",
        **{"frames:v": segment.clip_frames, "movflags": "+faststart"},
        **{**EXTRACT_ENCODE, "crf": crf},
        **({"threads": encoder_threads()} if encoder_threads() else {}),
    )


def _fits(clip: Path, segment: Segment, max_bytes: int | None) -> bool:
    """Whether an extracted ``clip`` holds the segment's frames and is within ``max_bytes``."""
    return (max_bytes is None or clip.stat().st_size <= max_bytes) and _frames_in(clip) >= segment.clip_frames


def extract_segment(
    info: VideoInfo,
    segment: Segment,
    destination: Path,
    *,
    max_dimension: int | None = None,
    max_bytes: int | None = None,
    reuse: bool = False,
) -> Path:
    """Cuts ``segment`` out of the source, frame-exact, as a clip a service accepts.

    The clip holds the segment's sent frames: its own plus its overlap before (``Segment.sent_frames``),
    one in ``Segment.frame_step`` of them for a service whose frame-rate cap the source is over (a 60 fps
    source goes at 30 fps: ``Segment.clip_frames`` frames, each a source frame). The clip is re-encoded
    (not stream-copied, so it starts on the exact frame), at the source's constant frame rate (divided
    by the step), padded with ``Segment.pad_frames`` copies of its last frame (a service's shortest input), upright (rotation baked in), with square pixels, an even
    size no larger than ``max_dimension`` on its longest side, and without audio. A clip over
    ``max_bytes`` is encoded again at lower quality until it fits. Frames are found by seeking
    (``frame_seek_seconds``); where seeking fails on a file, by decoding it from the start.

    Args:
        reuse: Keep a clip already at ``destination`` that has the segment's frames and fits
            ``max_bytes`` (a retried segment's own clip: it is written atomically, so one there is whole).

    Returns:
        ``destination``.

    Raises:
        InvalidInputError: the clip is over ``max_bytes`` even at the lowest quality step.
    """
    if reuse and destination.is_file() and _fits(destination, segment, max_bytes):
        return destination
    for crf in EXTRACT_CRF_STEPS:
        _write_segment(info, segment, destination, max_dimension, crf, seek=True)
        if _frames_in(destination) < segment.clip_frames:
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


def write_frame_image(
    video: str | Path, frame_index: int, destination: Path, size: tuple[int, int] | None = None
) -> Path:
    """Writes frame ``frame_index`` (from 0, in decoding order; a pending clip's: as conformed) of a video as a PNG, upright.

    Args:
        video: The video.
        frame_index: Which frame.
        destination: The PNG (written atomically).
        size: ``(width, height)`` to scale to; the video's own size when omitted.

    Returns:
        ``destination``.
    """
    # A pending conformed clip (``media.pending``) is numbered as conformed: through its recipe.
    filters = [*conformed_reading(video).filters, f"select=eq(n\\,{int(frame_index)})"]
    if size is not None:
        filters.append(f"scale={size[0]}:{size[1]}:flags=bicubic,setsar=1")
    args = ["-i", str(video), "-map", "0:v:0", "-vf", ",".join(filters), "-fps_mode", "passthrough", "-frames:v", "1"]
    return write_with_ffmpeg(args, destination)
