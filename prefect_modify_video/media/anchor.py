"""Colour anchoring: taking out the colour drift between segments restyled one by one.

A generative service restyles each segment on its own, so each answer comes back with its own
small colour cast and brightness. Anchoring gives every segment one per-channel gain and offset
in YUV (a ``ColourTransfer``) that brings it in line with its neighbours, and applies it with a
weight that may fall from 1 at a seam to ``strength`` inside the segment.

The rule (``plan_anchors``), segment by segment, in order:

* **Segment 0** is the anchor: unchanged (or, given the statistics of a restyled first-frame
  image, its first frames are brought to them).
* **A segment starting inside a shot** (``cut_before=False``): its first frames are brought to
  the last frames of segment ``i - 1`` as anchored, moved by the change the source itself makes
  between those frames (when source statistics are given). The transfer is applied at weight 1
  on the first frame, falling linearly to ``strength`` over ``ramp_frames`` (and rising again to
  1 over the last ``ramp_frames`` when the next seam is inside a shot too).
* **A segment starting on a cut**: its content differs from the previous one, so matching
  statistics across the seam would erase real differences. Instead the segment's whole-clip
  relation to its source is brought to segment 0's: the target is segment 0's (anchored)
  source-to-output transfer applied to this segment's source statistics; the transfer is applied
  at ``cut_strength``. Without source statistics such a segment is left as it is.

Why it reduces an in-shot seam's jump: with the transfer at weight 1 at the seam and no values
clipped, the mean of segment ``i``'s first frames becomes exactly the target, the anchored mean
of segment ``i - 1``'s last frames plus the source's own change; the service's cast on
segment ``i`` is gone from the seam whatever it was, and what is left is the picture's real
change across a few frames. The standard deviations are matched the same way (gains limited
to ``GAIN_RANGE``). Each link matches the previous segment as anchored, so along a long shot
in many segments the services' casts do not add up: only each link's small measuring error
(the picture's change over a few frames that the source does not explain) does.

Measured (tests/test_seams.py, tests/test_fake_drift.py): one shot in two segments whose
answers came back with different casts shows a seam ratio (``seams.measure_seams``) of 17.4;
anchored, 0.74 (0.36 with source statistics). With the fake server's ``drift=1`` (seeds 0-2):
7.2-34 before, 0.89-1.16 after. Applying it (``finish.finish_clip``) costs what a plain re-encode
with the same settings costs (10 s of 1080p on 2 cores: 25.5 s against 27.5 s); statistics take 2.6 s.

One transfer per segment, never re-estimated per frame (that would flicker). Statistics are
read at a small size (``STATISTICS_SIZE``): means do not depend on it, and every comparison
uses the same size. The extract and conform steps take them while they write their clips
(``write_with_frame_sums``: per-frame sums kept beside the clip, from which any window follows), so
the finish step decodes no clip for them. ``finish.finish_clip`` applies each step (``AnchorStep.weights`` per frame),
drops a segment's overlap and blends the next one in, in the same single re-encode.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import ffmpeg
import numpy as np

from prefect_modify_video.errors import InvalidInputError
from prefect_modify_video.media.colour import IDENTITY, ColourTransfer, YuvStatistics
from prefect_modify_video.media.ffmpeg import iter_raw_frames, run_ffmpeg
from prefect_modify_video.media.files import atomic_write
from prefect_modify_video.media.frames import read_frames, yuv420p_planes
from prefect_modify_video.media.pending import PendingConform
from prefect_modify_video.media.probe import probe_video

STATISTICS_SIZE = (160, 90)
"""Frames are scaled to this (area average, aspect ignored) before their statistics are taken."""
WINDOW_FRAMES = 8
"""Frames at each end of a clip whose statistics stand for the picture at a seam."""
GAIN_RANGE = (0.67, 1.5)
"""Drift corrections are small: gains outside this range are clipped."""
STYLE_GAIN_RANGE = (0.25, 4.0)
"""A source-to-output relation may be a strong look (as ``looks.fit_colour_transfer`` allows)."""
MIN_SPREAD = 2.0
"""Standard deviations are floored at this before dividing, so flat pictures get a gain of 1."""
RAMP_FRAMES = 30
"""Default length of the ramp from weight 1 at an in-shot seam to ``strength``."""


@dataclass(frozen=True)
class ClipStatistics:
    """Statistics of one clip, from one decode.

    Attributes:
        first: Statistics of the first ``window`` frames.
        last: Statistics of the last ``window`` frames.
        whole: Statistics of every frame.
        frames: Number of frames decoded.
        window: Frames in ``first`` and ``last``.
    """

    first: YuvStatistics
    last: YuvStatistics
    whole: YuvStatistics
    frames: int
    window: int


@dataclass(frozen=True)
class AnchorStep:
    """What ``apply_anchor`` does to one segment.

    Attributes:
        index: Segment index.
        transfer: The segment's one transfer.
        strength: Weight of the transfer inside the segment.
        ramp_start: Whether the weight starts at 1 (the seam before is inside a shot).
        ramp_end: Whether the weight ends at 1 (the seam after is inside a shot).
        ramp_frames: Frames over which the weight goes from 1 to ``strength``.
        reason: ``anchor``, ``first frame``, ``seam`` (matched to the previous segment),
            ``cut`` (matched to segment 0's look) or ``unchanged``.
    """

    index: int
    transfer: ColourTransfer
    strength: float
    ramp_start: bool
    ramp_end: bool
    ramp_frames: int
    reason: str

    @property
    def is_identity(self) -> bool:
        """Whether applying it changes nothing (the clip may be used as it is)."""
        return self.transfer == IDENTITY

    def weights(self, frames: int) -> np.ndarray:
        """Weight of the transfer on each of a clip's ``frames`` frames (``anchor_weights``)."""
        return anchor_weights(
            frames,
            strength=self.strength,
            ramp_frames=self.ramp_frames,
            ramp_start=self.ramp_start,
            ramp_end=self.ramp_end,
        )


# ----------------------------------------------------------------- statistics


class _Accumulator:
    """Running sums of pixel values and their squares per plane."""

    def __init__(self) -> None:
        self.sums = np.zeros(3)
        self.squares = np.zeros(3)
        self.pixels = np.zeros(3)

    def add(self, frames: np.ndarray) -> None:
        for channel, plane in enumerate(yuv420p_planes(frames, STATISTICS_SIZE)):
            values = plane.astype(np.float64)
            self.sums[channel] += values.sum()
            self.squares[channel] += np.square(values).sum()
            self.pixels[channel] += values.size

    def statistics(self) -> YuvStatistics:
        pixels = np.maximum(self.pixels, 1)
        mean = self.sums / pixels
        return YuvStatistics(mean, np.sqrt(np.maximum(self.squares / pixels - mean**2, 0.0)))


def frames_statistics(frames: np.ndarray) -> YuvStatistics:
    """Statistics of raw yuv420p frames of ``STATISTICS_SIZE`` (array (frames, bytes))."""
    accumulator = _Accumulator()
    accumulator.add(frames)
    return accumulator.statistics()


def statistics_scaling() -> str:
    """The filters that bring frames to ``STATISTICS_SIZE`` before their statistics are taken (area average, yuv420p)."""
    width, height = STATISTICS_SIZE
    return f"scale={width}:{height}:flags=area,format=yuv420p"


def _decode_args(path: str | Path, *, count: int | None = None, filters: Sequence[str] = ()) -> list[str]:
    args = ["-i", str(path), "-map", "0:v:0", "-an", "-sn", "-dn"]
    args += ["-vf", ",".join([*filters, statistics_scaling()]), "-fps_mode", "passthrough"]
    if count is not None:
        args += ["-frames:v", str(count)]
    return [*args, "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"]


def _frame_bytes() -> int:
    width, height = STATISTICS_SIZE
    return width * height * 3 // 2


def clip_statistics(
    path: str | Path,
    *,
    which: Literal["first", "last", "all"] = "first",
    frames: int = WINDOW_FRAMES,
) -> YuvStatistics:
    """Mean and standard deviation of Y, U and V over the first or last ``frames`` frames, or all.

    Works on an image too (``which="first"``, e.g. a restyled first frame).

    Args:
        path: A video (or an image for ``first``).
        which: ``first``, ``last`` or ``all`` frames.
        frames: Frames in the window (ignored for ``all``).

    Returns:
        ``(mean, std)``, each an array of 3.
    """
    if which == "first":
        raw = run_ffmpeg(_decode_args(path, count=frames))
        chunk = np.frombuffer(raw, dtype=np.uint8)
        return frames_statistics(chunk[: len(chunk) - len(chunk) % _frame_bytes()].reshape(-1, _frame_bytes()))
    if which == "last":
        info = probe_video(path)
        window = read_frames(
            path, max(0, info.frames - frames), frames, frame_rate=info.frame_rate, size=STATISTICS_SIZE,
            start_offset_s=info.start_offset_s,
        )
        return frames_statistics(window)
    if which == "all":
        accumulator = _Accumulator()
        for batch in iter_raw_frames(_decode_args(path), _frame_bytes()):
            accumulator.add(batch)
        return accumulator.statistics()
    raise InvalidInputError(f"clip_statistics: which must be first, last or all, not {which!r}")


def segment_statistics(path: str | Path, *, window: int = WINDOW_FRAMES) -> ClipStatistics:
    """First-window, last-window and whole-clip statistics of a clip.

    Read from the frame sums kept beside the clip when it was written (``write_with_frame_sums``);
    a clip without them (or with stale ones) is decoded once.

    Args:
        path: A conformed clip (or an extracted source segment).
        window: Frames at each end.

    Returns:
        The clip's statistics.
    """
    sums = load_frame_sums(path) or decode_frame_sums(path)
    if not len(sums.sums):
        raise InvalidInputError(f"{path}: no frames to take statistics of")
    return sums.statistics(window)


# ----------------------------------------------------------------- statistics kept beside a clip

FRAME_SUMS_SUFFIX = ".sums.json"
"""The file beside a clip (``<clip>.sums.json``) that keeps its ``FrameSums``."""


@dataclass(frozen=True)
class FrameSums:
    """Each frame's sums of Y, U and V values and of their squares, at ``STATISTICS_SIZE``.

    Any window's statistics follow from them, and exactly as ``_Accumulator`` gives them from the
    frames (sums of whole numbers are exact in float64).

    Attributes:
        sums: ``int64`` array (frames, 6): the sums of Y, U and V, then of their squares.
    """

    sums: np.ndarray

    @classmethod
    def of_frames(cls, frames: np.ndarray) -> FrameSums:
        """The sums of raw yuv420p frames of ``STATISTICS_SIZE`` (array (frames, bytes))."""
        planes = yuv420p_planes(frames, STATISTICS_SIZE)
        # Summed into int64 without an int64 copy of the frames, squared in uint16 (255 ** 2 fits): a sixth of the CPU.
        columns = [plane.sum(axis=1, dtype=np.int64) for plane in planes]
        columns += [np.square(plane, dtype=np.uint16).sum(axis=1, dtype=np.int64) for plane in planes]
        return cls(np.stack(columns, axis=1).reshape(-1, 6))

    @classmethod
    def joined(cls, parts: Sequence[FrameSums]) -> FrameSums:
        """The sums of consecutive parts of one clip, in order."""
        return cls(np.concatenate([part.sums for part in parts]) if parts else np.zeros((0, 6), dtype=np.int64))

    def _window(self, rows: np.ndarray) -> YuvStatistics:
        width, height = STATISTICS_SIZE
        accumulator = _Accumulator()
        totals = rows.sum(axis=0).astype(np.float64)
        accumulator.sums, accumulator.squares = totals[:3], totals[3:]
        accumulator.pixels = np.array([width * height, width * height / 4, width * height / 4]) * len(rows)
        return accumulator.statistics()

    def statistics(self, window: int) -> ClipStatistics:
        """First ``window`` frames', last ``window`` frames' and all frames' statistics."""
        return ClipStatistics(
            first=self._window(self.sums[:window]),
            last=self._window(self.sums[-window:]),
            whole=self._window(self.sums),
            frames=len(self.sums),
            window=window,
        )


def _frame_sums_path(clip: str | Path) -> Path:
    return Path(f"{clip}{FRAME_SUMS_SUFFIX}")


def _clip_stamp(clip: str | Path) -> list[int]:
    """What ties kept sums to one writing of the clip: its size and modification time."""
    status = Path(clip).stat()
    return [status.st_size, status.st_mtime_ns]


def save_frame_sums(clip: str | Path, sums: FrameSums) -> Path:
    """Keeps ``sums`` beside ``clip`` (written atomically), tied to the clip as it is now."""
    width, height = STATISTICS_SIZE
    record = {"clip": _clip_stamp(clip), "size": [width, height], "sums": sums.sums.tolist()}
    with atomic_write(_frame_sums_path(clip)) as partial:
        partial.write_text(json.dumps(record, separators=(",", ":")))
    return _frame_sums_path(clip)


def load_frame_sums(clip: str | Path) -> FrameSums | None:
    """The sums kept beside ``clip``, or ``None`` when there are none or the clip was written again since."""
    try:
        record = json.loads(_frame_sums_path(clip).read_text())
        if record["clip"] != _clip_stamp(clip) or record["size"] != list(STATISTICS_SIZE):
            return None
        return FrameSums(np.asarray(record["sums"], dtype=np.int64).reshape(-1, 6))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def frame_sums_of(args: list[str]) -> FrameSums:
    """The sums of the ``STATISTICS_SIZE`` frames an ffmpeg command writes to its pipe, read as it runs."""
    return FrameSums.joined([FrameSums.of_frames(batch) for batch in iter_raw_frames(args, _frame_bytes())])


def decode_frame_sums(clip: str | Path) -> FrameSums:
    """The sums of every frame of a clip, from one decode.

    A pending clip (``media.pending``) is read through its recipe's timing, at its own size (area
    averages to ``STATISTICS_SIZE`` barely depend on the size they start from).
    """
    recipe = PendingConform.from_tag(probe_video(clip).comment)
    return frame_sums_of(_decode_args(clip, filters=recipe.filters(full_size=False) if recipe else ()))


def write_with_frame_sums(stream, destination: Path, **output) -> Path:
    """Writes an ffmpeg-python video ``stream`` to ``destination`` and keeps its ``FrameSums`` beside it.

    The same ffmpeg command writes the clip and, through ``split``, its frames at
    ``STATISTICS_SIZE`` to a pipe that is read while it runs, so the clip is not decoded again for
    its statistics (``segment_statistics``). Both outputs take the frames after conversion to
    ``output["pix_fmt"]``, and the same ``r`` and ``frames:v``.

    Args:
        stream: The video stream to write (an ffmpeg-python node).
        destination: The clip (written atomically, then its sums).
        **output: ffmpeg-python output options of the clip (codec settings among them).

    Returns:
        ``destination``.
    """
    width, height = STATISTICS_SIZE
    split = stream.filter("format", output.get("pix_fmt", "yuv420p")).split()
    clip, tap = split[0], split[1]
    timing = {key: output[key] for key in ("r", "frames:v") if key in output}
    pipe = tap.filter("scale", width, height, flags="area").filter("format", "yuv420p").output(
        "pipe:", format="rawvideo", pix_fmt="yuv420p", **timing
    )
    with atomic_write(destination) as partial:
        args = ["-y", *ffmpeg.merge_outputs(clip.output(str(partial), **output), pipe).get_args()]
        sums = frame_sums_of(args)
    save_frame_sums(destination, sums)
    return destination


# ----------------------------------------------------------------- transfers


def fit_anchor(
    segment_stats: YuvStatistics | tuple[np.ndarray, np.ndarray],
    anchor_stats: YuvStatistics | tuple[np.ndarray, np.ndarray],
    *,
    gain_range: tuple[float, float] = GAIN_RANGE,
) -> ColourTransfer:
    """The per-channel gain and offset that move ``segment_stats`` to ``anchor_stats``.

    gain = anchor std / segment std (both floored at ``MIN_SPREAD``, then clipped to
    ``gain_range``); offset = anchor mean - gain * segment mean. So the segment's mean lands
    exactly on the anchor's, and its spread as near as the gain limits allow.

    Args:
        segment_stats: ``(mean, std)`` of the frames to correct.
        anchor_stats: ``(mean, std)`` they should have.
        gain_range: Lowest and highest gain.

    Returns:
        The transfer (``ColourTransfer`` of ``media.colour``).
    """
    segment_mean, segment_std = (np.asarray(v, dtype=np.float64) for v in segment_stats)
    anchor_mean, anchor_std = (np.asarray(v, dtype=np.float64) for v in anchor_stats)
    gain = np.clip(np.maximum(anchor_std, MIN_SPREAD) / np.maximum(segment_std, MIN_SPREAD), *gain_range)
    offset = anchor_mean - gain * segment_mean
    return ColourTransfer(gain=tuple(float(g) for g in gain), offset=tuple(float(o) for o in offset))


def transfer_statistics(stats: YuvStatistics, transfer: ColourTransfer, weight: float = 1.0) -> YuvStatistics:
    """The statistics frames would have after ``transfer`` at ``weight`` (values clipped at 0/255 aside)."""
    gain, offset = transfer.weighted(weight)
    return YuvStatistics(gain * np.asarray(stats.mean) + offset, np.abs(gain) * np.asarray(stats.std))


def anchor_weights(
    frames: int,
    *,
    strength: float = 1.0,
    ramp_frames: int = RAMP_FRAMES,
    ramp_start: bool = False,
    ramp_end: bool = False,
) -> np.ndarray:
    """Weight of the transfer on each frame: ``strength``, rising linearly to 1 at a ramped end.

    With ``ramp_start`` the first frame has weight 1 and frame ``ramp_frames`` has
    ``strength``; ``ramp_end`` mirrors that at the last frame.
    """
    strength = float(np.clip(strength, 0.0, 1.0))
    weights = np.full(frames, strength)
    index = np.arange(frames)
    # A ramp of 0 or 1 frame gives weight 1 to the end frame only.
    span = max(1, ramp_frames)
    if ramp_start:
        weights = np.maximum(weights, 1 - (1 - strength) * np.minimum(1.0, index / span))
    if ramp_end:
        weights = np.maximum(weights, 1 - (1 - strength) * np.minimum(1.0, (frames - 1 - index) / span))
    return weights


def _source_change(
    target: YuvStatistics, source_before: YuvStatistics, source_after: YuvStatistics
) -> YuvStatistics:
    """``target`` moved by the change the source makes from ``source_before`` to ``source_after``."""
    before_std = np.maximum(np.asarray(source_before.std), MIN_SPREAD)
    scale = np.clip(np.maximum(np.asarray(target.std), MIN_SPREAD) / before_std, *STYLE_GAIN_RANGE)
    mean = np.asarray(target.mean) + scale * (np.asarray(source_after.mean) - np.asarray(source_before.mean))
    spread = np.clip(np.maximum(np.asarray(source_after.std), MIN_SPREAD) / before_std, *GAIN_RANGE)
    return YuvStatistics(mean, np.asarray(target.std) * spread)


def plan_anchors(
    outputs: Sequence[ClipStatistics],
    cut_before: Sequence[bool],
    sources: Sequence[ClipStatistics] | None = None,
    *,
    anchor: YuvStatistics | None = None,
    strength: float = 1.0,
    cut_strength: float = 0.5,
    ramp_frames: int = RAMP_FRAMES,
) -> list[AnchorStep]:
    """Chooses each segment's transfer by the rule in the module docstring (pure).

    A segment's step depends only on the segments before it (and on whether a cut follows it), so
    ``outputs`` may be the first k answers of the plan: their steps are those a call with every answer gives.

    Args:
        outputs: ``segment_statistics`` of each conformed answer, in order: all of them or the first k.
        cut_before: ``segment.cut_before`` of every segment of the plan (the first one's is ignored).
        sources: ``segment_statistics`` of the source frames (the extracted clips) of each segment of ``outputs``,
            or ``None``: then in-shot seams are matched without allowing for the source's own
            change, and segments after a cut are left as they are.
        anchor: Statistics segment 0's first frames should have (e.g. ``clip_statistics`` of
            the restyled first-frame image); ``None`` keeps segment 0 as it is.
        strength: Weight inside a segment that starts inside a shot (1 holds the whole segment
            to the anchor; less keeps more of the answer's own colours away from the seams).
        cut_strength: Weight of the look correction of a segment that starts on a cut.
        ramp_frames: Frames over which the weight goes from 1 at an in-shot seam to ``strength``.

    Returns:
        One ``AnchorStep`` per segment of ``outputs``.
    """
    if len(cut_before) < len(outputs) or (sources is not None and len(sources) != len(outputs)):
        raise InvalidInputError("plan_anchors: cut_before needs every segment, sources one entry per output")
    steps: list[AnchorStep] = []
    previous_last: YuvStatistics | None = None
    style: ColourTransfer | None = None
    count = len(cut_before)
    for index, output in enumerate(outputs):
        ramp_end = index + 1 < count and not cut_before[index + 1]
        ramp_start = False
        if index == 0:
            transfer, weight, reason = IDENTITY, 1.0, "anchor"
            if anchor is not None:
                transfer, weight, reason = fit_anchor(output.first, anchor), strength, "first frame"
        elif not cut_before[index]:
            assert previous_last is not None
            target = previous_last
            if sources is not None:
                target = _source_change(previous_last, sources[index - 1].last, sources[index].first)
            transfer, weight, reason = fit_anchor(output.first, target), strength, "seam"
            ramp_start = True
        elif sources is not None and style is not None:
            target = transfer_statistics(sources[index].whole, style)
            transfer, weight, reason = fit_anchor(output.whole, target), cut_strength, "cut"
        else:
            transfer, weight, reason = IDENTITY, 1.0, "unchanged"
        weights = anchor_weights(
            output.frames, strength=weight, ramp_frames=ramp_frames, ramp_start=ramp_start, ramp_end=ramp_end
        )
        # The next segment is matched to this one's last frames as they will be at the seam.
        previous_last = transfer_statistics(output.last, transfer, float(weights[-1]))
        if index == 0 and sources is not None:
            anchored_whole = transfer_statistics(output.whole, transfer, float(weights.mean()))
            style = fit_anchor(sources[0].whole, anchored_whole, gain_range=STYLE_GAIN_RANGE)
        steps.append(
            AnchorStep(
                index=index,
                transfer=transfer,
                strength=weight,
                ramp_start=ramp_start,
                ramp_end=ramp_end,
                ramp_frames=ramp_frames,
                reason=reason,
            )
        )
    return steps
