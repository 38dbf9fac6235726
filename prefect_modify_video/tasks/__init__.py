"""Prefect tasks of the modify-video pipeline."""

from prefect_modify_video.tasks.media import (
    conform_modified_segment,
    extract_video_segment,
    join_video_segments,
    neighbour_first_frame,
    plan_video_segments,
    probe_source_video,
)
from prefect_modify_video.tasks.modify import modify_video_segment
from prefect_modify_video.tasks.report import RunSummary, report_modify_video_run
from prefect_modify_video.tasks.seams import finish_segment_clips, report_video_seams

__all__ = [
    "RunSummary",
    "conform_modified_segment",
    "extract_video_segment",
    "finish_segment_clips",
    "join_video_segments",
    "modify_video_segment",
    "neighbour_first_frame",
    "plan_video_segments",
    "probe_source_video",
    "report_modify_video_run",
    "report_video_seams",
]
