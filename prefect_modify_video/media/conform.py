"""Bringing a service's answer back to the source's frame rate, size and frame count.

Clips meant for the join all share one codec setup (``CONFORM_ENCODE``), so they join by stream
copy. Where the finish step changes the frames anyway, a run writes no frames here: the answer is
stream-copied with the filters that conform it in its comment tag (``pending=True``, ``media.pending``),
and the finish step runs them in the one encode it gives the segment. A clip conformed to
``INTERMEDIATE_ENCODE`` (lossless and fast) serves the same way where frames must be written.
A clip already written as this step would write it (the ``local`` backend's answers: ``conformed_output_args``)
is copied, not encoded again.
Every function here writes its output atomically (``media.files.atomic_write``).
"""

from __future__ import annotations

import hashlib
import json
import math
from fractions import Fraction
from pathlib import Path

import ffmpeg

from prefect_modify_video.errors import FfmpegError
from prefect_modify_video.media.anchor import decode_frame_sums, save_frame_sums, write_with_frame_sums
from prefect_modify_video.media.ffmpeg import write_with_ffmpeg
from prefect_modify_video.media.files import atomic_copy
from prefect_modify_video.media.pending import pending_conform
from prefect_modify_video.media.plan import Segment
from prefect_modify_video.media.probe import VideoInfo, probe_video
from prefect_modify_video.media.seams import seam_keyframe_options

# Conformed clips are what the user gets: x264's default speed, a quality close to the source's.
CONFORM_ENCODE = {"vcodec": "libx264", "preset": "medium", "crf": 18, "pix_fmt": "yuv420p"}
# Conformed clips the finish step encodes again: lossless (nothing lost twice), at x264's fastest.
INTERMEDIATE_ENCODE = {"vcodec": "libx264", "preset": "ultrafast", "qp": 0, "pix_fmt": "yuv420p"}


def track_timescale(frame_rate: Fraction) -> int:
    """An MP4 timescale in which every frame lasts a whole number of ticks (at least 10 000)."""
    return frame_rate.numerator * math.ceil(10_000 / frame_rate.numerator)


def conformed_mark(
    frame_rate: str | Fraction, width: int, height: int, sample_aspect_ratio: str, frames: int, encode: dict
) -> str:
    """The comment tag of a clip written already as ``conform_clip`` would write it: rate, size, frames, codec setup.

    A backend that renders on this machine (``local``) encodes its answer this way, with this tag
    (``conformed_output_args``), and ``conform_clip`` then copies it instead of encoding it again.
    """
    rate = Fraction(frame_rate)
    text = json.dumps(
        [f"{rate.numerator}/{rate.denominator}", width, height, sample_aspect_ratio, frames,
         track_timescale(rate), sorted((key, str(value)) for key, value in encode.items())]
    )  # fmt: skip
    return "conformed " + hashlib.sha256(text.encode()).hexdigest()[:24]


def conformed_output_args(clip: VideoInfo, encode: dict | None = None, *, seam_after: bool = True) -> list[str]:
    """ffmpeg output options that write ``clip``'s frames, unchanged in rate, size and number, as a conformed clip.

    The codec setup is ``encode`` (default ``CONFORM_ENCODE``), the MP4 timescale ``conform_clip``'s,
    and the comment ``conformed_mark``: ``conform_clip`` copies such a clip when it is what it would write.
    With ``seam_after``, a keyframe where the seam report starts reading before the clip's end
    (``seams.seam_keyframe_options``; a clip conform copies is joined as it is only when no overlap follows).
    """
    settings = encode or CONFORM_ENCODE
    rate = Fraction(clip.frame_rate)
    mark = conformed_mark(
        rate, clip.output_width, clip.output_height, clip.sample_aspect_ratio, clip.frames, settings
    )
    keyframe = seam_keyframe_options(clip.frames) if seam_after else {}
    return [
        *[item for key, value in {**settings, **keyframe}.items() for item in (f"-{key}", str(value))],
        "-video_track_timescale", str(track_timescale(rate)), "-metadata", f"comment={mark}",
    ]  # fmt: skip


def conform_clip(
    clip: Path, info: VideoInfo, segment: Segment, destination: Path, *, encode: dict | None = None,
    pending: bool = False,
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
        pending: Write no frames: ``destination`` is the answer's video stream copied, its comment tag the
            filters that conform it (``media.pending``), for ``finish.finish_clip`` to run in its one encode.
            Its ``FrameSums`` are kept beside it all the same.

    Returns:
        ``destination``.
    """
    rate = Fraction(info.frame_rate)
    returned = probe_video(clip)
    settings = encode or CONFORM_ENCODE
    wanted = conformed_mark(
        rate, info.output_width, info.output_height, info.sample_aspect_ratio, segment.sent_frames, settings
    )
    if returned.comment == wanted and returned.frames == segment.sent_frames:
        # Rendered on this machine as this step would write it (``conformed_output_args``): nothing to redo.
        return atomic_copy(clip, destination)
    returned_seconds = returned.frames / Fraction(returned.frame_rate)
    # What was sent lasts clip_frames at the sent rate (one source frame in frame_step, then any padding): the answer
    # is timed onto that, so its frame k shows source frame k * frame_step, and cut to the segment's sent frames.
    stretch = Fraction(segment.clip_frames * segment.frame_step) / rate / returned_seconds
    if pending:
        recipe = pending_conform(
            stretch, info.frame_rate, info.output_width, info.output_height, info.sample_aspect_ratio,
            segment.sent_frames,
        )
        args = ["-i", str(clip), "-map", "0:v:0", "-c", "copy", "-an", "-sn", "-dn", "-map_metadata", "-1",
                "-metadata", f"comment={recipe.tag()}"]  # fmt: skip
        try:
            write_with_ffmpeg(args, destination)
        except FfmpegError:  # a codec MP4 cannot carry as it is: the lossless intermediate instead
            return conform_clip(clip, info, segment, destination, encode=INTERMEDIATE_ENCODE)
        # The statistics from a decode of the answer at its own size (no encode): the conformed frames' timing.
        save_frame_sums(destination, decode_frame_sums(destination))
        return destination
    stream = ffmpeg.input(str(clip)).video
    if stretch != 1:
        stream = stream.filter("setpts", f"(PTS-STARTPTS)*{float(stretch):.9f}")
    stream = (
        stream.filter("fps", fps=info.frame_rate)
        .filter("scale", info.output_width, info.output_height, flags="bicubic")
        .filter("setsar", info.sample_aspect_ratio.replace(":", "/"))
        .filter("tpad", stop_mode="clone", stop=segment.sent_frames)
    )
    # A clip encoded for the join gets a keyframe where the seam report reads the seam after it (none follows
    # an overlap: ``tasks.seams.finished_in_conform``); an intermediate is encoded again by the finish step.
    seam_after = settings != INTERMEDIATE_ENCODE and segment.end_frame < info.frames
    keyframe = seam_keyframe_options(segment.sent_frames) if seam_after else {}
    # The statistics the finish step anchors colours with are taken on the way (``anchor.segment_statistics``).
    return write_with_frame_sums(
        stream,
        destination,
        an=None,
        r=info.frame_rate,
        video_track_timescale=track_timescale(rate),
        **{"frames:v": segment.sent_frames},
        **settings,
        **keyframe,
    )
