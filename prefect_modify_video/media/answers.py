"""A service's answer that covers only part of the clip sent: how much it covers, the rest to send, the pieces joined.

Services sometimes return less than they were sent (a clip cut at their own length cap, a
render stopped early). Such an answer is paid for, so it is kept for the part it covers and only
the missing remainder is sent again. These helpers say how many of the sent clip's frames an
answer covers (after checking that its frames line up with the start of the sent clip), cut the
remainder out of the sent clip, and join the answers of the pieces into one answer for the
whole clip.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np

from prefect_modify_video.errors import ClipValidationError, InvalidInputError
from prefect_modify_video.media.extract import SourceSegment
from prefect_modify_video.media.ffmpeg import run_ffmpeg, write_with_ffmpeg
from prefect_modify_video.media.probe import probe_video

# What the pieces of a segment are compared at: small grey pictures, each normalised to zero mean
# and unit variance, so a restyle's colours and contrast do not matter and the shapes do.
_COMPARE_SIZE = (32, 18)
# An answer lines up with the start of the sent clip when it resembles the sent clip's start at
# least this much less than it resembles the sent clip's end (a tie favours the start: the
# services that cut short keep the beginning).
_ALIGNMENT_MARGIN = 0.05
# The encoding of a remainder cut out of a sent clip: the same as an extracted segment's.
REMAINDER_ENCODE = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "16", "-pix_fmt", "yuv420p"]


def _grey_frames(clip: Path, rate: Fraction, count: int | None = None, skip: int = 0) -> np.ndarray:
    """``count`` frames of ``clip`` (from frame ``skip``) at ``rate``, as normalised small grey pictures."""
    width, height = _COMPARE_SIZE
    select = f",trim=start_frame={skip}" if skip else ""
    args = ["-i", str(clip), "-vf", f"fps={rate}{select},scale={width}:{height}", "-an"]
    if count is not None:
        args += ["-frames:v", str(count)]
    raw = run_ffmpeg([*args, "-f", "rawvideo", "-pix_fmt", "gray", "-"])
    frames = np.frombuffer(raw, dtype=np.uint8).reshape(-1, width * height).astype(np.float64)
    frames -= frames.mean(axis=1, keepdims=True)
    spread = frames.std(axis=1, keepdims=True)
    return frames / np.where(spread > 1e-6, spread, 1.0)


def _likeness(a: np.ndarray, b: np.ndarray) -> float:
    """Mean correlation of two runs of normalised frames, frame by frame."""
    count = min(len(a), len(b))
    return float((a[:count] * b[:count]).mean()) if count else 0.0


def length_tolerance_seconds(sent_seconds: float) -> float:
    """How far an answer's length may be from what was sent and still count as all of it: 0.5 s or 15 %."""
    return max(0.5, 0.15 * sent_seconds)


def covered_frames(answer: Path, sent_clip: Path | SourceSegment) -> int:
    """How many of ``sent_clip``'s frames ``answer`` covers, checking that it lines up with their start.

    An answer within ``length_tolerance_seconds`` of what was sent covers all of it (conform
    retimes it). A shorter one covers the frames its length (at its own frame rate) spans; its
    frames, resampled to the sent clip's rate, must resemble the sent clip's first frames at
    least as much as its last ones (an answer for the end of the clip is refused).

    Args:
        answer: The clip the service returned.
        sent_clip: The clip that was sent, or the segment's frames in the source that a backend read
            itself (``SourceSegment``): its answer must cover them all.

    Returns:
        The number of the sent clip's frames the answer covers, from its first (at most all of them).

    Raises:
        ClipValidationError: the answer is not a video, is longer than what was sent (beyond the
            tolerance), covers no whole frame, or does not line up with the sent clip's start (or,
            read from the source, covers less than all of it).
    """
    if isinstance(sent_clip, SourceSegment):
        sent_frames, rate = sent_clip.frames, sent_clip.frame_rate
    else:
        sent = probe_video(sent_clip)
        sent_frames, rate = sent.frames, Fraction(sent.frame_rate)
    try:
        returned = probe_video(answer)
    except InvalidInputError as error:
        raise ClipValidationError(f"the answer is not a usable video: {error}") from error
    seconds = Fraction(returned.frames) / Fraction(returned.frame_rate)
    sent_seconds = Fraction(sent_frames) / rate
    tolerance = length_tolerance_seconds(float(sent_seconds))
    if abs(float(seconds - sent_seconds)) <= tolerance:
        return sent_frames
    if seconds > sent_seconds:
        raise ClipValidationError(
            f"the answer lasts {float(seconds):.2f} s but {float(sent_seconds):.2f} s were sent (tolerance {tolerance:.2f} s)"
        )
    covered = int(seconds * rate + Fraction(1, 2))
    if covered < 1:
        raise ClipValidationError(f"the answer {answer.name} covers no frame of the {sent_frames} sent")
    if covered < sent_frames and isinstance(sent_clip, SourceSegment):
        raise ClipValidationError(
            f"the answer {answer.name} covers {covered} of the {sent_frames} frames read from the source; "
            "a backend that reads the source answers all of them"
        )
    if covered < sent_frames:
        mine = _grey_frames(answer, rate, covered)
        at_start = _likeness(mine, _grey_frames(sent_clip, rate, covered))
        at_end = _likeness(mine, _grey_frames(sent_clip, rate, covered, skip=sent_frames - covered))
        if at_start + _ALIGNMENT_MARGIN < at_end:
            raise ClipValidationError(
                f"the answer {answer.name} covers {covered} of {sent_frames} frames but does not line up with "
                f"the start of what was sent (likeness {at_start:.2f} at the start, {at_end:.2f} at the end)"
            )
    return covered


def remainder_clip(sent_clip: Path, first_frame: int, destination: Path, *, min_seconds: float | None = None) -> Path:
    """The frames of ``sent_clip`` from ``first_frame`` on, as a clip to send (same size, rate and codec).

    A remainder shorter than ``min_seconds`` (a service's shortest input) ends with copies of its last frame up to it.

    Example:
        >>> from prefect_modify_video.media.sample import make_sample_video
        >>> import tempfile; folder = Path(tempfile.mkdtemp())
        >>> clip = make_sample_video(folder / "c.mp4", seconds=1, width=64, height=36, fps=10, audio=False)
        >>> probe_video(remainder_clip(clip, 4, folder / "rest.mp4")).frames
        6
    """
    sent = probe_video(sent_clip)
    rate = sent.frame_rate
    video_filter = f"trim=start_frame={first_frame},setpts=PTS-STARTPTS"
    if min_seconds:
        shortest = math.ceil(Fraction(min_seconds).limit_denominator(1000) * Fraction(rate))
        if sent.frames - first_frame < shortest:
            video_filter += f",tpad=stop_mode=clone:stop={shortest},trim=end_frame={shortest}"
    args = ["-i", str(sent_clip), "-vf", video_filter, "-an"]
    args += ["-r", str(rate), *REMAINDER_ENCODE, "-movflags", "+faststart"]
    return write_with_ffmpeg(args, destination)


def last_frame_image(clip: Path, destination: Path) -> Path:
    """The last frame of ``clip`` as a PNG: the first frame given with the remainder, for continuity."""
    frames = probe_video(clip).frames
    args = ["-i", str(clip), "-vf", f"select=eq(n\\,{max(frames - 1, 0)})", "-frames:v", "1", "-update", "1"]
    return write_with_ffmpeg(args, destination)


def join_answers(pieces: list[Path], covered: list[int], rate: Fraction, destination: Path) -> Path:
    """Joins the answers of a segment's pieces into one answer at the sent clip's ``rate``.

    Each piece is first resampled to ``rate`` and cut to the frames it covers, then scaled to the
    first piece's size, so the joined clip has exactly ``sum(covered)`` frames.
    """
    first = probe_video(pieces[0])
    args: list[str] = []
    chains = []
    for number, (piece, frames) in enumerate(zip(pieces, covered)):
        args += ["-i", str(piece)]
        chains.append(
            f"[{number}:v:0]fps={rate},scale={first.width}:{first.height},setsar=1,"
            f"tpad=stop_mode=clone:stop={frames},trim=end_frame={frames},setpts=PTS-STARTPTS[p{number}]"
        )
    inputs = "".join(f"[p{n}]" for n in range(len(pieces)))
    graph = ";".join(chains) + f";{inputs}concat=n={len(pieces)}:v=1:a=0[out]"
    args += ["-filter_complex", graph, "-map", "[out]", "-r", str(rate), *REMAINDER_ENCODE, "-movflags", "+faststart"]
    return write_with_ffmpeg(args, destination)
