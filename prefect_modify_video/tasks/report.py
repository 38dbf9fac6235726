"""Artifacts that show a person what a run did: segment table, progress, summary."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from pydantic import BaseModel, Field

from prefect_modify_video.media.ffmpeg import run_ffmpeg
from prefect_modify_video.media.plan import SegmentPlan
from prefect_modify_video.progress import SegmentProgress

THUMBNAIL_WIDTH = 640
"""Widest picture put inline in a summary (a JPEG of a few tens of KB: artifacts are kept in Prefect's database)."""


def image_data_uri(path: str | Path, max_width: int = THUMBNAIL_WIDTH) -> str | None:
    """A small JPEG of a picture as a ``data:`` URI, for a markdown artifact the browser shows without a file server.

    Prefect's UI renders markdown artifacts (marked, then DOMPurify, which lets ``data:`` images
    through); a path on the worker's disk could not be opened by the browser.

    Returns:
        The URI, or ``None`` when there is no picture to show.
    """
    if not path or not Path(path).is_file():
        return None
    jpeg = run_ffmpeg([
        "-v", "error", "-i", str(path), "-vf", f"scale='min({max_width},iw)':-2", "-frames:v", "1",
        "-q:v", "5", "-f", "image2pipe", "-c:v", "mjpeg", "-",
    ])
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def locate(location: str, *, link_seconds: int = 7 * 24 * 3600) -> tuple[str | None, str | None]:
    """Where an output is, absolutely, and a link to it where its storage can give one.

    Args:
        location: A local path (maybe relative to the worker's folder) or a ``block://`` reference.
        link_seconds: How long a presigned link stays valid.

    Returns:
        ``(where, url)``: an absolute local path or the block file's path on this machine (else
        ``None``); and a presigned URL for an object-store block (else ``None``).
    """
    from prefect_modify_video.errors import InvalidInputError
    from prefect_modify_video.storage.blocks import open_storage
    from prefect_modify_video.storage.locations import is_block_reference

    if not is_block_reference(location):
        return os.path.abspath(Path(location).expanduser()), None
    ref, storage = open_storage(location)
    local = storage.local_path(ref)
    if local is not None:
        return os.path.abspath(local), None
    try:
        return None, storage.sign(ref, link_seconds)
    except InvalidInputError:  # this storage cannot sign: the reference is all there is
        return None, None


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
    free: bool = Field(default=False, description="Whether the backend costs nothing (its calls restyle, unpaid).")
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
    output_where: str | None = Field(
        default=None, description="The output's absolute path on the worker (a block's file too, where it has one)."
    )
    output_url: str | None = Field(default=None, description="A link to the output (presigned, for an object store).")
    contact_sheet: str | None = Field(default=None, description="Picture of every seam, source above output.")
    contact_sheet_image: str | None = Field(
        default=None, description="The contact sheet as a small inline image (a data: URI) for the summary.", repr=False
    )
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
            *([f"- **On the worker**: `{self.output_where}`"] if self.output_where and self.output_where != self.output else []),
            *([f"- **Link**: [download the output]({self.output_url}) (valid for 7 days)"] if self.output_url else []),
            f"- **Source**: `{self.source}`",
            f"- **Backend**: {self.backend} (mode {self.mode})",
            f"- **Prompt**: {self.prompt or '(none)'}",
            f"- **Segments**: {self.segments} ({self.paid} {'restyled' if self.free else 'paid'} in this run, "
            f"{self.reused} reused)",
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
            if self.contact_sheet_image:
                lines += ["", f"![Seam contact sheet: source above, output below]({self.contact_sheet_image})"]
        if failures:
            lines += ["", "## Segments that failed", "", *[f"- {line}" for line in failures],
                      "", "Re-run the same parameters: only these segments are sent again."]
        return "\n".join(lines)


EVENT_PREFIX = "modify-video."
"""Every event of this plugin starts with it: ``modify-video.segment.paid|reused|failed``, ``modify-video.run.completed|failed``."""


def _video_resource(output: str | None) -> dict[str, str]:
    """The resource of a run's events: its output (as given), so an automation can match a folder's outputs."""
    location = output or "unknown"
    return {
        "prefect.resource.id": f"modify-video.output.{location}",
        "prefect.resource.name": Path(location.split(" (")[0]).name or location,
    }


def emit_segment_event(
    outcome: str, *, index: int, output: str | None, backend: str, mode: str, cost_usd: float | None = None,
    error: str | None = None,
) -> None:
    """Emits ``modify-video.segment.<outcome>`` (``paid``, ``reused`` or ``failed``) for one segment.

    The payload has the segment's index, its cost (0 when reused), the run's output, backend
    and mode, and the error's first line for a failure. Prefect adds the flow run, flow and
    deployment as related resources.
    """
    from prefect.events import emit_event

    payload = {"segment": index, "cost_usd": round(cost_usd or 0.0, 6), "output": output, "backend": backend,
               "mode": mode}
    if error:
        payload["error"] = error
    emit_event(event=f"{EVENT_PREFIX}segment.{outcome}", resource=_video_resource(output), payload=payload)


def emit_run_event(outcome: str, *, output: str | None, summary: RunSummary | None = None, error: str | None = None) -> None:
    """Emits ``modify-video.run.<outcome>`` (``completed`` or ``failed``) when a run ends.

    The payload has the output, the cost and the paid and reused segments (when the run got
    that far), and the error's first line for a failure.
    """
    from prefect.events import emit_event

    payload: dict = {"output": output, "cost_usd": round(summary.cost_usd, 6) if summary else 0.0}
    if summary is not None:
        payload.update(
            billed_calls=summary.paid, reused_segments=summary.reused, segments=summary.segments,
            backend=summary.backend, mode=summary.mode, seams_flagged=summary.seams_flagged,
        )
    if error:
        payload["error"] = error
    emit_event(event=f"{EVENT_PREFIX}run.{outcome}", resource=_video_resource(output), payload=payload)


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


PROGRESS_ARTIFACT_SECONDS = 2.0
"""Shortest time between two updates of a run's progress artifact. Each update is a call to the Prefect server
that the flow waits for: at one a segment it was most of Prefect's cost per segment (0.10 of 0.16 s, measured
with ``bench/concurrency.py``'s no-op flow on a loaded machine). The last segment always updates it."""


class RunProgressArtifact:
    """The progress artifact on the run's page: created at 0 %, updated as segments finish.

    Updates come at most every ``PROGRESS_ARTIFACT_SECONDS`` (the flow's log line still says each
    segment) and always when the last segment is done. A Prefect server that does not answer (after
    the client's own retries) skips an update with a warning instead of failing the run: the next one
    carries it.
    """

    def __init__(self, segments: int):
        from prefect.artifacts import create_progress_artifact

        self.id = create_progress_artifact(
            progress=0.0, key="modify-video-progress", description=f"Segments done of {segments}."
        )
        self._updated_at = time.monotonic()

    def show(self, progress: SegmentProgress) -> None:
        """Shows ``progress`` unless the last update is less than ``PROGRESS_ARTIFACT_SECONDS`` old and segments remain."""
        from prefect.artifacts import update_progress_artifact

        if progress.done < progress.total and time.monotonic() - self._updated_at < PROGRESS_ARTIFACT_SECONDS:
            return
        self._updated_at = time.monotonic()
        try:
            update_progress_artifact(self.id, progress=progress.percent, description=progress.describe())
        except Exception as error:  # noqa: BLE001 - progress is for people; the run's work goes on
            get_run_logger().warning("the progress artifact was not updated (%s: %s)", type(error).__name__, error)
