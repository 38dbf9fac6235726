"""Tasks that hide and measure the seams between segments: anchoring and blending, and the seam report."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from prefect_modify_video.media.anchor import AnchorStep, ClipStatistics, plan_anchors, segment_statistics
from prefect_modify_video.media.colour import IDENTITY, ColourTransfer
from prefect_modify_video.media.extract import SourceSegment, sent_frame_sums
from prefect_modify_video.media.finish import finish_parts, read_head
from prefect_modify_video.media.plan import SegmentPlan
from prefect_modify_video.media.probe import VideoInfo
from prefect_modify_video.media.seams import SeamMetric, measure_seams_and_sheet
from prefect_modify_video.parameters import SeamOptions

SEAM_WINDOW_FRAMES = 2


def finished_in_conform(plan: SegmentPlan, seams: SeamOptions) -> set[int]:
    """Indices of the segments the finish step leaves as they are: their conform step encodes them for the join.

    Those are the segments of a run without colour anchoring (or of one segment) that have no
    overlap and whose next segment has none: nothing blends into them or is dropped from them. With
    anchoring, segment 0 when a cut follows it: it is the anchor (``plan_anchors`` leaves it as it
    is, no first-frame image being given here) and nothing blends into it. Its statistics were taken
    from its frames before that encode (``anchor.write_with_frame_sums``), as from the lossless intermediate.
    """
    segments = plan.segments
    if seams.anchor_colours is not False and len(segments) > 1:
        return {0} if segments[1].cut_before and not segments[1].overlap_frames else set()
    following = [*segments[1:], None]
    return {
        segment.index
        for segment, after in zip(segments, following)
        if not segment.overlap_frames and not (after is not None and after.overlap_frames)
    }


class SegmentFinisher:
    """Makes each segment's clip(s) for the join as soon as it can: once its answer and the next one are conformed.

    A segment's colour step depends only on the segments before it (``media.anchor.plan_anchors``) and its
    blended tail on the next segment's first frames, so segment k is finished once segments 0 to k + 1
    are conformed. The flow finishes each segment then, while later segments still wait on the
    service, instead of every final encode after the last answer.

    With ``seams.anchor_colours``, each segment gets one colour transfer (never re-estimated per frame),
    ramped toward in-shot seams. A segment with an overlap has it dropped and cross-blended into the
    previous segment's last frames (``media.finish``). Every other segment gets its one final encode
    here, from its pending clip (``media.pending``: the answer, conformed in the same ffmpeg command) or a
    lossless intermediate (``conform.INTERMEDIATE_ENCODE``). The segments of ``finished_in_conform`` were
    encoded for the join by their conform step and are joined as they are.

    Args:
        plan: The segment plan (``cut_before`` and ``overlap_frames`` say what each seam is).
        info: The source.
        work_dir: Where the finished clips are written.
        seams: The run's seam options, resolved for its backend (``SeamOptions.resolved_for``):
            whether to anchor colours (``anchor_colours``, empty counts as on) and the weight of
            each in-shot segment's correction away from its seams (``anchor_strength``).
        max_dimension: The backend's cap on the sent frames' longest side (for statistics read from the source).
    """

    def __init__(
        self, plan: SegmentPlan, info: VideoInfo, work_dir: str, seams: SeamOptions, max_dimension: int | None = None
    ) -> None:
        self.plan, self.info, self.work_dir, self.seams, self.max_dimension = plan, info, work_dir, seams, max_dimension
        self.extracted: dict[int, str] = {}
        self.conformed: dict[int, str] = {}
        self.as_conformed = finished_in_conform(plan, seams)
        self.anchoring = seams.anchor_colours is not False and len(plan.segments) > 1
        # Fitted on the frames each side of a seam: on overlaps, the same source frames twice; without,
        # two frames (wider windows let the picture's own motion into the fit: on the drifting fake,
        # 8 frames left a 2.2x seam, 2 frames 0.4-0.7x).
        overlaps = [s.overlap_frames for s in plan.segments if s.overlap_frames]
        self.window = max(SEAM_WINDOW_FRAMES, min(overlaps, default=0))
        self._statistics: dict[int, tuple[ClipStatistics, ClipStatistics]] = {}
        self._steps: list[AnchorStep] = []
        self._next = 0

    def add(self, index: int, conformed: str, extracted: str | None = None) -> list[int]:
        """Records a segment's conformed answer (and its extracted clip: none when its backend read the
        source, ``ModifyBackend.reads_source``); returns the segments that can now be finished, in order, each once.
        """
        self.conformed[index] = conformed
        if extracted is not None:
            self.extracted[index] = extracted
        count, ready = len(self.plan.segments), []
        while self._next < count and all(i in self.conformed for i in range(self._next, min(self._next + 2, count))):
            ready.append(self._next)
            self._next += 1
        return ready

    def _statistics_of(self, index: int) -> tuple[ClipStatistics, ClipStatistics]:
        """A segment's answer's and source's statistics, read once."""
        if index not in self._statistics:
            segment = self.plan.segments[index]
            source = (
                segment_statistics(self.extracted[index], window=self.window) if index in self.extracted
                else sent_frame_sums(SourceSegment(self.info, segment, self.max_dimension)).statistics(self.window)
            )
            self._statistics[index] = (segment_statistics(self.conformed[index], window=self.window), source)
        return self._statistics[index]

    def _transfer_of(self, index: int) -> tuple[ColourTransfer, np.ndarray | None]:
        if not self.anchoring:
            return IDENTITY, None
        if index >= len(self._steps):  # the steps of the first segments stay as planned (``plan_anchors``)
            known = [self._statistics_of(i) for i in range(index + 1)]
            self._steps = plan_anchors(
                [output for output, _ in known], [s.cut_before for s in self.plan.segments],
                [source for _, source in known],
                strength=self.seams.anchor_strength, ramp_frames=max(1, round(self.info.fps)),
            )
        step = self._steps[index]
        if step.is_identity:
            return IDENTITY, None
        return step.transfer, step.weights(self.plan.segments[index].sent_frames)

    def finish(self, index: int) -> list[str]:
        """Segment ``index``'s clips to join, in order (a segment whose tail is blended gives two:
        ``media.finish.finish_parts``); it and the next segment must have been ``add``-ed."""
        segments = self.plan.segments
        if index in self.as_conformed:
            return [self.conformed[index]]
        segment = segments[index]
        transfer, weights = self._transfer_of(index)
        following = segments[index + 1] if index + 1 < len(segments) else None
        tail_frames = following.overlap_frames if following else 0
        tail = None
        if following and tail_frames:
            tail = read_head(self.conformed[following.index], tail_frames, *self._transfer_of(following.index))
        # The body and the blended tail as two clips: the join puts them together by stream copy.
        parts = finish_parts(
            self.conformed[index],
            Path(self.work_dir) / "finish" / f"{segment.name}.mp4",
            transfer=transfer,
            weights=weights,
            drop_frames=segment.overlap_frames,
            blend_tail=tail,
            frame_rate=self.info.frame_rate,
            seam_after=following is not None,
        )
        return [str(part) for part in parts]


@task(
    name="finish-segment",
    task_run_name="finish-{index:05d}",
    description="Anchors one segment's colours, drops its overlap and cross-blends its in-shot seam, ready to join.",
    cache_policy=NO_CACHE,
)
def finish_segment(finisher: SegmentFinisher, index: int) -> list[str]:
    """``SegmentFinisher.finish`` as a task: the flow runs it for each segment once it and the next are conformed."""
    return finisher.finish(index)


@task(
    name="finish-segments",
    description="Anchors each segment's colours, drops overlaps and cross-blends in-shot seams, ready to join.",
    cache_policy=NO_CACHE,
)
def finish_segment_clips(
    plan: SegmentPlan,
    info: VideoInfo,
    extracted: dict[int, str],
    conformed: dict[int, str],
    work_dir: str,
    seams: SeamOptions,
    max_dimension: int | None = None,
) -> list[str]:
    """Makes every segment's clip for the join at once, its answers all conformed (``SegmentFinisher``).

    Args:
        plan: The segment plan.
        info: The source.
        extracted: The extracted (source) clip of each segment, by index; a segment without one (its backend read
            the source: ``ModifyBackend.reads_source``) has its source statistics read from the source.
        conformed: The conformed answer of each segment, by index.
        work_dir: Where the finished clips are written.
        seams: The run's seam options, resolved for its backend (``SeamOptions.resolved_for``).
        max_dimension: The backend's cap on the sent frames' longest side (for statistics read from the source).

    Returns:
        The clips to join, in order.
    """
    finisher = SegmentFinisher(plan, info, work_dir, seams, max_dimension)
    for segment in plan.segments:
        finisher.add(segment.index, conformed[segment.index], extracted.get(segment.index))
    return [part for segment in plan.segments for part in finisher.finish(segment.index)]


SEAM_TABLE_DESCRIPTION = (
    "ratio = the output's jump in mean Y, U, V (0-255) from the frame before a seam to the one after, divided by "
    "the larger of the source's own jump there and the output's usual frame-to-frame jump around it; a seam inside "
    "a shot above {threshold:g} is flagged; a seam on a cut is not judged (the cut hides it)."
)
"""One line under the seam table saying what its numbers mean."""


def judged_seams(metrics: list[SeamMetric]) -> list[SeamMetric]:
    """The seams that can be seen: those inside a shot (a seam on a hard cut is hidden by the cut itself)."""
    return [m for m in metrics if not m.on_cut]


def flagged_seams(metrics: list[SeamMetric]) -> list[int]:
    """Frames of the in-shot seams above the threshold: the ones to look at."""
    return [m.frame for m in judged_seams(metrics) if not m.passed]


def seam_verdict(metric: SeamMetric) -> str:
    """``ok``, ``flagged`` or ``on a cut (not judged)``: the seam table's verdict column."""
    if metric.on_cut:
        return "on a cut (not judged)"
    return "ok" if metric.passed else "flagged"


@task(name="report-seams", description="Measures every seam against the source and draws a contact sheet.", cache_policy=NO_CACHE)
def report_video_seams(
    source: str, output: str, plan: SegmentPlan, contact_sheet: str, threshold: float
) -> tuple[list[SeamMetric], str | None]:
    """Measures the jump in luma and colour at every seam and saves a contact sheet of them.

    Returns:
        The seam metrics and the contact sheet's path (``None`` for a single segment).
    """
    seams = plan.segments[1:]
    # One read of each video around each seam serves the metrics and the contact sheet.
    metrics, sheet = measure_seams_and_sheet(
        Path(source), Path(output), [s.first_frame for s in seams], on_cut=[s.cut_before for s in seams],
        overlaps=[s.overlap_frames for s in seams], threshold=threshold, sheet_png=Path(contact_sheet),
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
                "verdict": seam_verdict(m),
            }
            for m in metrics
        ],
        key="modify-video-seams",
        description=SEAM_TABLE_DESCRIPTION.format(threshold=threshold),
    )
    return metrics, str(sheet) if sheet else None
