"""Tasks that hide and measure the seams between segments: colour anchoring and the seam report."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from prefect_modify_video.media.anchor import apply_anchor, plan_anchors, segment_statistics
from prefect_modify_video.media.plan import SegmentPlan
from prefect_modify_video.media.probe import VideoInfo
from prefect_modify_video.media.seams import SeamMetric, measure_seams, write_contact_sheet

SEAM_WINDOW_FRAMES = 2


@task(
    name="anchor-colours",
    description="Brings each segment's colours toward its neighbour's at in-shot seams and toward the first segment's look after cuts.",
    cache_policy=NO_CACHE,
)
def anchor_segment_colours(
    plan: SegmentPlan, info: VideoInfo, extracted: dict[int, str], conformed: dict[int, str], work_dir: str
) -> dict[int, str]:
    """Applies one colour transform per segment (never re-estimated per frame), ramped toward in-shot seams.

    Args:
        plan: The segment plan (its ``cut_before`` flags say which seams are on cuts).
        info: The source.
        extracted: The extracted (source) clip of each segment, by index.
        conformed: The conformed answer of each segment, by index.
        work_dir: Where the anchored clips are written.

    Returns:
        The clip to join for each segment: anchored, or the conformed one when unchanged.
    """
    indices = [s.index for s in plan.segments]
    # Fitted on the two frames each side of a seam: wider windows let the picture's own motion
    # into the fit (on the drifting fake, 8 frames left a 2.2x seam, 2 frames 0.4-0.7x).
    outputs = [segment_statistics(conformed[i], window=SEAM_WINDOW_FRAMES) for i in indices]
    sources = [segment_statistics(extracted[i], window=SEAM_WINDOW_FRAMES) for i in indices]
    steps = plan_anchors(outputs, [s.cut_before for s in plan.segments], sources, ramp_frames=max(1, round(info.fps)))
    anchored = dict(conformed)
    for step in steps:
        if step.is_identity:
            continue
        destination = Path(work_dir) / "anchor" / f"{step.index:05d}.mp4"
        destination.parent.mkdir(parents=True, exist_ok=True)
        apply_anchor(
            Path(conformed[step.index]),
            destination,
            step.transfer,
            strength=step.strength,
            ramp_frames=step.ramp_frames,
            ramp_start=step.ramp_start,
            ramp_end=step.ramp_end,
            frame_rate=info.frame_rate,
        )
        anchored[step.index] = str(destination)
    return anchored


@task(name="report-seams", description="Measures every seam against the source and draws a contact sheet.", cache_policy=NO_CACHE)
def report_video_seams(
    source: str, output: str, plan: SegmentPlan, contact_sheet: str, threshold: float
) -> tuple[list[SeamMetric], str | None]:
    """Measures the jump in luma and colour at every seam and saves a contact sheet of them.

    Returns:
        The seam metrics and the contact sheet's path (``None`` for a single segment).
    """
    seams = plan.segments[1:]
    metrics = measure_seams(
        Path(source), Path(output), [s.first_frame for s in seams], on_cut=[s.cut_before for s in seams],
        threshold=threshold,
    )
    if not metrics:
        return [], None
    create_table_artifact(
        table=[
            {
                "seam_frame": m.frame,
                "on_cut": m.on_cut,
                "output_jump_yuv": [round(v, 2) for v in m.output_jump],
                "source_jump_yuv": [round(v, 2) for v in m.source_jump],
                "neighbour_jump_yuv": [round(v, 2) for v in m.neighbour_jump],
                "ratio": round(m.ratio, 2),
                "passed": m.passed,
            }
            for m in metrics
        ],
        key="modify-video-seams",
        description="Jump at each seam against the source's own jump and the neighbouring frames'.",
    )
    sheet = write_contact_sheet(Path(source), Path(output), [s.first_frame for s in seams], Path(contact_sheet))
    return metrics, str(sheet) if sheet else None
