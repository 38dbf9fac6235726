"""The segment plan: pure arithmetic, checked exactly."""

from fractions import Fraction

import pytest

from prefect_modify_video.errors import InvalidInputError
from plans import plan_segments
from prefect_modify_video.media.plan import max_frames_under


def test_segments_cover_every_frame_once_in_order():
    plan = plan_segments(2250, "30/1", 30.0)
    assert [s.first_frame for s in plan.segments][0] == 0
    assert plan.segments[-1].end_frame == 2250
    for left, right in zip(plan.segments, plan.segments[1:]):
        assert left.end_frame == right.first_frame
    assert [s.index for s in plan.segments] == list(range(len(plan.segments)))


def test_segments_are_strictly_under_the_cap_and_equal():
    plan = plan_segments(2250, "30/1", 30.0)  # 75 s
    assert len(plan.segments) == 3
    assert {s.frames for s in plan.segments} == {750}
    assert all(s.duration_s < 30.0 for s in plan.segments)


def test_exactly_the_cap_is_split():
    # 30 s at 30 fps is not under 30 s: two segments.
    assert len(plan_segments(900, "30/1", 30.0).segments) == 2
    assert len(plan_segments(899, "30/1", 30.0).segments) == 1


def test_ntsc_rate_and_uneven_split_differ_by_at_most_one_frame():
    plan = plan_segments(1001, "30000/1001", 10.0)
    sizes = [s.frames for s in plan.segments]
    assert max(sizes) - min(sizes) <= 1
    assert all(s.duration_s < 10.0 for s in plan.segments)
    assert all(s.duration_s >= 1.0 for s in plan.segments)
    assert plan.segments[-1].end_s == pytest.approx(1001 * 1001 / 30000)


def test_max_frames_under():
    assert max_frames_under(30, Fraction(30)) == 899
    assert max_frames_under(10, Fraction(24)) == 239
    assert max_frames_under(10, Fraction(30000, 1001)) == 299


def test_names_sort_in_join_order():
    plan = plan_segments(30 * 200, "30/1", 10.0)
    names = [s.name for s in plan.segments]
    assert names == sorted(names) and names[0] == "00000"


@pytest.mark.parametrize("frames,rate,cap", [(0, "30/1", 30), (100, "0/1", 30), (100, "30/1", 1.5)])
def test_bad_plans_are_refused(frames, rate, cap):
    with pytest.raises(InvalidInputError):
        plan_segments(frames, rate, cap)
