"""Flows of prefect-modify-video."""

from prefect_modify_video.flows.modify_video import ModifyVideoResult, SegmentsFailedError, modify_video
from prefect_modify_video.parameters import BackendSpec, ModifyVideoParameters, RetryOptions, SeamOptions

__all__ = [
    "BackendSpec",
    "ModifyVideoParameters",
    "ModifyVideoResult",
    "RetryOptions",
    "SeamOptions",
    "SegmentsFailedError",
    "modify_video",
]
