"""Flows of prefect-modify-video."""

from prefect_modify_video.flows.modify_video import ModifyVideoResult, SegmentsFailedError, modify_video
from prefect_modify_video.parameters import BackendSpec, ModifyVideoParameters, RetryOptions, SeamOptions, flow_arguments

__all__ = [
    "BackendSpec",
    "ModifyVideoParameters",
    "ModifyVideoResult",
    "RetryOptions",
    "SeamOptions",
    "SegmentsFailedError",
    "flow_arguments",
    "modify_video",
]
