"""Blocks of prefect-modify-video: one credentials block per service, and saved parameter presets."""

from prefect_modify_video.blocks.credentials import (
    FalCredentials,
    LumaAgentsCredentials,
    LumaCredentials,
    ReplicateCredentials,
    RunwayCredentials,
    SegmindCredentials,
    ServiceCredentials,
    build_backend,
    credentials_block_for,
)
from prefect_modify_video.blocks.presets import ModifyVideoPreset

__all__ = [
    "FalCredentials",
    "LumaAgentsCredentials",
    "LumaCredentials",
    "ModifyVideoPreset",
    "ReplicateCredentials",
    "RunwayCredentials",
    "SegmindCredentials",
    "ServiceCredentials",
    "build_backend",
    "credentials_block_for",
]
