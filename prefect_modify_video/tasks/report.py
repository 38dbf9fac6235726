"""Artifacts that show a person what a run did: segment table, progress, summary."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from prefect_modify_video.media.plan import SegmentPlan


class RunSummary(BaseModel):
    """Totals of a run, as the flow knows them when it reports: made by the flow, read by the report task.

    The flow makes it once the segments are done (``output`` still empty), completes it after
    the join and the seam report, and returns a ``ModifyVideoResult`` made from it.

    Example:
        >>> summary = RunSummary(source="film.mp4", backend="local", mode="flex_1", segments=2, paid=1, reused=1,
        ...                      frames=60, frame_rate="30/1", duration_s=2.0, billed_s=2.0)
        >>> summary.output is None, summary.seams_flagged
        (True, [])
    """

    source: str = Field(description="The source video, as fetched (a local path).")
    backend: str = Field(description="The backend's name.")
    mode: str = Field(description="The mode sent.")
    prompt: str = Field(default="", description="The prompt sent.")
    segments: int = Field(description="Segments of the plan.")
    paid: int = Field(description="Segments this run paid for.")
    reused: int = Field(description="Segments found in the store, not paid again.")
    frames: int = Field(description="Frames of the source (and of the output).")
    frame_rate: str = Field(description="Frame rate of the output, as a fraction.")
    duration_s: float = Field(description="Length of the video in seconds.")
    billed_s: float = Field(description="Seconds sent to the service, overlaps included.")
    overlap_s: float = Field(default=0.0, description="Seconds of overlaps sent twice at in-shot seams.")
    cost_usd: float = Field(default=0.0, description="Cost of this run's paid calls.")
    remaining_credits: float | None = Field(default=None, description="Credits left, as the service last said.")
    seconds: float = Field(default=0.0, description="Wall time of the run so far.")
    output: str | None = Field(default=None, description="Where the output is; empty until it is written.")
    contact_sheet: str | None = Field(default=None, description="Picture of every seam, source above output.")
    seams: int = Field(default=0, description="Seams measured.")
    seams_on_cuts: int = Field(default=0, description="Seams on the source's hard cuts: hidden by the cut, not judged.")
    seams_flagged: list[int] = Field(
        default_factory=list, description="Frames of the seams inside shots above the threshold."
    )
    worst_seam_ratio: float | None = Field(
        default=None,
        description="Largest jump at a seam inside a shot as a multiple of the source's own (None: no such seam).",
    )
    anchored: bool = Field(default=False, description="Whether colours were anchored across segments.")

    def markdown(self, failures: list[str] = ()) -> str:
        """The summary as the markdown of the run's summary artifact."""
        lines = [
            "# Modify video",
            "",
            f"- **Output**: `{self.output}`" if self.output else "- **Output**: not written",
            f"- **Source**: `{self.source}`",
            f"- **Backend**: {self.backend} (mode {self.mode})",
            f"- **Prompt**: {self.prompt or '(none)'}",
            f"- **Segments**: {self.segments} ({self.paid} paid in this run, {self.reused} reused)",
            f"- **Frames**: {self.frames} at {self.frame_rate} fps, {self.duration_s:.3f} s",
            f"- **Billed seconds**: {self.billed_s:.3f} ({self.overlap_s:.3f} s of overlaps at in-shot seams)",
            f"- **Cost**: ${self.cost_usd:.2f}"
            + (f", credits left: {self.remaining_credits}" if self.remaining_credits is not None else ""),
            f"- **Took**: {self.seconds:.1f} s",
        ]
        if self.seams:
            flagged = self.seams_flagged
            in_shots = self.seams - self.seams_on_cuts
            judged = (
                (f"**{len(flagged)} above the threshold** at frames {flagged}" if flagged else "all within the threshold")
                if in_shots else "none to judge"
            )
            lines.append(
                f"- **Seams**: {in_shots} inside shots ({judged}), {self.seams_on_cuts} on cuts (hidden by the cut, "
                f"not judged); colours anchored: {'yes' if self.anchored else 'no'}"
            )
            if self.contact_sheet:
                lines.append(f"- **Seam contact sheet**: `{self.contact_sheet}` (source above, output below)")
        if failures:
            lines += ["", "## Segments that failed", "", *[f"- {line}" for line in failures],
                      "", "Re-run the same parameters: only these segments are sent again."]
        return "\n".join(lines)


@task(name="report-run", description="Publishes the segment table and the run summary as artifacts.", cache_policy=NO_CACHE)
def report_modify_video_run(plan: SegmentPlan, rows: list[dict], summary: RunSummary, failures: list[str]) -> None:
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
    create_markdown_artifact(markdown=summary.markdown(failures), key="modify-video-summary", description="Run summary.")
