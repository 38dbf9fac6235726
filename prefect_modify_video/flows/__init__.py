"""Flows of prefect-modify-video."""

from prefect_modify_video.flows.modify_video import ModifyVideoResult, SegmentsFailedError, modify_video
from prefect_modify_video.flows.parameters import BackendSpec, ModifyVideoParameters

__all__ = ["BackendSpec", "ModifyVideoParameters", "ModifyVideoResult", "SegmentsFailedError", "modify_video"]
