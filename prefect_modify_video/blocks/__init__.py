"""Blocks of prefect-modify-video: one credentials block per modify-video service."""

from prefect_modify_video.blocks.credentials import (
    FalCredentials,
    LumaCredentials,
    ReplicateCredentials,
    SegmindCredentials,
    credentials_block_for,
)

__all__ = [
    "FalCredentials",
    "LumaCredentials",
    "ReplicateCredentials",
    "SegmindCredentials",
    "credentials_block_for",
]
