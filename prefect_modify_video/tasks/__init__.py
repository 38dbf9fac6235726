"""Prefect tasks of the modify-video pipeline."""

from prefect_modify_video.tasks.media import (
    join_video_segments,
    plan_video_segments,
    probe_source_video,
)
from prefect_modify_video.tasks.report import RunSummary, report_modify_video_run
from prefect_modify_video.tasks.seams import finish_segment_clips, report_video_seams
from prefect_modify_video.tasks.segment import modify_video_segment, neighbour_first_frame

__all__ = [
    "RunSummary",
    "finish_segment_clips",
    "join_video_segments",
    "modify_video_segment",
    "neighbour_first_frame",
    "plan_video_segments",
    "probe_source_video",
    "report_modify_video_run",
    "report_video_seams",
]
