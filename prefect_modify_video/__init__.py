"""Prefect flows that restyle videos of any length through modify-video services.

The flows and blocks are imported on first use (``prefect_modify_video.modify_video``): they
import Prefect, and ``prefect_modify_video.cli`` must set Prefect's environment before that
happens. The parameters and errors import no Prefect and are imported at once.

Example:
    ```python
    from prefect_modify_video import modify_video

    result = modify_video(source="film.mp4", prompt="warm vintage film", mode="flex_2")
    ```
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from prefect_modify_video.errors import (
    BudgetExceededError,
    FatalProviderError,
    InvalidInputError,
    ModifyVideoError,
    ProviderError,
    RetryableProviderError,
)
from prefect_modify_video.parameters import BackendSpec, ModifyVideoParameters, RetryOptions, SeamOptions

if TYPE_CHECKING:
    from prefect_modify_video.blocks import (
        FalCredentials,
        LumaAgentsCredentials,
        LumaCredentials,
        ModifyVideoPreset,
        ReplicateCredentials,
        RunwayCredentials,
        SegmindCredentials,
    )
    from prefect_modify_video.flows.batch import modify_video_batch
    from prefect_modify_video.flows.modify_video import ModifyVideoResult, SegmentsFailedError, modify_video
    from prefect_modify_video.flows.preview import preview_modes

# Names imported on first use, and the module each comes from.
_LAZY = {
    "FalCredentials": "prefect_modify_video.blocks",
    "LumaAgentsCredentials": "prefect_modify_video.blocks",
    "LumaCredentials": "prefect_modify_video.blocks",
    "ModifyVideoPreset": "prefect_modify_video.blocks",
    "ReplicateCredentials": "prefect_modify_video.blocks",
    "RunwayCredentials": "prefect_modify_video.blocks",
    "SegmindCredentials": "prefect_modify_video.blocks",
    "ModifyVideoResult": "prefect_modify_video.flows.modify_video",
    "SegmentsFailedError": "prefect_modify_video.flows.modify_video",
    "modify_video": "prefect_modify_video.flows.modify_video",
    "modify_video_batch": "prefect_modify_video.flows.batch",
    "preview_modes": "prefect_modify_video.flows.preview",
}

__all__ = [
    "BackendSpec",
    "BudgetExceededError",
    "FalCredentials",
    "FatalProviderError",
    "InvalidInputError",
    "LumaAgentsCredentials",
    "LumaCredentials",
    "ModifyVideoError",
    "ModifyVideoParameters",
    "ModifyVideoPreset",
    "ModifyVideoResult",
    "ProviderError",
    "ReplicateCredentials",
    "RetryOptions",
    "RetryableProviderError",
    "RunwayCredentials",
    "SeamOptions",
    "SegmentsFailedError",
    "SegmindCredentials",
    "modify_video",
    "modify_video_batch",
    "preview_modes",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
