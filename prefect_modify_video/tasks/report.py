"""Artifacts that show a person what a run did: segment table, progress, summary."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from prefect_modify_video.media.plan import SegmentPlan


@task(name="report-run", description="Publishes the segment table and the run summary as artifacts.", cache_policy=NO_CACHE)
def report_modify_video_run(plan: SegmentPlan, rows: list[dict], summary: dict, failures: list[str]) -> None:
    """Creates the segment table and the markdown summary of a run.

    Args:
        plan: The segment plan.
        rows: One dict per segment: paid, seconds taken, cost, state.
        summary: Totals of the run (output, frames, billed calls, cost...).
        failures: One line per segment that failed for good.
    """
    by_index = {row["index"]: row for row in rows}
    table = [
        {
            "index": s.index,
            "start_s": round(s.start_s, 3),
            "end_s": round(s.end_s, 3),
            "frames": s.frames,
            "overlap_frames": s.overlap_frames,
            "state": by_index.get(s.index, {}).get("state", "not run"),
            "paid": by_index.get(s.index, {}).get("paid", False),
            "cost_usd": by_index.get(s.index, {}).get("cost_usd"),
            "seconds_taken": round(by_index.get(s.index, {}).get("seconds", 0.0), 2),
        }
        for s in plan.segments
    ]
    create_table_artifact(table=table, key="modify-video-segments", description="Segments of the run.")
    lines = [
        "# Modify video",
        "",
        f"- **Output**: `{summary['output']}`" if summary.get("output") else "- **Output**: not written",
        f"- **Source**: `{summary['source']}`",
        f"- **Backend**: {summary['backend']} (mode {summary['mode']})",
        f"- **Segments**: {summary['segments']} ({summary['paid']} paid in this run, {summary['reused']} reused)",
        f"- **Frames**: {summary['frames']} at {summary['frame_rate']} fps, {summary['duration_s']:.3f} s",
        f"- **Billed seconds**: {summary.get('billed_s', summary['duration_s']):.3f} "
        f"({summary.get('overlap_s', 0.0):.3f} s of overlaps at in-shot seams)",
        f"- **Cost**: ${summary['cost_usd']:.2f}"
        + (f", credits left: {summary['remaining_credits']}" if summary.get("remaining_credits") is not None else ""),
        f"- **Took**: {summary['seconds']:.1f} s",
    ]
    if summary.get("seams"):
        flagged = summary.get("seams_flagged") or []
        lines.append(
            f"- **Seams**: {summary['seams']}, colours anchored: {'yes' if summary.get('anchored') else 'no'}; "
            + (f"**{len(flagged)} above the threshold** at frames {flagged}" if flagged else "all within the threshold")
        )
        if summary.get("contact_sheet"):
            lines.append(f"- **Seam contact sheet**: `{summary['contact_sheet']}` (source above, output below)")
    if failures:
        lines += ["", "## Segments that failed", "", *[f"- {line}" for line in failures],
                  "", "Re-run the same parameters: only these segments are sent again."]
    create_markdown_artifact(markdown="\n".join(lines), key="modify-video-summary", description="Run summary.")
