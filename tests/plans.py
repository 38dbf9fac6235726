"""Plans for tests: a video's frames split equally, seams placed without looking for shot cuts."""

from __future__ import annotations

from fractions import Fraction

from prefect_modify_video.media.plan import SegmentPlan, plan_segments_on_cuts


def plan_segments(total_frames: int, frame_rate: str | Fraction, max_segment_seconds: float) -> SegmentPlan:
    """Splits ``total_frames`` into the fewest equal segments each strictly under the cap.

    Segment lengths differ by at most one frame. This is ``plan_segments_on_cuts`` with no cuts,
    so tests that need a known plan need not decode the video (the pipeline uses ``plan_video``).

    Args:
        total_frames: Number of frames in the source.
        frame_rate: Frames per second, e.g. ``"30000/1001"``.
        max_segment_seconds: The backend's length cap.

    Returns:
        The plan.
    """
    return plan_segments_on_cuts(total_frames, frame_rate, max_segment_seconds, cuts=())
