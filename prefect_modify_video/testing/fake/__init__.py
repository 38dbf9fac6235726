"""A fake modify-video server: one local HTTP port speaking Segmind, Luma, fal and Replicate.

Modules: ``server`` (the server, its counters, scripting, jobs and billing, and the HTTP
handler), ``faults`` (what a test can make a request do), ``render`` (the ffmpeg work), and
one dialect per service (``segmind``, ``luma``, ``fal``, ``replicate``), registered in
``dialects.DIALECTS``.
"""

from prefect_modify_video.testing.fake.dialect import MODES, Dialect
from prefect_modify_video.testing.fake.dialects import DIALECTS, SERVICES
from prefect_modify_video.testing.fake.faults import Fault, FaultKind
from prefect_modify_video.testing.fake.render import render_modified_clip
from prefect_modify_video.testing.fake.server import (
    FakeModifyServer,
    ProviderStats,
    ReceivedCall,
    run_fake_server,
)

__all__ = [
    "DIALECTS",
    "MODES",
    "SERVICES",
    "Dialect",
    "FakeModifyServer",
    "Fault",
    "FaultKind",
    "ProviderStats",
    "ReceivedCall",
    "render_modified_clip",
    "run_fake_server",
]
