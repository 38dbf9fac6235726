"""Splitting a video's frames into segments a service accepts, with seams on shot cuts first.

Everything here is pure but ``plan_video``, which measures the video (``scenes``) and plans on that.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Sequence

import numpy as np
from pydantic import BaseModel, Field, computed_field

from prefect_modify_video.errors import InvalidInputError
from prefect_modify_video.media.probe import VideoInfo
from prefect_modify_video.media.scenes import cuts_from_differences, frame_differences

MIN_SEGMENT_SECONDS = 1.0
DEFAULT_OVERLAP_FRAMES = 12
"""Frames sent twice at each in-shot seam of a service's run, and cross-blended (0.4-0.5 s)."""


class Segment(BaseModel, frozen=True):
    """A run of source frames sent to the service as one clip."""

    index: int = Field(description="Position in the plan, from 0.")
    first_frame: int = Field(description="First source frame of the segment.")
    end_frame: int = Field(description="Frame after the last one: the range is first_frame..end_frame, exclusive.")
    start_s: float = Field(description="Start time in seconds.")
    end_s: float = Field(description="End time in seconds.")
    cut_before: bool = Field(default=False, description="Whether the seam before it falls on a shot cut.")
    overlap_frames: int = Field(
        default=0,
        ge=0,
        description="Frames before first_frame sent too and cross-blended with the previous segment's last ones "
        "(only at seams inside a shot).",
    )
    frame_step: int = Field(
        default=1,
        ge=1,
        description="Every how many source frames one is sent: 1 sends them all; 2 sends a 60 fps source at 30 fps "
        "to a service that takes at most 30 fps (``sent_frame_step``). The answer is conformed back to every frame.",
    )
    pad_frames: int = Field(
        default=0,
        ge=0,
        description="Copies of the last sent frame added to the clip so that it lasts a service's shortest input; "
        "the answer's part for them is dropped.",
    )

    @computed_field
    @property
    def frames(self) -> int:
        """Number of frames in the segment."""
        return self.end_frame - self.first_frame

    @computed_field
    @property
    def duration_s(self) -> float:
        """Length of the segment in seconds."""
        return self.end_s - self.start_s

    @computed_field
    @property
    def sent_first_frame(self) -> int:
        """First source frame sent to the service: ``first_frame`` less the overlap."""
        return self.first_frame - self.overlap_frames

    @computed_field
    @property
    def sent_frames(self) -> int:
        """Frames sent to the service (and billed): the segment's own plus the overlap."""
        return self.end_frame - self.sent_first_frame

    @property
    def clip_frames(self) -> int:
        """Frames of the clip sent: every ``frame_step``-th sent frame, from the first (``sent_frames`` at step 1),
        then ``pad_frames``."""
        return -(-self.sent_frames // self.frame_step) + self.pad_frames

    def clip_index(self, frame: int) -> int:
        """The sent clip's frame that shows source frame ``frame`` (the nearest one at or after it)."""
        return min(-(-(frame - self.sent_first_frame) // self.frame_step), self.clip_frames - self.pad_frames - 1)

    @computed_field
    @property
    def sent_duration_s(self) -> float:
        """Length of what is sent (and billed), in seconds: ``clip_frames`` at the sent rate, padding included."""
        return self.duration_s * self.clip_frames * self.frame_step / self.frames

    @computed_field
    @property
    def name(self) -> str:
        """Zero-padded index; every file of the segment is named after it, so name order is join order."""
        return f"{self.index:05d}"


class SegmentPlan(BaseModel, frozen=True):
    """All segments of a source, in order, covering every frame once."""

    frame_rate: str = Field(description="Frame rate of the frame numbers, as a fraction.")
    total_frames: int = Field(description="Number of frames in the source.")
    max_segment_seconds: float = Field(description="Cap every segment stays strictly under.")
    segments: list[Segment] = Field(description="The segments in order.")
    frame_step: int = Field(default=1, ge=1, description="Every how many source frames one is sent (``as_sent``).")
    min_clip_seconds: float | None = Field(
        default=None, description="The service's shortest clip: shorter ones are sent padded (``as_sent``)."
    )

    @property
    def duration_s(self) -> float:
        """Total length covered, in seconds."""
        return self.total_frames / float(Fraction(self.frame_rate))

    @property
    def billed_s(self) -> float:
        """Seconds sent to the service: the video once, plus the overlaps."""
        return self.duration_s + self.overlap_s

    def as_sent(self, frame_step: int = 1, min_clip_seconds: float | None = None) -> SegmentPlan:
        """The plan as a service takes it: each clip one frame in ``frame_step`` (``sent_frame_step``), and one
        shorter than ``min_clip_seconds`` padded with its last frame up to it (``Segment.pad_frames``)."""
        if frame_step == self.frame_step and min_clip_seconds == self.min_clip_seconds:
            return self
        sending = self.model_copy(update={"frame_step": frame_step, "min_clip_seconds": min_clip_seconds})
        return sending.model_copy(update={"segments": [sending.sent(s) for s in self.segments]})

    def sent(self, segment: Segment) -> Segment:
        """``segment`` (of this plan or an excerpt of its source) as this plan's clips are sent."""
        sent_rate = Fraction(self.frame_rate) / self.frame_step
        seconds = self.min_clip_seconds
        shortest = math.ceil(Fraction(seconds).limit_denominator(1000) * sent_rate) if seconds else 0
        frames = -(-segment.sent_frames // self.frame_step)
        return segment.model_copy(update={"frame_step": self.frame_step, "pad_frames": max(shortest - frames, 0)})

    @property
    def overlap_s(self) -> float:
        """Seconds sent twice, in the overlaps at in-shot seams: billed on top of ``duration_s``."""
        return sum(s.overlap_frames for s in self.segments) / float(Fraction(self.frame_rate))


def sent_frame_step(frame_rate: str | Fraction, max_fps: float | None) -> int:
    """Every how many source frames one is sent to a service that takes at most ``max_fps``.

    The smallest whole step that brings the source's rate to ``max_fps`` or under, so each sent frame is a
    source frame (60 and 50 fps are sent at 30 and 25 fps; 120 fps at 30). ``None`` or a source already under
    the cap: 1, every frame.

    Example:
        >>> sent_frame_step("60/1", 30), sent_frame_step("60000/1001", 30), sent_frame_step("30/1", 30)
        (2, 2, 1)
    """
    rate = Fraction(frame_rate)
    if not max_fps or rate <= 0:
        return 1
    return max(1, math.ceil(rate / Fraction(max_fps).limit_denominator(1000)))


def max_frames_under(max_segment_seconds: float, frame_rate: Fraction) -> int:
    """The largest frame count whose length is strictly under ``max_segment_seconds``."""
    return max(1, math.ceil(Fraction(max_segment_seconds).limit_denominator(1000) * frame_rate) - 1)


def _pack_cost(frames: int, min_frames: int) -> tuple[int, int, int]:
    return (1, int(frames < min_frames), 0)


def _add(a: tuple[int, int, int], b: tuple[int, int, int]) -> tuple[int, int, int]:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2])


def _split_points(
    first: int,
    end: int,
    parts: int,
    shot: tuple[int, int],
    differences: np.ndarray | None,
    search_frames: int,
    min_frames: int,
    max_frames: int,
) -> list[int]:
    """Inner boundaries of ``parts`` equal parts of first..end, each moved to the stillest frame near it.

    A boundary stays inside ``shot`` (the long shot being split), keeps both parts it touches
    between ``min_frames`` and ``max_frames``, and is moved at most ``search_frames``. Moving
    them left to right keeps a solution: each next nominal boundary stays reachable.
    """
    length = end - first
    bounds = [first + length * k // parts for k in range(parts + 1)]
    for k in range(1, parts):
        nominal = bounds[k]
        low = max(nominal - search_frames, bounds[k - 1] + min_frames, bounds[k + 1] - max_frames, shot[0] + 1)
        high = min(nominal + search_frames, bounds[k - 1] + max_frames, bounds[k + 1] - min_frames, shot[1] - 1)
        if differences is None or low > high:
            continue
        candidates = np.arange(low, high + 1)
        # Stillest frame first, then the one nearest the equal split.
        order = np.lexsort((np.abs(candidates - nominal), differences[candidates]))
        bounds[k] = int(candidates[order[0]])
    return bounds[1:-1]


def plan_segments_on_cuts(
    total_frames: int,
    frame_rate: str | Fraction,
    max_segment_seconds: float,
    cuts: Sequence[int],
    differences: Sequence[float] | np.ndarray | None = None,
    *,
    min_segment_seconds: float = MIN_SEGMENT_SECONDS,
    search_seconds: float = 0.5,
    overlap_frames: int = 0,
) -> SegmentPlan:
    """Splits the frames into segments under the cap with seams on shot cuts first.

    Whole consecutive shots are packed into segments under the cap, as many as fit in each
    (greedy, front first). A shot longer than the cap is split into the fewest equal parts,
    each split point moved to the lowest-motion frame (smallest ``differences``) within
    ``search_seconds`` while every part stays under the cap and at least
    ``min_segment_seconds`` long. A shot shorter than ``min_segment_seconds`` that cannot share
    a segment with whole neighbours goes into the parts of a long neighbouring shot; if there
    is none it becomes a short segment of its own.

    Exactly: among plans whose seams are cuts or split points inside long shots, this is one
    with the fewest segments, then the fewest segments under ``min_segment_seconds``, then the
    fewest seams off cuts; among those, each segment ends as late as possible (the greedy
    packing). It is found by a shortest path over the cuts.

    A segment starting inside a shot also gets ``overlap_frames`` frames before its start
    (``Segment.overlap_frames``; fewer if the previous segment or the shot is shorter): they are
    sent with it and cross-blended with the previous segment's last frames. The parts of a long
    shot are sized so that each, overlap included, stays under the cap.

    Args:
        total_frames: Number of frames in the source.
        frame_rate: Frames per second, e.g. ``"30000/1001"``.
        max_segment_seconds: The backend's cap; every segment is strictly shorter.
        cuts: Frames where a shot starts (``scenes.detect_cuts``); 0, duplicates and frames outside
            the video are ignored.
        differences: ``scenes.frame_differences`` of the source, for choosing split points; ``None``
            splits long shots exactly equally.
        min_segment_seconds: Shortest segment wanted.
        search_seconds: How far a split point may move from the equal split.
        overlap_frames: Frames each in-shot seam's segments share (0: none); at most half of
            ``min_segment_seconds`` is used.

    Returns:
        The plan; segments starting on a cut have ``cut_before=True``.

    Raises:
        InvalidInputError: no frames, no frame rate, or a cap under twice ``min_segment_seconds``.
    """
    rate = Fraction(frame_rate)
    if total_frames <= 0 or rate <= 0:
        raise InvalidInputError("plan: the video has no frames or no frame rate")
    if max_segment_seconds < 2 * min_segment_seconds:
        raise InvalidInputError(
            f"plan: max_segment_seconds={max_segment_seconds} is too short; "
            f"use at least {2 * min_segment_seconds:g} s"
        )
    if differences is not None:
        # Frames without a measure are never chosen as split points.
        differences = np.asarray(differences, dtype=np.float64)[:total_frames]
        if len(differences) < total_frames:
            differences = np.concatenate([differences, np.full(total_frames - len(differences), np.inf)])
    max_frames = max_frames_under(max_segment_seconds, rate)
    min_frames = min(max_frames, math.ceil(Fraction(min_segment_seconds).limit_denominator(1000) * rate))
    if overlap_frames < 0:
        raise InvalidInputError(f"plan: overlap_frames={overlap_frames} must be 0 or more")
    # At most half the shortest segment wanted; parts of a long shot carry it on top of their own frames.
    overlap_frames = min(overlap_frames, min_frames // 2)
    part_max_frames = max_frames - overlap_frames
    search_frames = int(search_seconds * rate)

    cut_set = sorted({int(c) for c in cuts if 0 < int(c) < total_frames})
    starts = [0, *cut_set]
    ends = [*cut_set, total_frames]
    lengths = [e - s for s, e in zip(starts, ends)]
    count = len(starts)
    long_shot = [n > max_frames for n in lengths]

    # edges[a] = list of (b, cost, long shot index or None): shots a..b-1 make one unit.
    edges: list[list[tuple[int, tuple[int, int, int], int | None]]] = [[] for _ in range(count)]
    for a in range(count):
        frames = 0
        for b in range(a + 1, count + 1):
            if long_shot[b - 1]:
                break
            frames += lengths[b - 1]
            if frames > max_frames:
                break
            edges[a].append((b, _pack_cost(frames, min_frames), None))
    for k in range(count):
        if not long_shot[k]:
            continue
        # A long shot with the short shots next to it (each side under min_frames) attached.
        firsts = [k]
        total = 0
        for a in range(k - 1, -1, -1):
            total += lengths[a]
            if long_shot[a] or total >= min_frames:
                break
            firsts.append(a)
        afters = [k + 1]
        total = 0
        for b in range(k + 1, count):
            total += lengths[b]
            if long_shot[b] or total >= min_frames:
                break
            afters.append(b + 1)
        for a in firsts:
            for b in afters:
                frames = ends[b - 1] - starts[a]
                parts = math.ceil(frames / part_max_frames)
                edges[a].append((b, (parts, 0, parts - 1), k))

    # Cheapest cover of shots a..count-1, filled from the end.
    best: list[tuple[int, int, int] | None] = [None] * (count + 1)
    best[count] = (0, 0, 0)
    for a in range(count - 1, -1, -1):
        for b, cost, _ in edges[a]:
            if best[b] is not None:
                total_cost = _add(cost, best[b])
                if best[a] is None or total_cost < best[a]:
                    best[a] = total_cost

    boundaries: list[int] = []
    a = 0
    while a < count:
        choices = [(b, cost, k) for b, cost, k in edges[a] if best[b] is not None and _add(cost, best[b]) == best[a]]
        b, cost, k = max(choices, key=lambda choice: choice[0])
        first, end = starts[a], ends[b - 1]
        boundaries.append(first)
        if k is not None:
            parts = cost[0]
            boundaries += _split_points(
                first, end, parts, (starts[k], ends[k]), differences, search_frames, min_frames, part_max_frames
            )
        a = b
    boundaries.append(total_frames)

    segments = []
    for index, (first, end) in enumerate(zip(boundaries, boundaries[1:])):
        in_shot = index > 0 and first not in cut_set
        shot_start = max((c for c in starts if c <= first), default=0)
        overlap = min(overlap_frames, first - shot_start, first - boundaries[index - 1]) if in_shot else 0
        segments.append(
            Segment(
                index=index,
                first_frame=first,
                end_frame=end,
                start_s=float(first / rate),
                end_s=float(end / rate),
                cut_before=index > 0 and not in_shot,
                overlap_frames=overlap,
            )
        )
    return SegmentPlan(
        frame_rate=f"{rate.numerator}/{rate.denominator}",
        total_frames=total_frames,
        max_segment_seconds=max_segment_seconds,
        segments=segments,
    )


def plan_video(info: VideoInfo, max_segment_seconds: float, overlap_frames: int = 0) -> SegmentPlan:
    """Plans a probed video's segments with seams on its shot cuts first (one small decode).

    Args:
        info: The probed source.
        max_segment_seconds: The cap every segment stays strictly under, overlap included.
        overlap_frames: Frames shared by the two segments of each seam inside a shot.

    Returns:
        The plan; ``cut_before`` marks the seams that fall on a cut.
    """
    differences = frame_differences(info.path, frame_rate=info.frame_rate)
    cuts = cuts_from_differences(differences)
    return plan_segments_on_cuts(
        info.frames, info.frame_rate, max_segment_seconds, cuts, differences, overlap_frames=overlap_frames
    )
