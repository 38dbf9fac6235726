"""Cut detection on real generated videos, and the plan whose seams fall on cuts (exact)."""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from prefect_modify_video.errors import FfmpegError, InvalidInputError
from prefect_modify_video.media.ffmpeg import run_ffmpeg
from prefect_modify_video.media.plan import max_frames_under, plan_segments_on_cuts
from prefect_modify_video.media.sample import make_sample_video
from prefect_modify_video.media.scenes import cut_ratios, cuts_from_differences, detect_cuts, frame_differences


def shot_bounds(plan) -> list[tuple[int, int, bool]]:
    return [(s.first_frame, s.end_frame, s.cut_before) for s in plan.segments]


def check_invariants(plan, total: int, rate: str, cap: float, cuts=()) -> None:
    """Every frame once, in order, each segment (overlap included) strictly under the cap, overlaps
    only at in-shot seams and inside the shot, indices and times consistent."""
    segments = plan.segments
    assert segments[0].first_frame == 0 and segments[-1].end_frame == total
    assert [s.index for s in segments] == list(range(len(segments)))
    for left, right in zip(segments, segments[1:]):
        assert left.end_frame == right.first_frame
        assert right.overlap_frames < left.frames
        # An overlap never reaches back over a cut.
        assert not any(right.sent_first_frame < c <= right.first_frame for c in cuts)
        assert right.overlap_frames == 0 or not right.cut_before
    max_frames = max_frames_under(cap, Fraction(rate))
    assert all(0 < s.frames <= s.sent_frames <= max_frames and s.sent_duration_s < cap for s in segments)
    assert all(s.start_s == pytest.approx(s.first_frame / Fraction(rate)) for s in segments)
    assert plan.billed_s == pytest.approx(sum(s.sent_duration_s for s in segments))


# ----------------------------------------------------------------- detection on real videos


def test_every_cut_of_the_sample_is_found_on_its_exact_frame(sample_video):
    differences = frame_differences(sample_video)
    assert len(differences) == 180 and differences[0] == 0
    assert cuts_from_differences(differences) == [45, 90, 135]
    assert detect_cuts(sample_video) == [45, 90, 135]


def test_seven_shots_of_moving_test_patterns_give_exactly_their_cuts(tmp_path):
    # testsrc2 moves its counter, smptehdbars turns its hue, the gradients move: no cut inside.
    path = make_sample_video(tmp_path / "seven.mp4", seconds=14, width=160, height=90, fps=30, scenes=7, audio=False)
    expected = [round(420 * k / 7) for k in range(1, 7)]
    assert detect_cuts(path) == expected


def test_faint_cuts_and_fast_motion(tmp_path):
    """A faint cut (the same grey picture made brighter), a still-to-fast-scroll cut, no cut inside fast motion."""
    size, rate = "160x90", 30
    gradient = f"gradients=size={size}:rate={rate}:speed=0.05:c0=0x404040:c1=0x808080:nb_colors=2:seed=1"
    shots = [
        f"{gradient},trim=end_frame=40",
        f"{gradient},eq=brightness=0.1,trim=start_frame=40:end_frame=80",  # the same picture, 25 levels brighter
        f"testsrc2=size={size}:rate={rate},scroll=h=0.05,trim=end_frame=40",  # fast scroll
        f"life=size={size}:rate={rate}:mold=10:ratio=0.1:life_color=#00ff00:seed=1,trim=end_frame=40",
    ]
    args: list[str] = []
    for shot in shots:
        args += ["-f", "lavfi", "-i", f"{shot},setpts=PTS-STARTPTS,setsar=1"]
    labels = "".join(f"[{k}:v]" for k in range(len(shots)))
    path = tmp_path / "hard.mp4"
    run_ffmpeg([
        *args, "-filter_complex", f"{labels}concat=n={len(shots)}:v=1:a=0,format=yuv420p[v]", "-map", "[v]",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-y", str(path),
    ])  # fmt: skip
    differences = frame_differences(path)
    assert np.median(differences[81:120]) > 20  # the scroll really is fast
    assert differences[40] < 15  # the grey cut is faint (other cuts here are 50 or more)
    assert detect_cuts(path) == [40, 80, 120]


def test_frame_differences_follow_a_plan_frame_rate(tmp_path):
    vfr = tmp_path / "vfr.mkv"
    run_ffmpeg([
        "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=30:duration=2",
        "-vf", "select='mod(n\\,3)'", "-fps_mode", "vfr", "-c:v", "libx264", "-preset", "ultrafast", "-y", str(vfr),
    ])  # fmt: skip
    stored = frame_differences(vfr)
    resampled = frame_differences(vfr, frame_rate="20/1")
    assert len(stored) == 40
    assert len(resampled) == pytest.approx(40, abs=1)


# ----------------------------------------------------------------- the adaptive rule, exactly


def test_adaptive_rule_on_hand_built_differences():
    values = np.full(100, 1.0)
    values[0] = 0
    values[20] = 40.0  # a cut
    values[50] = 4.0  # a jump under min_difference: not a cut
    values[70], values[72] = 30.0, 30.0  # a flash in and out: one cut
    assert cuts_from_differences(values) == [20, 70]
    ratios = cut_ratios(values)
    assert ratios[20] == pytest.approx(40.0)
    assert ratios[0] == 0.0


def test_a_cut_must_stand_out_from_fast_motion_around_it():
    values = np.full(60, 30.0)  # a fast pan
    values[0] = 0
    values[30] = 60.0  # twice the motion: a jerk, not a cut
    assert cuts_from_differences(values) == []
    values[30] = 150.0
    assert cuts_from_differences(values) == [30]


def test_motion_starting_is_not_a_cut():
    values = np.concatenate([[0.0], np.full(30, 0.5), np.full(30, 12.0)])
    assert cuts_from_differences(values) == []


# ----------------------------------------------------------------- plan on cuts, exactly


def test_seams_fall_exactly_on_cuts_when_shots_fit():
    plan = plan_segments_on_cuts(2250, "30/1", 30.0, [562, 1125, 1688])  # the 75 s sample
    assert shot_bounds(plan) == [(0, 562, False), (562, 1125, True), (1125, 1688, True), (1688, 2250, True)]
    check_invariants(plan, 2250, "30/1", 30.0)


def test_whole_shots_are_packed_greedily():
    # Shots of 3, 3, 3 and 3 s with a 10 s cap: three in the first segment, one in the second.
    plan = plan_segments_on_cuts(120, "10/1", 10.0, [30, 60, 90])
    assert shot_bounds(plan) == [(0, 90, False), (90, 120, True)]


def test_a_long_shot_is_split_into_the_fewest_equal_parts():
    # 30 s in one shot, cap 10 s (99 frames at 10 fps): 4 parts of 75 frames.
    plan = plan_segments_on_cuts(300, "10/1", 10.0, [])
    assert shot_bounds(plan) == [(0, 75, False), (75, 150, False), (150, 225, False), (225, 300, False)]


def test_split_points_move_to_the_stillest_frame_nearby():
    differences = np.ones(300)
    differences[73] = 0.2  # within 0.5 s (5 frames) of 75
    differences[148] = 0.1  # within reach of 150
    differences[140] = 0.0  # stiller, but 10 frames away
    differences[230] = 0.3  # within reach of 225
    plan = plan_segments_on_cuts(300, "10/1", 10.0, [], differences)
    assert shot_bounds(plan) == [(0, 73, False), (73, 148, False), (148, 230, False), (230, 300, False)]


def test_in_shot_seams_overlap_and_long_shots_leave_room_for_it():
    # A 30 s shot then a 5 s one, cap 10 s (99 frames at 10 fps), 4 frames of overlap.
    plan = plan_segments_on_cuts(350, "10/1", 10.0, [300], overlap_frames=4)
    check_invariants(plan, 350, "10/1", 10.0, [300])
    assert [(s.first_frame, s.end_frame, s.overlap_frames) for s in plan.segments] == [
        (0, 75, 0), (75, 150, 4), (150, 225, 4), (225, 300, 4), (300, 350, 0)
    ]
    assert plan.overlap_s == pytest.approx(1.2) and plan.billed_s == pytest.approx(36.2)
    # 297 frames fit 3 parts of 99 without overlap; with it, each part after the first needs 4 more.
    assert len(plan_segments_on_cuts(297, "10/1", 10.0, []).segments) == 3
    assert len(plan_segments_on_cuts(297, "10/1", 10.0, [], overlap_frames=4).segments) == 4
    # At most half the shortest segment wanted (1 s = 10 frames here): 5.
    assert {s.overlap_frames for s in plan_segments_on_cuts(300, "10/1", 10.0, [], overlap_frames=9).segments} == {0, 5}


def test_a_split_point_never_pushes_a_part_over_the_cap():
    differences = np.ones(198)
    differences[95] = 0.0  # moving there would make the second part 103 frames > 99
    plan = plan_segments_on_cuts(198, "10/1", 10.0, [], differences)
    assert shot_bounds(plan) == [(0, 99, False), (99, 198, False)]


def test_a_short_shot_joins_a_neighbouring_shot_when_it_fits():
    # Shots 5 s, 4.8 s, 0.5 s, 9.8 s, cap 10 s: greedy alone would leave the 0.5 s shot alone.
    plan = plan_segments_on_cuts(201, "10/1", 10.0, [50, 98, 103])
    assert shot_bounds(plan) == [(0, 50, False), (50, 103, True), (103, 201, True)]


def test_a_short_shot_goes_into_the_parts_of_a_long_neighbour():
    # 25 s, then 0.5 s, then 9.5 s: the short shot is split together with the long one.
    plan = plan_segments_on_cuts(350, "10/1", 10.0, [250, 255])
    assert shot_bounds(plan) == [(0, 85, False), (85, 170, False), (170, 255, False), (255, 350, True)]


def test_a_short_shot_stays_alone_when_nothing_fits():
    plan = plan_segments_on_cuts(195, "10/1", 10.0, [95, 100])
    assert shot_bounds(plan) == [(0, 95, False), (95, 100, True), (100, 195, True)]


def test_cuts_outside_the_video_and_duplicates_are_ignored():
    plan = plan_segments_on_cuts(120, "10/1", 10.0, [0, 60, 60, 120, 500])
    assert shot_bounds(plan) == [(0, 60, False), (60, 120, True)]


@pytest.mark.parametrize("seed", range(40))
def test_random_plans_keep_the_invariants(seed):
    rng = random.Random(seed)
    rate = rng.choice(["24/1", "30/1", "30000/1001", "60/1"])
    cap = rng.choice([2.0, 5.0, 10.0, 30.0])
    total = rng.randint(1, 4000)
    cuts = sorted(rng.sample(range(1, total), min(total - 1, rng.randint(0, 25)))) if total > 1 else []
    differences = np.array([rng.random() for _ in range(total)])
    overlap = rng.choice([0, 12, 40])
    plan = plan_segments_on_cuts(total, rate, cap, cuts, differences, overlap_frames=overlap)
    check_invariants(plan, total, rate, cap, cuts)
    min_frames = int(np.ceil(Fraction(rate)))
    # Parts of a long shot leave room for the overlap (at most half of 1 s).
    max_frames = max_frames_under(cap, Fraction(rate)) - min(overlap, min_frames // 2)
    starts = {s.first_frame for s in plan.segments}
    shots = list(zip([0, *cuts], [*cuts, total]))
    for first, end in shots:
        inside = sorted(b for b in starts if first < b < end)
        if end - first <= max_frames:
            # A shot that fits is never cut inside.
            assert inside == [], (first, end)
        else:
            # A long shot is cut into the fewest parts its length (plus short shots attached) needs.
            assert len(inside) <= -(-(end - first + 2 * min_frames) // max_frames) - 1
    for segment in plan.segments:
        assert segment.cut_before == (segment.first_frame in set(cuts))
        if segment.frames < min_frames:
            # Only a short shot alone, when nothing could take it, makes a short segment.
            assert segment.first_frame in set(cuts) | {0} and segment.end_frame in set(cuts) | {total}


def test_plan_on_the_sample_puts_seams_on_its_cuts(sample_video):
    differences = frame_differences(sample_video)
    cuts = cuts_from_differences(differences)
    # 1.5 s shots under a 2.5 s cap: one segment per shot.
    plan = plan_segments_on_cuts(180, "30/1", 2.5, cuts, differences)
    assert shot_bounds(plan) == [(0, 45, False), (45, 90, True), (90, 135, True), (135, 180, True)]
    # Under a 4 s cap, two shots per segment: the only seam is the middle cut.
    plan = plan_segments_on_cuts(180, "30/1", 4.0, cuts, differences)
    assert shot_bounds(plan) == [(0, 90, False), (90, 180, True)]


def test_plan_on_a_long_shot_of_a_real_video_splits_where_it_moves_least(tmp_path):
    # A 4 s shot frozen on frame 54 until frame 66, cap 2.5 s: the split lands in the freeze.
    path = tmp_path / "pause.mp4"
    run_ffmpeg([
        "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=30:duration=4",
        "-filter_complex", "[0:v]split[a][b];[a][b]freezeframes=first=54:last=66:replace=54",
        "-frames:v", "120", "-c:v", "libx264", "-preset", "ultrafast", "-y", str(path),
    ])  # fmt: skip
    differences = frame_differences(path)
    # Leaving the freeze skips 13 frames at once: a jump cut, and a seam goes there if it can.
    assert detect_cuts(path) == [67]
    assert shot_bounds(plan_segments_on_cuts(120, "30/1", 2.5, [67], differences)) == [(0, 67, False), (67, 120, True)]
    plan = plan_segments_on_cuts(120, "30/1", 2.5, [], differences)
    assert len(plan.segments) == 2
    seam = plan.segments[1].first_frame
    assert 55 <= seam <= 66 and differences[seam] == differences[45:76].min()
    assert differences[seam] < 0.1 * np.median(differences[1:])


@pytest.mark.parametrize("frames,rate,cap", [(0, "30/1", 30), (100, "0/1", 30), (100, "30/1", 1.5)])
def test_bad_plans_are_refused(frames, rate, cap):
    with pytest.raises(InvalidInputError):
        plan_segments_on_cuts(frames, rate, cap, [])


def test_a_file_that_is_not_a_video_is_an_ffmpeg_error(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(FfmpegError):
        frame_differences(text)
