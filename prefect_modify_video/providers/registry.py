"""Backends by name, so parameters, blocks and the CLI can pick one with a string.

The table is derived from the backend classes: each declares its own ``name``, the account it
bills, where its key comes from and what it can do. A new service is its module, its
credentials block and its fake dialect, plus one entry in the tuple below.
"""

from __future__ import annotations

from prefect_modify_video.errors import InvalidInputError
from prefect_modify_video.providers.base import ModifyBackend
from prefect_modify_video.providers.fal import FalBackend
from prefect_modify_video.providers.local import LocalBackend
from prefect_modify_video.providers.luma import LumaBackend
from prefect_modify_video.providers.replicate import ReplicateBackend
from prefect_modify_video.providers.segmind import SegmindAsyncBackend, SegmindBackend

BACKENDS: dict[str, type[ModifyBackend]] = {
    cls.name: cls
    for cls in (
        LocalBackend,
        SegmindBackend,
        SegmindAsyncBackend,
        LumaBackend,
        FalBackend,
        ReplicateBackend,
    )
}
"""Every backend class under its ``name``; ``local`` is the embedded, account-free one."""

BACKEND_NAMES: tuple[str, ...] = tuple(BACKENDS)
"""Every backend name, in the order shown to users."""


def normalise_backend_name(name: str) -> str:
    """``name`` as registered: trimmed, lower case, ``_`` read as ``-`` (``"Segmind_Async"``).

    Raises:
        InvalidInputError: no backend has that name.
    """
    key = str(name).strip().lower().replace("_", "-")
    if key not in BACKENDS:
        raise InvalidInputError(f"unknown backend {name!r}; use one of {', '.join(BACKEND_NAMES)}")
    return key


def backend_class(name: str) -> type[ModifyBackend]:
    """The backend class registered under ``name`` (normalised first).

    Raises:
        InvalidInputError: no backend has that name.
    """
    return BACKENDS[normalise_backend_name(name)]
