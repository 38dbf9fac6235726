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
from prefect_modify_video.providers.lucy import LucyBackend
from prefect_modify_video.providers.luma import LumaBackend
from prefect_modify_video.providers.luma_agents import LumaAgentsBackend
from prefect_modify_video.providers.replicate import ReplicateBackend
from prefect_modify_video.providers.runway import RunwayBackend
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
        RunwayBackend,
        LumaAgentsBackend,
        LucyBackend,
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


def backends_table() -> str:
    """The README's table of backends, as Markdown, derived from the classes.

    ``python -m prefect_modify_video.providers.registry`` prints it; a test checks the README's copy.

    Example:
        >>> backends_table().splitlines()[0].startswith("| Backend |")
        True
    """
    import asyncio

    rows = [
        "| Backend | Service | Key | Longest segment | Sent size | Jobs at once | Media | Modes | Images | "
        "Answer audio | 7 s at 1280x720 | 10 s at 1280x720 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, cls in BACKENDS.items():
        backend = cls() if cls.is_free else cls("example-key-for-the-docs")
        try:
            key = "none" if cls.is_free else f"`{cls.api_key_env}` or a `{cls.credentials_block}` block"
            size = f"long side ≤ {backend.max_dimension}" if backend.max_dimension else "as the source"
            longest = f"{backend.max_segment_seconds:g} s"
            if backend.min_clip_seconds:
                longest += f" (under {backend.min_clip_seconds:g} s: padded to it)"
            if backend.max_fps:
                size += f"; ≤ {backend.max_fps:g} fps (a faster source at its rate ÷ 2, 3…)"
            media = cls.media_note or ("URL (upload store)" if cls.requires_uploader else "in the request")
            if cls.is_free:
                media = "local files"
            modes = "the 9 modes" if cls.takes_modes else "ignored (prompt only)"
            images = "first frame" if cls.takes_first_frame else "none"
            if cls.guide_keyframes:
                images = f"≤ {cls.guide_keyframes} timed keyframes: style image on every segment, seam frame"
            cells = []
            for seconds in (7.0, 10.0):
                price = f"${backend.estimate_cost_usd(seconds, 1280, 720):.2f}"
                billed = backend.billed_seconds(seconds)
                cells.append(price if abs(billed - seconds) < 1e-9 else f"{price} (billed {billed:g} s)")
            rows.append(
                f"| `{name}` | {cls.service} | {key} | {longest} | {size} | "
                f"{backend.max_concurrency} | {media} | {modes} | {images} | {cls.answer_audio} | "
                f"{cells[0]} | {cells[1]} |"
            )
        finally:
            asyncio.run(backend.aclose())
    return "\n".join(rows)


if __name__ == "__main__":
    print(backends_table())
