"""Bringing a service's answer back to the source's frame rate, size and frame count.

Clips meant for the join all share one codec setup (``CONFORM_ENCODE``), so they join by stream
copy. A run conforms to ``INTERMEDIATE_ENCODE`` instead (lossless and fast) where the finish step
changes the frames anyway, so that every output frame goes through the slow final encode once.
Every function here writes its output atomically (``media.files.atomic_write``).
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import ffmpeg

from prefect_modify_video.media.ffmpeg import write_with_ffmpeg
from prefect_modify_video.media.plan import Segment
from prefect_modify_video.media.probe import VideoInfo, probe_video

# What the local backend writes: like a service's answer, it is conformed afterwards, so speed first.
LOCAL_ENCODE = {"vcodec": "libx264", "preset": "ultrafast", "crf": 14, "pix_fmt": "yuv420p"}
# Conformed clips are what the user gets: x264's default speed, a quality close to the source's.
CONFORM_ENCODE = {"vcodec": "libx264", "preset": "medium", "crf": 18, "pix_fmt": "yuv420p"}
# Conformed clips the finish step encodes again: lossless (nothing lost twice), at x264's fastest.
INTERMEDIATE_ENCODE = {"vcodec": "libx264", "preset": "ultrafast", "qp": 0, "pix_fmt": "yuv420p"}


def track_timescale(frame_rate: Fraction) -> int:
    """An MP4 timescale in which every frame lasts a whole number of ticks (at least 10 000)."""
    return frame_rate.numerator * math.ceil(10_000 / frame_rate.numerator)


def conform_clip(
    clip: Path, info: VideoInfo, segment: Segment, destination: Path, *, encode: dict | None = None
) -> Path:
    """Brings a returned clip back to the source's frame rate, size and the segment's exact sent frame count.

    A clip whose length differs a little from the segment's (services return 24 fps) is
    retimed to the segment's length, then resampled to the source's rate; a missing last
    frame is repeated. An answer to a clip sent at a divided rate (``Segment.frame_step``) is
    brought back to every source frame the same way, and the part answering a clip's padding
    (``Segment.pad_frames``) is dropped. All conformed clips share one codec setup so they join by stream copy.

    Args:
        clip: The service's answer.
        info: The source.
        segment: The segment the answer is for.
        destination: The conformed clip (written atomically).
        encode: Codec settings: ``CONFORM_ENCODE`` (default: ready to join) or ``INTERMEDIATE_ENCODE``
            (for ``finish.finish_clip``, which encodes it once more).

    Returns:
        ``destination``.
    """
    rate = Fraction(info.frame_rate)
    returned = probe_video(clip)
    returned_seconds = returned.frames / Fraction(returned.frame_rate)
    # What was sent lasts clip_frames at the sent rate (one source frame in frame_step, then any padding): the answer
    # is timed onto that, so its frame k shows source frame k * frame_step, and cut to the segment's sent frames.
    stretch = Fraction(segment.clip_frames * segment.frame_step) / rate / returned_seconds
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
        **(encode or CONFORM_ENCODE),
    ).get_args()
    return write_with_ffmpeg(args[:-1], destination)
