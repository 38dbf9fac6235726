"""Seam metrics, the contact sheet and colour anchoring, on real ffmpeg-made videos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from plans import plan_segments
from prefect_modify_video.errors import InvalidInputError
from prefect_modify_video.media.anchor import (
    ClipStatistics,
    FrameSums,
    anchor_weights,
    clip_statistics,
    decode_frame_sums,
    fit_anchor,
    load_frame_sums,
    plan_anchors,
    save_frame_sums,
    segment_statistics,
    transfer_statistics,
)
from prefect_modify_video.media.colour import IDENTITY, ColourTransfer, YuvStatistics
from prefect_modify_video.media.conform import INTERMEDIATE_ENCODE, conform_clip
from prefect_modify_video.media.files import atomic_copy
from prefect_modify_video.media.extract import extract_segment
from prefect_modify_video.media.join import join_segments
from prefect_modify_video.media.ffmpeg import FFPROBE, run_ffmpeg
from prefect_modify_video.media.finish import (
    blend_keeping_contrast,
    blend_weights,
    finish_clip,
    read_head,
)
from prefect_modify_video.media.probe import probe_video
from prefect_modify_video.media.frames import read_frames
from prefect_modify_video.media.seams import (
    contact_sheet_size,
    measure_seams,
    measure_seams_and_sheet,
    plane_means,
    write_seam_sheet,
)

# What the "service" does to every segment (its style), and the casts two answers came back with.
STYLE = "colorchannelmixer=rr=1:gg=0.9:bb=0.8"
DRIFTED = [STYLE, f"{STYLE},colorchannelmixer=rr=0.88:gg=1.04:bb=1.1,eq=brightness=0.04"]


@pytest.fixture(scope="module")
def shot(tmp_path_factory) -> Path:
    """4 s, 320x180, 30 fps, one shot (120 frames)."""
    path = tmp_path_factory.mktemp("seams") / "shot.mp4"
    run_ffmpeg([
        "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30:duration=4",
        "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-y", str(path),
    ])  # fmt: skip
    return path


def restyle(info, segments, workdir: Path, filters: list[str | None]) -> tuple[list[Path], list[Path]]:
    """Extracts each segment, "restyles" it with its filter at 24 fps as a service would, conforms it back."""
    extracted, conformed = [], []
    for segment, look in zip(segments, filters):
        clip = extract_segment(info, segment, workdir / f"x{segment.name}.mp4")
        answer = workdir / f"a{segment.name}.mp4"
        vf = "fps=24" + (f",{look}" if look else "")
        run_ffmpeg(["-i", str(clip), "-vf", vf, "-c:v", "libx264", "-preset", "ultrafast", "-y", str(answer)])
        extracted.append(clip)
        conformed.append(conform_clip(answer, info, segment, workdir / f"c{segment.name}.mp4"))
    return extracted, conformed


@pytest.fixture(scope="module")
def drifted(shot, tmp_path_factory):
    """The shot in two segments, the second answer with another cast, conformed and joined as they are."""
    workdir = tmp_path_factory.mktemp("drifted")
    info = probe_video(shot)
    plan = plan_segments(info.frames, info.frame_rate, 2.5)
    assert [s.first_frame for s in plan.segments] == [0, 60]
    extracted, conformed = restyle(info, plan.segments, workdir, DRIFTED)
    joined = join_segments(conformed, info, workdir / "naive.mp4")
    return {"info": info, "plan": plan, "extracted": extracted, "conformed": conformed, "joined": joined}


# ----------------------------------------------------------------- seam metrics


def test_seeking_reads_the_same_frames_as_a_full_decode(sample_video):
    info = probe_video(sample_video)
    size = (64, 36)
    raw = run_ffmpeg(
        ["-i", str(sample_video), "-vf", "scale=64:36:flags=area", "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"]
    )
    every = np.frombuffer(raw, dtype=np.uint8).reshape(info.frames, -1)
    for first in (0, 1, 44, 45, 89, 90, 177):
        frames = read_frames(sample_video, first, 3, frame_rate=info.frame_rate, size=size)
        assert np.array_equal(frames, every[first : first + 3]), first


def test_untouched_video_has_invisible_seams(shot, tmp_path):
    info = probe_video(shot)
    plan = plan_segments(info.frames, info.frame_rate, 2.0)
    _, conformed = restyle(info, plan.segments, tmp_path, [None] * len(plan.segments))
    joined = join_segments(conformed, info, tmp_path / "joined.mp4")
    seams = [s.first_frame for s in plan.segments[1:]]
    metrics = measure_seams(shot, joined, seams)
    assert [m.frame for m in metrics] == seams == [40, 80]
    assert all(m.passed and m.ratio <= 1.0 for m in metrics), metrics


def test_differently_tinted_halves_show_a_seam(shot, drifted):
    (metric,) = measure_seams(shot, drifted["joined"], [60], threshold=1.5)
    assert not metric.passed and metric.ratio > 5
    assert max(metric.output_jump) > 5 and max(metric.source_jump) < 1
    assert metric.on_cut is False and metric.threshold == 1.5
    assert json.loads(metric.model_dump_json())["frame"] == 60


def test_a_seam_on_a_cut_is_judged_against_the_source_jump(sample_video):
    metrics = measure_seams(sample_video, sample_video, [45, 90, 135], on_cut=[True, True, True])
    assert all(m.on_cut and m.passed and m.ratio == pytest.approx(1.0) for m in metrics)
    assert all(max(m.source_jump) > 5 for m in metrics)


def test_seam_arguments_are_checked(sample_video):
    assert measure_seams(sample_video, sample_video, []) == []
    with pytest.raises(InvalidInputError, match="one value per seam"):
        measure_seams(sample_video, sample_video, [45], on_cut=[True, False])
    with pytest.raises(InvalidInputError, match="not inside"):
        measure_seams(sample_video, sample_video, [180])


# ----------------------------------------------------------------- contact sheet


def png_size(path: Path) -> tuple[int, int]:
    out = run_ffmpeg(
        ["-v", "error", "-show_entries", "stream=width,height", "-of", "json", str(path)], program=FFPROBE
    )
    stream = json.loads(out)["streams"][0]
    return stream["width"], stream["height"]


def test_contact_sheet_has_the_documented_size_and_marks_each_seam(sample_video, drifted, tmp_path):
    destination = tmp_path / "sheets" / "seams.png"
    written = write_seam_sheet(sample_video, sample_video, [45, 90, 135], destination, thumb_width=96)
    assert written == destination
    assert png_size(destination) == contact_sheet_size(3, frames_each_side=1, thumb_size=(96, 54)) == (614, 112)
    pixels = np.frombuffer(
        run_ffmpeg(["-i", str(destination), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]), dtype=np.uint8
    ).reshape(112, 614, 3)
    assert (pixels[:, 96:98] == [255, 0, 0]).all()  # the red mark between frames 44 and 45
    assert not list(destination.parent.glob(".*partial*"))

    two = write_seam_sheet(drifted["info"].path, drifted["joined"], [60], tmp_path / "two.png", frames_each_side=2)
    assert png_size(two) == contact_sheet_size(1, frames_each_side=2, thumb_size=(160, 90)) == (646, 184)


def test_metrics_and_sheet_from_one_read_match_the_separate_ones(drifted, tmp_path):
    """Issue 15: the seam report reads each video once around a seam; its metrics and sheet are the same."""
    source, joined = drifted["info"].path, drifted["joined"]
    apart = measure_seams(source, joined, [60], overlaps=[4])
    together, sheet = measure_seams_and_sheet(source, joined, [60], overlaps=[4], sheet_png=tmp_path / "one.png")
    assert together == apart
    alone = write_seam_sheet(source, joined, [60], tmp_path / "two.png")
    assert png_size(sheet) == png_size(alone) == contact_sheet_size(1, thumb_size=(160, 90))

    def pixels(path):
        return np.frombuffer(run_ffmpeg(["-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]), dtype=np.uint8)

    # Scaled in numpy rather than by ffmpeg: the same pictures within a few levels.
    assert np.abs(pixels(sheet).astype(int) - pixels(alone)).mean() < 5


def test_contact_sheet_of_no_seams_writes_nothing(sample_video, tmp_path):
    assert write_seam_sheet(sample_video, sample_video, [], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


# ----------------------------------------------------------------- anchoring, pure parts


def stats(mean, std) -> YuvStatistics:
    return YuvStatistics(np.array(mean, dtype=float), np.array(std, dtype=float))


def clip(first, last, whole=None, frames=60) -> ClipStatistics:
    return ClipStatistics(first=first, last=last, whole=whole or first, frames=frames, window=8)


def test_fit_anchor_moves_statistics_exactly_and_clips_gains():
    segment, anchor = stats([100, 120, 140], [40, 10, 10]), stats([110, 125, 130], [44, 11, 9])
    transfer = fit_anchor(segment, anchor)
    moved = transfer_statistics(segment, transfer)
    assert np.allclose(moved.mean, anchor.mean) and np.allclose(moved.std, anchor.std)
    wild = fit_anchor(stats([100] * 3, [10] * 3), stats([100] * 3, [100, 1, 10]))
    assert wild.gain == pytest.approx((1.5, 0.67, 1.0))
    flat = fit_anchor(stats([16, 128, 128], [0, 0, 0]), stats([20, 128, 128], [0.5, 0, 0]))
    assert flat.gain == (1.0, 1.0, 1.0) and flat.offset == pytest.approx((4.0, 0.0, 0.0))


def test_anchor_weights_ramp_from_one_at_in_shot_seams():
    assert np.allclose(anchor_weights(5, strength=0.5), [0.5] * 5)
    assert np.allclose(anchor_weights(6, strength=0.5, ramp_frames=2, ramp_start=True), [1, 0.75, 0.5, 0.5, 0.5, 0.5])
    assert np.allclose(anchor_weights(6, strength=0.5, ramp_frames=2, ramp_end=True), [0.5, 0.5, 0.5, 0.5, 0.75, 1])
    both = anchor_weights(4, strength=0.0, ramp_frames=4, ramp_start=True, ramp_end=True)
    assert np.allclose(both, [1, 0.75, 0.75, 1])
    assert np.allclose(anchor_weights(3, strength=0.2, ramp_frames=0, ramp_start=True), [1, 0.2, 0.2])


def test_plan_anchors_matches_an_in_shot_seam_to_the_previous_segment():
    # Segment 1 came back 12 levels brighter and with a U cast: its transfer takes exactly that out.
    previous = clip(stats([100, 120, 130], [30, 8, 8]), stats([102, 121, 131], [31, 8, 8]))
    drifted = clip(stats([114, 126, 131], [31, 8, 8]), stats([113, 126, 131], [31, 8, 8]))
    steps = plan_anchors([previous, drifted], [False, False], ramp_frames=10)
    assert steps[0].transfer == IDENTITY and steps[0].reason == "anchor" and steps[0].ramp_end
    assert steps[1].reason == "seam" and steps[1].ramp_start and not steps[1].ramp_end
    fixed = transfer_statistics(drifted.first, steps[1].transfer)
    assert np.allclose(fixed.mean, previous.last.mean) and np.allclose(fixed.std, previous.last.std)


def test_plan_anchors_allows_for_the_source_changing_across_the_seam():
    # The source gets 6 levels brighter across the seam; the answers, drift aside, double contrast.
    source_last, source_first = stats([100, 128, 128], [20, 5, 5]), stats([106, 128, 128], [20, 5, 5])
    previous = clip(stats([100, 128, 128], [40, 5, 5]), stats([100, 128, 128], [40, 5, 5]))
    drifted = clip(stats([130, 128, 128], [40, 5, 5]), stats([130, 128, 128], [40, 5, 5]))
    sources = [clip(source_last, source_last), clip(source_first, source_first)]
    steps = plan_anchors([previous, drifted], [False, False], sources)
    fixed = transfer_statistics(drifted.first, steps[1].transfer)
    assert fixed.mean[0] == pytest.approx(100 + 2 * 6)


def test_plan_anchors_brings_a_new_shot_to_the_first_segments_look():
    def look(source: YuvStatistics, gain, offset) -> YuvStatistics:
        return transfer_statistics(source, ColourTransfer(gain=gain, offset=offset))

    style = ((1.1, 0.9, 0.8), (5.0, 10.0, 20.0))
    sources = [
        clip(stats([90, 120, 135], [30, 8, 9]), stats([90, 120, 135], [30, 8, 9])),
        clip(stats([60, 140, 110], [20, 12, 6]), stats([60, 140, 110], [20, 12, 6])),
    ]
    outputs = [clip(look(s.first, *style), look(s.last, *style)) for s in sources]
    # The second answer drifted: brighter and bluer than the style.
    drift = ColourTransfer(gain=(1.05, 1.0, 1.0), offset=(8.0, 6.0, -3.0))
    outputs[1] = clip(transfer_statistics(outputs[1].first, drift), transfer_statistics(outputs[1].last, drift))
    steps = plan_anchors(outputs, [False, True], sources, cut_strength=1.0)
    assert steps[1].reason == "cut" and not steps[1].ramp_start
    fixed = transfer_statistics(outputs[1].whole, steps[1].transfer)
    wanted = look(sources[1].whole, *style)
    assert np.allclose(fixed.mean, wanted.mean) and np.allclose(fixed.std, wanted.std)
    # Without the sources a new shot is left as it came.
    assert plan_anchors(outputs, [False, True])[1].transfer == IDENTITY


def test_plan_anchors_can_bring_the_first_segment_to_a_first_frame_image():
    output = clip(stats([100, 128, 128], [30, 5, 5]), stats([100, 128, 128], [30, 5, 5]))
    image = stats([110, 120, 140], [33, 6, 5])
    (step,) = plan_anchors([output], [False], anchor=image, strength=0.8)
    assert step.reason == "first frame" and step.strength == 0.8
    assert np.allclose(transfer_statistics(output.first, step.transfer).mean, image.mean)


# ----------------------------------------------------------------- anchoring real clips


def test_clip_statistics_of_an_image_and_of_clip_ends(first_frame_image, drifted):
    mean, std = clip_statistics(first_frame_image)
    # 0xd08030 in BT.601 limited range: Y 138.6, U 81.0, V 168.9.
    assert mean == pytest.approx([138.6, 81.0, 168.9], abs=1) and std.max() < 1
    joined = drifted["joined"]
    first, last = clip_statistics(joined, which="first"), clip_statistics(joined, which="last")
    whole = clip_statistics(joined, which="all")
    assert abs(first.mean[0] - last.mean[0]) > 5  # the second half is brighter
    assert min(first.mean[0], last.mean[0]) < whole.mean[0] < max(first.mean[0], last.mean[0])
    together = segment_statistics(joined)
    assert together.frames == 120
    assert np.allclose(together.first.mean, first.mean) and np.allclose(together.last.mean, last.mean)
    assert np.allclose(together.whole.mean, whole.mean) and np.allclose(together.whole.std, whole.std)
    with pytest.raises(InvalidInputError):
        clip_statistics(joined, which="middle")


def same_statistics(one: ClipStatistics, other: ClipStatistics, tolerance: float = 0.0) -> bool:
    """Whether two clips' statistics agree (exactly, or within ``tolerance`` levels)."""
    parts = [(getattr(one, part), getattr(other, part)) for part in ("first", "last", "whole")]
    return one.frames == other.frames and all(
        np.allclose(a.mean, b.mean, rtol=0, atol=tolerance) and np.allclose(a.std, b.std, rtol=0, atol=tolerance)
        for a, b in parts
    )


def test_statistics_kept_while_writing_are_those_of_the_written_clip(shot, tmp_path):
    """Issue 15: extract and conform keep the frame sums of what they write, so finish decodes no clip for them."""
    info = probe_video(shot)
    segment = plan_segments(info.frames, info.frame_rate, 2.5).segments[1]
    extracted = extract_segment(info, segment, tmp_path / "x.mp4", max_dimension=256)
    answer = tmp_path / "a.mp4"
    run_ffmpeg(["-i", str(extracted), "-vf", f"fps=24,{STYLE}", "-c:v", "libx264", "-preset", "ultrafast",
                "-y", str(answer)])  # fmt: skip
    conformed = conform_clip(answer, info, segment, tmp_path / "c.mp4", encode=INTERMEDIATE_ENCODE)
    # The lossless intermediate: the very numbers a decode gives; the extract (lossy): within its rounding.
    for clip, tolerance in ((conformed, 0.0), (extracted, 0.15)):
        kept, decoded = load_frame_sums(clip), decode_frame_sums(clip)
        assert kept is not None and len(kept.sums) == len(decoded.sums) == probe_video(clip).frames == 60
        for window in (2, 12, 100):  # any window the finish step may ask for, up to the whole clip
            assert same_statistics(kept.statistics(window), decoded.statistics(window), tolerance), (clip, window)
    # segment_statistics reads the kept sums (here doctored: every pixel 100)...
    doctored = FrameSums(np.tile([1_440_000, 360_000, 360_000, 144_000_000, 36_000_000, 36_000_000], (60, 1)))
    save_frame_sums(conformed, doctored)
    assert np.allclose(segment_statistics(conformed).whole.mean, 100) and segment_statistics(conformed).frames == 60
    # ...unless the clip was written again since: then it decodes it.
    atomic_copy(extracted, conformed)
    assert load_frame_sums(conformed) is None
    assert same_statistics(segment_statistics(conformed, window=4), decode_frame_sums(extracted).statistics(4))


@pytest.mark.parametrize("with_sources", [False, True])
def test_anchoring_removes_the_seam_of_a_drifted_answer(shot, drifted, tmp_path, with_sources):
    info, plan = drifted["info"], drifted["plan"]
    (before,) = measure_seams(shot, drifted["joined"], [60])
    assert before.ratio > 1.5

    outputs = [segment_statistics(c) for c in drifted["conformed"]]
    sources = [segment_statistics(c) for c in drifted["extracted"]] if with_sources else None
    steps = plan_anchors(outputs, [s.cut_before for s in plan.segments], sources)
    assert [s.reason for s in steps] == ["anchor", "seam"]
    anchored = [
        conformed if step.is_identity else finish_clip(
            conformed, tmp_path / f"anchored{step.index}.mp4", transfer=step.transfer,
            weights=step.weights(probe_video(conformed).frames),
        )
        for conformed, step in zip(drifted["conformed"], steps)
    ]  # fmt: skip
    # The anchored clip keeps the conformed clip's frames, rate and MP4 timescale...
    for original, new in zip(drifted["conformed"], anchored):
        a, b = probe_video(original), probe_video(new)
        assert (b.frames, b.frame_rate, b.width, b.height, b.sample_aspect_ratio) == (
            a.frames, a.frame_rate, a.width, a.height, a.sample_aspect_ratio
        )
    # ...so it joins with them by stream copy and decodes cleanly.
    joined = join_segments(anchored, info, tmp_path / "anchored.mp4")
    assert probe_video(joined).frames == info.frames
    assert run_ffmpeg(["-v", "error", "-i", str(joined), "-f", "null", "-"]) == b""
    assert not list(tmp_path.glob(".*partial*"))

    (after,) = measure_seams(shot, joined, [60])
    assert after.passed and after.ratio <= 1.5, after


def test_finish_clip_weights_each_frame(drifted, tmp_path):
    conformed = drifted["conformed"][0]
    info = probe_video(conformed)
    lift = ColourTransfer(gain=(1.0, 1.0, 1.0), offset=(20.0, 0.0, 0.0))
    weights = anchor_weights(info.frames, strength=0.0, ramp_frames=20, ramp_start=True)
    out = finish_clip(conformed, tmp_path / "lifted.mp4", transfer=lift, weights=weights)
    size = (160, 90)
    before = plane_means(read_frames(conformed, 0, 60, frame_rate=info.frame_rate, size=size), size)
    after = plane_means(read_frames(out, 0, 60, frame_rate=info.frame_rate, size=size), size)
    lift_y = after[:, 0] - before[:, 0]
    # Weight 1 on the first frame (+20), 0.5 at frame 10, 0 from frame 20 on; chroma untouched.
    assert lift_y[0] == pytest.approx(20, abs=1.5)
    assert lift_y[10] == pytest.approx(10, abs=1.5)
    assert np.abs(lift_y[20:]).max() < 1.0
    assert np.abs(after[:, 1:] - before[:, 1:]).max() < 1.0


def test_the_lutyuv_filter_gives_the_lookup_tables_values():
    # One owner of the values: ffmpeg's filter (finish, looks) and the numpy tables (blend heads).
    transfer = ColourTransfer(gain=(1.37, 0.81, 1.12), offset=(-19.6, 30.3, -7.7))
    ramp = np.arange(256, dtype=np.uint8)
    # One 256x2 yuv444p frame holding every value in each plane.
    frame = np.stack([np.stack([ramp, ramp])] * 3).tobytes()
    for weight in (1.0, 0.37):
        filtered = run_ffmpeg([
            "-f", "rawvideo", "-pix_fmt", "yuv444p", "-s", "256x2", "-i", "-",
            "-vf", transfer.filter(weight, name="anchor"), "-f", "rawvideo", "-pix_fmt", "yuv444p", "-",
        ], input_bytes=frame)  # fmt: skip
        planes = np.frombuffer(filtered, dtype=np.uint8).reshape(3, 2, 256)[:, 0]
        # ffmpeg's round() takes an exact half up, np.rint to even: those values are left out.
        values = [np.arange(256) * g + o for g, o in zip(*transfer.weighted(weight))]
        for plane, table, value in zip(planes, transfer.lookup_tables(weight), values):
            whole = np.abs(value % 1 - 0.5) > 1e-6
            assert whole.sum() > 200 and np.array_equal(plane[whole], table[whole])


# ----------------------------------------------------------------- overlaps, cross-blended


def test_the_blend_keeps_contrast_where_a_dissolve_greys_out():
    rng = np.random.default_rng(0)
    before, after = (rng.integers(30, 226, size=(90, 160), dtype=np.uint8) for _ in range(2))
    blended = blend_keeping_contrast(before, after, 0.5).astype(float)
    dissolve = 0.5 * before.astype(float) + 0.5 * after.astype(float)
    wanted = 0.5 * before.std() + 0.5 * after.std()
    assert dissolve.std() < 0.75 * wanted  # two unrelated pictures: a plain mix loses ~30 % of the spread
    assert blended.std() == pytest.approx(wanted, rel=0.02)
    assert blended.mean() == pytest.approx(dissolve.mean(), abs=0.5)
    assert np.array_equal(blend_keeping_contrast(before, after, 0.0), before)
    assert list(blend_weights(3)) == [0.25, 0.5, 0.75]


def grey_clip(path: Path, level: int, frames: int) -> Path:
    run_ffmpeg([
        "-f", "lavfi", "-i", f"color=c=0x{level:02x}{level:02x}{level:02x}:size=64x36:rate=30",
        "-frames:v", str(frames), "-pix_fmt", "yuv420p", "-c:v", "libx264", "-crf", "10", "-y", str(path),
    ])  # fmt: skip
    return path


def test_finish_clip_drops_the_overlap_and_blends_the_next_one_in(tmp_path):
    dark, light = grey_clip(tmp_path / "dark.mp4", 60, 30), grey_clip(tmp_path / "light.mp4", 180, 30)
    tail = read_head(light, 6)
    assert tail.shape == (6, 64 * 36 * 3 // 2)
    first = finish_clip(dark, tmp_path / "first.mp4", blend_tail=tail)
    second = finish_clip(light, tmp_path / "second.mp4", drop_frames=6)
    assert probe_video(first).frames == 30 and probe_video(second).frames == 24
    size = (64, 36)
    luma = plane_means(read_frames(first, 0, 30, frame_rate="30/1", size=size), size)[:, 0]
    # Dark until the blend, then 1/7 .. 6/7 of the way to the light clip's level, rising.
    assert np.abs(luma[:24] - luma[0]).max() < 1
    steps = (luma[24:] - luma[0]) / (120 * 219 / 255)  # 60 -> 180 in full range is 103 levels of limited-range Y
    assert np.allclose(steps, np.arange(1, 7) / 7, atol=0.03), steps
    with pytest.raises(InvalidInputError):
        finish_clip(dark, tmp_path / "bad.mp4", drop_frames=28, blend_tail=tail)


def test_only_seams_inside_a_shot_are_judged_and_flagged():
    from prefect_modify_video.media.seams import SeamMetric
    from prefect_modify_video.tasks.report import RunSummary
    from prefect_modify_video.tasks.seams import SEAM_TABLE_DESCRIPTION, flagged_seams, judged_seams, seam_verdict

    def metric(frame, on_cut, ratio):
        jump = (ratio, 0.0, 0.0)
        return SeamMetric(frame=frame, on_cut=on_cut, output_jump=jump, source_jump=(1.0, 0.0, 0.0),
                          neighbour_jump=(1.0, 0.0, 0.0), ratio=ratio, threshold=1.5, passed=ratio <= 1.5)

    metrics = [metric(45, True, 9.0), metric(90, False, 2.0), metric(135, False, 1.0), metric(150, True, 0.5)]
    assert [m.frame for m in judged_seams(metrics)] == [90, 135]
    assert flagged_seams(metrics) == [90], "a big jump on a cut is the cut itself, not a visible seam"
    assert [seam_verdict(m) for m in metrics] == ["on a cut (not judged)", "flagged", "ok", "on a cut (not judged)"]
    assert "ratio = " in SEAM_TABLE_DESCRIPTION and "\n" not in SEAM_TABLE_DESCRIPTION.format(threshold=1.5)
    summary = RunSummary(source="a.mp4", backend="local", mode="flex_1", segments=5, paid=5, reused=0, frames=180,
                         frame_rate="30/1", duration_s=6.0, billed_s=6.0, seams=4, seams_on_cuts=2,
                         seams_flagged=flagged_seams(metrics))
    assert "2 inside shots (**1 above the threshold** at frames [90]), 2 on cuts" in summary.markdown()


def test_with_anchoring_the_first_segment_is_encoded_for_the_join_by_conform_when_a_cut_follows():
    """Issue 15: segment 0 is the anchor, left as it is; with a cut after it the finish step has nothing to do to it."""
    from prefect_modify_video.media.plan import plan_segments_on_cuts
    from prefect_modify_video.parameters import SeamOptions
    from prefect_modify_video.tasks.seams import finished_in_conform

    anchored = SeamOptions(anchor_colours=True)
    on_cut = plan_segments_on_cuts(180, "30/1", 2.5, cuts=[60], overlap_frames=6)
    assert [(s.cut_before, s.overlap_frames) for s in on_cut.segments] == [(False, 0), (True, 0), (False, 6)]
    assert finished_in_conform(on_cut, anchored) == {0}
    in_shot = plan_segments_on_cuts(180, "30/1", 2.5, cuts=[])
    assert finished_in_conform(in_shot, anchored) == set(), "the in-shot seam after it matches segment 1 to it"
    outputs = [clip(stats([100, 128, 128], [30, 5, 5]), stats([100 + k, 128, 128], [30, 5, 5])) for k in range(3)]
    steps = plan_anchors(outputs, [s.cut_before for s in on_cut.segments], outputs)
    assert steps[0].is_identity and steps[0].reason == "anchor"


def test_a_pending_conform_is_conformed_in_the_finish_encode_as_an_intermediate_would_be(shot, tmp_path):
    """Issue 15: the conform step writes no frames for the finish step (the answer stream-copied, its recipe in its
    tag); finish conforms, anchors, drops the overlap and blends in its one encode, frame-exact, the same pixels."""
    from prefect_modify_video.media.extract import write_frame_image
    from prefect_modify_video.media.finish import finish_parts
    from prefect_modify_video.media.pending import conformed_reading
    from prefect_modify_video.media.plan import plan_segments_on_cuts

    info = probe_video(shot)
    plan = plan_segments_on_cuts(info.frames, info.frame_rate, 2.5, cuts=[], overlap_frames=6)
    segment = plan.segments[1]
    assert segment.overlap_frames == 6 and segment.sent_frames == 66
    extracted = extract_segment(info, segment, tmp_path / "x.mp4")
    answer = tmp_path / "a.mp4"  # a service's answer: 24 fps, another length
    run_ffmpeg(["-i", str(extracted), "-vf", f"fps=24,{STYLE}", "-c:v", "libx264", "-preset", "ultrafast",
                "-y", str(answer)])  # fmt: skip
    pending = conform_clip(answer, info, segment, tmp_path / "p.mp4", pending=True)
    lossless = conform_clip(answer, info, segment, tmp_path / "i.mp4", encode=INTERMEDIATE_ENCODE)
    assert probe_video(pending).frames == probe_video(answer).frames, "no frames written: a stream copy"
    reading = conformed_reading(pending)
    assert (reading.frames, reading.width, reading.height) == (66, 320, 180)
    # Its statistics are those of the conformed frames (read at the answer's size: within a level's fraction).
    assert same_statistics(segment_statistics(pending, window=6), segment_statistics(lossless, window=6), 0.3)
    # The heads for the blend and a neighbour's first frame are read as conformed.
    assert np.abs(read_head(pending, 6).astype(int) - read_head(lossless, 6).astype(int)).max() <= 1
    images = [write_frame_image(clip, 40, tmp_path / f"f{clip.stem}.png") for clip in (pending, lossless)]
    assert run_ffmpeg(["-i", str(images[0]), "-f", "rawvideo", "-"]) == run_ffmpeg(["-i", str(images[1]), "-f", "rawvideo", "-"])

    lift = ColourTransfer(gain=(1.0, 1.0, 1.0), offset=(20.0, 0.0, 0.0))
    weights = anchor_weights(66, strength=0.0, ramp_frames=20, ramp_start=True)
    tail = read_head(lossless, 4)
    outputs = {}
    for clip in (pending, lossless):
        parts = finish_parts(clip, tmp_path / "finish" / f"{clip.stem}.mp4", transfer=lift, weights=weights,
                             drop_frames=6, blend_tail=tail, frame_rate=info.frame_rate)  # fmt: skip
        assert [probe_video(p).frames for p in parts] == [56, 4]  # 66 - 6 dropped, the last 4 in the blend clip
        for part in parts:
            part_info = probe_video(part)
            assert (part_info.frame_rate, part_info.width, part_info.height) == (info.frame_rate, 320, 180)
        outputs[clip.stem] = join_segments(parts, info, tmp_path / f"joined-{clip.stem}.mp4")
        assert run_ffmpeg(["-v", "error", "-i", str(outputs[clip.stem]), "-f", "null", "-"]) == b""
    size = (160, 90)
    means = {k: plane_means(read_frames(v, 0, 60, frame_rate=info.frame_rate, size=size), size) for k, v in outputs.items()}
    assert means["p"].shape == (60, 3) and np.abs(means["p"] - means["i"]).max() < 0.5
    # Weight 1 where the ramp starts (frame 0 of the clip, dropped with the overlap), 0.7 at frame 6 of it, 0 from 20.
    plain = plane_means(read_frames(lossless, 6, 60, frame_rate=info.frame_rate, size=size), size)
    lift_y = means["p"][:, 0] - plain[:, 0]
    assert lift_y[0] == pytest.approx(14, abs=1.5) and np.abs(lift_y[14:50]).max() < 1.0


def test_finish_parts_of_a_clip_whose_kept_frames_are_all_blended(tmp_path):
    from prefect_modify_video.media.finish import finish_parts

    dark, light = grey_clip(tmp_path / "dark.mp4", 60, 30), grey_clip(tmp_path / "light.mp4", 180, 30)
    parts = finish_parts(dark, tmp_path / "out.mp4", drop_frames=24, blend_tail=read_head(light, 6))
    assert parts == [tmp_path / "out.blend.mp4"] and probe_video(parts[0]).frames == 6
    assert not (tmp_path / "out.mp4").exists() and not list(tmp_path.glob(".*partial*"))


def test_the_steps_of_the_first_segments_follow_from_those_segments_alone():
    """What lets the flow finish segment k once segments 0 to k + 1 are conformed (``tasks.seams.SegmentFinisher``):
    ``plan_anchors`` over the first k answers gives the steps it gives them over all of them."""
    rng = np.random.default_rng(7)

    def statistics(frames: int = 40):
        means = rng.uniform([60, 110, 110], [160, 145, 145], size=(frames, 3))
        pixels = np.array([14_400, 3_600, 3_600])
        sums = np.hstack([means * pixels, (means**2 + 25) * pixels]).round().astype(np.int64)
        return FrameSums(sums).statistics(2)

    cut_before = [False, False, True, False, False, True, False]
    outputs, sources = [statistics() for _ in cut_before], [statistics() for _ in cut_before]
    every = plan_anchors(outputs, cut_before, sources, strength=0.6, ramp_frames=8)
    assert {step.reason for step in every} == {"anchor", "seam", "cut"}
    for count in range(1, len(cut_before)):
        first = plan_anchors(outputs[:count], cut_before, sources[:count], strength=0.6, ramp_frames=8)
        assert first == every[:count], count
    # A segment followed by a seam inside its shot ramps up to it, though that next answer is not given yet.
    assert plan_anchors(outputs[:1], cut_before, sources[:1])[0].ramp_end
    with pytest.raises(InvalidInputError, match="cut_before needs every segment"):
        plan_anchors(outputs, cut_before[:3], sources)
