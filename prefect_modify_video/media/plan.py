"""Splitting a video's frames into segments a service accepts (pure functions, no I/O)."""

from __future__ import annotations

import math
from fractions import Fraction

from pydantic import BaseModel, Field, computed_field

from prefect_modify_video.errors import InvalidInputError

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

    @computed_field
    @property
    def sent_duration_s(self) -> float:
        """Length of what is sent (and billed), in seconds."""
        return self.duration_s * self.sent_frames / self.frames

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

    @property
    def duration_s(self) -> float:
        """Total length covered, in seconds."""
        return self.total_frames / float(Fraction(self.frame_rate))

    @property
    def billed_s(self) -> float:
        """Seconds sent to the service: the video once, plus the overlaps."""
        return self.duration_s + self.overlap_s

    @property
    def overlap_s(self) -> float:
        """Seconds sent twice, in the overlaps at in-shot seams: billed on top of ``duration_s``."""
        return sum(s.overlap_frames for s in self.segments) / float(Fraction(self.frame_rate))


def max_frames_under(max_segment_seconds: float, frame_rate: Fraction) -> int:
    """The largest frame count whose length is strictly under ``max_segment_seconds``."""
    return max(1, math.ceil(Fraction(max_segment_seconds).limit_denominator(1000) * frame_rate) - 1)


def plan_segments(total_frames: int, frame_rate: str | Fraction, max_segment_seconds: float) -> SegmentPlan:
    """Splits ``total_frames`` into the fewest equal segments each strictly under the cap.

    Segment lengths differ by at most one frame, so no segment is a short leftover; with a
    cap of at least 2 s every segment is then at least 1 s long (unless the video is shorter).

    Args:
        total_frames: Number of frames in the source.
        frame_rate: Frames per second, e.g. ``"30000/1001"``.
        max_segment_seconds: The backend's length cap.

    Returns:
        The plan.
    """
    rate = Fraction(frame_rate)
    if total_frames <= 0 or rate <= 0:
        raise InvalidInputError("plan: the video has no frames or no frame rate")
    if max_segment_seconds < 2 * MIN_SEGMENT_SECONDS:
        raise InvalidInputError(
            f"plan: max_segment_seconds={max_segment_seconds} is too short; use at least {2 * MIN_SEGMENT_SECONDS:g} s"
        )
    max_frames = max_frames_under(max_segment_seconds, rate)
    count = math.ceil(total_frames / max_frames)
    bounds = [total_frames * k // count for k in range(count + 1)]
    segments = [
        Segment(
            index=k,
            first_frame=bounds[k],
            end_frame=bounds[k + 1],
            start_s=float(bounds[k] / rate),
            end_s=float(bounds[k + 1] / rate),
        )
        for k in range(count)
    ]
    return SegmentPlan(
        frame_rate=f"{rate.numerator}/{rate.denominator}",
        total_frames=total_frames,
        max_segment_seconds=max_segment_seconds,
        segments=segments,
    )
