"""Test helpers: a fake modify-video server speaking Segmind, Luma, fal and Replicate."""

from prefect_modify_video.testing.fake import (
    DIALECTS,
    FakeModifyServer,
    Fault,
    FaultKind,
    ProviderStats,
    ReceivedCall,
    render_modified_clip,
    run_fake_server,
)

__all__ = [
    "DIALECTS",
    "FakeModifyServer",
    "Fault",
    "FaultKind",
    "ProviderStats",
    "ReceivedCall",
    "render_modified_clip",
    "run_fake_server",
]
