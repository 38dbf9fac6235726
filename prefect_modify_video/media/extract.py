"""Cutting a segment out of a source as the clip a service is sent, and single frames as images.

Every function here writes its output atomically (``media.files.atomic_write``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, TypeVar

import ffmpeg

from prefect_modify_video.errors import InvalidInputError
from prefect_modify_video.media.anchor import FrameSums, frame_sums_of, statistics_scaling, write_with_frame_sums
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
# Measured on bench/overhead.py's source (5 clips, 1812 frames): the extract is about 4.2 s of CPU
# decoding (0.8 s of it frames before a segment's start, from the source's previous keyframe) and
# 8.7 s encoding. Tried, not kept: ``-qp 10`` (the PSNR of crf 16 on clean pictures) saves 1.4 s
# but, not adapting to the picture, makes grainy clips 1.7 times larger (nearer the upload cap);
# the source's decoder on one thread, x264 on one thread, ``-tune zerolatency``: no gain measured.
# Not built: sending the source's own packets (``-c copy``) where a clip could be. A copy needs the
# clip to start on a source keyframe and end just before one (B-frames), with no padding, no frame
# step, no scaling; on that source only 2 of 5 clips qualify (x264 put no keyframe on the cut at
# 20 s), and the colour statistics an extract taps on the way then need a decode of their own
# (``sent_frame_sums``). Measured with every clip copied: 4.8 s of CPU instead of 15.4 s, the service
# run about 1.4 times the plain transcode. Not worth sending a paid service another kind of file
# (edit lists, the source's own profile and bitrate).
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


def frames_in(clip: Path) -> int:
    """The frames of a clip just written (0 when it holds none: ffmpeg writes an empty file where a seek overshoots)."""
    try:
        return probe_video(clip).frames
    except InvalidInputError:
        return 0


@dataclass(frozen=True)
class SentReading:
    """One ffmpeg reading of a segment's sent frames from the source: input options, the stream, its filters.

    The filters are declared once, as ``(name, args, options)``, and given both ways: as an ffmpeg-python
    stream (``stream``, the extract encode's) and as filter text (``filter_text``, for a command that adds
    its own filters after them, as the ``local`` backend's looks).
    """

    path: str
    input_options: tuple[tuple[str, str], ...]
    stream_index: int
    filters: tuple[tuple[str, tuple, tuple[tuple[str, object], ...]], ...]

    def stream(self):
        """The frames as an ffmpeg-python stream."""
        stream = ffmpeg.input(self.path, **dict(self.input_options))[str(self.stream_index)]
        for name, args, options in self.filters:
            stream = stream.filter(name, *args, **dict(options))
        return stream

    def input_args(self) -> list[str]:
        """ffmpeg arguments that open the source and map the video stream (``-vf`` takes ``filter_text``)."""
        options = [item for key, value in self.input_options for item in (f"-{key}", str(value))]
        return [*options, "-i", self.path, "-map", f"0:{self.stream_index}"]

    def filter_text(self) -> str:
        """The filters as an ffmpeg filter chain."""
        parts = []
        for name, args, options in self.filters:
            values = [str(arg) for arg in args] + [f"{key}={value}" for key, value in options]
            parts.append(f"{name}={':'.join(values)}" if values else name)
        return ",".join(parts)


@dataclass(frozen=True)
class SourceSegment:
    """A segment's sent frames as they are in the source: what an extracted clip of them holds, without the clip.

    A backend that reads the source itself (``ModifyBackend.reads_source``) gets this instead of a clip.

    Attributes:
        info: The source (a local file).
        segment: The segment.
        max_dimension: The cap on the longest side of the sent frames (``service_size``).
    """

    info: VideoInfo
    segment: Segment
    max_dimension: int | None = None

    @property
    def frames(self) -> int:
        """How many frames are sent (``Segment.clip_frames``)."""
        return self.segment.clip_frames

    @property
    def frame_rate(self) -> Fraction:
        """The rate they are sent at: the source's, divided by ``Segment.frame_step``."""
        return Fraction(self.info.frame_rate) / self.segment.frame_step

    @property
    def size(self) -> tuple[int, int]:
        """Their width and height (``service_size``)."""
        return service_size(self.info, self.max_dimension)

    def clip_info(self) -> VideoInfo:
        """The ``VideoInfo`` of a clip holding exactly these frames (rate, size, square pixels, upright, count)."""
        width, height = self.size
        rate = self.frame_rate
        return self.info.model_copy(update={
            "frame_rate": f"{rate.numerator}/{rate.denominator}", "fps": float(rate), "frames": self.frames,
            "width": width, "height": height, "display_width": width, "display_height": height,
            "sample_aspect_ratio": "1:1", "rotation": 0, "comment": "",
        })

    def reading(self, *, seek: bool) -> SentReading:
        """How ffmpeg reads the sent frames: after a seek (fast), or picked by number from the start (sure)."""
        info, segment = self.info, self.segment
        filters: list[tuple[str, tuple, tuple]] = [("fps", (), (("fps", info.frame_rate),))]
        if seek:
            start = frame_seek_seconds(segment.sent_first_frame, Fraction(info.frame_rate), info.start_offset_s)
            input_options: tuple = (("ss", f"{start:.6f}"),)
            if segment.pad_frames:
                # The padding repeats the segment's last frame, not the frames after it.
                filters.append(("trim", (), (("end_frame", segment.sent_frames),)))
            # A frame or two short at the very end (timestamps rounded onto the constant rate) is padded.
            padding = 2
        else:
            input_options = ()
            filters += [
                ("trim", (), (("start_frame", segment.sent_first_frame), ("end_frame", segment.end_frame))),
                ("setpts", ("PTS-STARTPTS",), ()),
            ]
            padding = segment.sent_frames
        if segment.frame_step > 1:
            # One frame in frame_step, from the first: on the source's exact grid, each sent frame is a source frame.
            rate = self.frame_rate
            filters.append(("fps", (), (("fps", f"{rate.numerator}/{rate.denominator}"),)))
            padding = -(-padding // segment.frame_step)
        # A clip under the service's shortest input ends with copies of its last frame (pad_frames).
        padding += segment.pad_frames
        width, height = self.size
        filters += [
            ("scale", (width, height), (("flags", "bicubic"),)),
            ("setsar", ("1",), ()),
            ("tpad", (), (("stop_mode", "clone"), ("stop", padding))),
        ]
        return SentReading(info.path, input_options, info.video_index, tuple(filters))

    def output_options(self) -> dict:
        """The output options that time the written frames: the sent rate and count (ffmpeg-python names)."""
        rate = self.frame_rate
        return {"r": f"{rate.numerator}/{rate.denominator}", "frames:v": self.frames}


T = TypeVar("T")


def read_sent_frames(source: SourceSegment, use: Callable[[SentReading], T], count: Callable[[T], int]) -> T:
    """Runs ``use`` on a reading of the segment's sent frames after a seek, and where that gave fewer than
    ``source.frames`` frames (``count`` of its result: seeking failed on this file, as on some MPEG-TS), again
    on a reading that decodes the source from the start.

    Returns:
        What ``use`` returned.
    """
    result = use(source.reading(seek=True))
    if count(result) < source.frames:
        logger.warning("%s: seeking to segment %s failed; decoding from the start", source.info.path, source.segment.name)
        result = use(source.reading(seek=False))
    return result


def _write_segment(
    info: VideoInfo, segment: Segment, destination: Path, max_dimension: int | None, crf: int, *, reading: SentReading
) -> int:
    """Encodes the segment's sent frames as ``reading`` gives them (``SourceSegment.reading``); returns the clip's frames."""
    # The source statistics the finish step anchors colours with are taken on the way (``anchor.segment_statistics``).
    write_with_frame_sums(
        reading.stream(),
        destination,
        an=None,
        **SourceSegment(info, segment, max_dimension).output_options(),
        movflags="+faststart",
        **{**EXTRACT_ENCODE, "crf": crf},
        **({"threads": encoder_threads()} if encoder_threads() else {}),
    )
    return frames_in(destination)


def sent_frame_sums(source: SourceSegment) -> FrameSums:
    """The ``FrameSums`` of a segment's sent frames read from the source: an extracted clip's, without the clip.

    What ``anchor.segment_statistics`` reads of an extracted clip, for a segment that had none (its backend
    read the source: ``ModifyBackend.reads_source``); one decode of the segment.
    """
    def sums(reading: SentReading) -> FrameSums:
        # As ``write_with_frame_sums`` taps an extract: the clip's pixel format, then the statistics' size.
        chain = f"{reading.filter_text()},format=yuv420p,{statistics_scaling()}"
        timing = source.output_options()
        args = [*reading.input_args(), "-vf", chain, "-an", "-r", timing["r"], "-frames:v", str(timing["frames:v"]),
                "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"]  # fmt: skip
        return frame_sums_of(args)

    return read_sent_frames(source, sums, lambda found: len(found.sums))


def _fits(clip: Path, segment: Segment, max_bytes: int | None) -> bool:
    """Whether an extracted ``clip`` holds the segment's frames and is within ``max_bytes``."""
    return (max_bytes is None or clip.stat().st_size <= max_bytes) and frames_in(clip) >= segment.clip_frames


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
    source = SourceSegment(info, segment, max_dimension)
    for crf in EXTRACT_CRF_STEPS:
        read_sent_frames(
            source,
            lambda reading: _write_segment(info, segment, destination, max_dimension, crf, reading=reading),  # noqa: B023
            lambda frames: frames,
        )
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
