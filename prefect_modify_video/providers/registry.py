"""Backends by name, so flows, blocks and the CLI can pick one with a string.

``create_backend("fal", api_key=...)`` builds a ``FalBackend``; without ``api_key`` the key
is read from the service's usual environment variable. Modules are imported only when
their backend is asked for (``local`` is the embedded, account-free backend).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from prefect_modify_video.errors import InvalidInputError
from prefect_modify_video.providers.base import ModifyBackend
from prefect_modify_video.providers.http import CREDENTIAL_SOURCES, missing_key_message

_BACKENDS: dict[str, str] = {
    "local": "prefect_modify_video.providers.local:LocalBackend",
    "segmind": "prefect_modify_video.providers.segmind:SegmindBackend",
    "segmind-async": "prefect_modify_video.providers.segmind:SegmindAsyncBackend",
    "luma": "prefect_modify_video.providers.luma:LumaBackend",
    "fal": "prefect_modify_video.providers.fal:FalBackend",
    "replicate": "prefect_modify_video.providers.replicate:ReplicateBackend",
}

BACKEND_NAMES: tuple[str, ...] = tuple(_BACKENDS)
"""Every name ``create_backend`` accepts."""

PAID_BACKEND_NAMES: tuple[str, ...] = tuple(name for name in BACKEND_NAMES if name != "local")
"""The backends that call a paid service and need an API key."""


def _normalise(name: str) -> str:
    key = str(name).strip().lower().replace("_", "-")
    if key not in _BACKENDS:
        raise InvalidInputError(
            f"unknown backend {name!r}; use one of {', '.join(BACKEND_NAMES)}"
        )
    return key


def backend_class(name: str) -> type[ModifyBackend]:
    """The backend class registered under ``name`` (imported on first use)."""
    module_name, _, class_name = _BACKENDS[_normalise(name)].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def api_key_env_var(name: str) -> str | None:
    """The environment variable that holds the key of backend ``name`` (``None``: no key)."""
    source = CREDENTIAL_SOURCES.get(_normalise(name))
    return source[1] if source else None


def api_key_from_env(name: str) -> str | None:
    """The API key of backend ``name`` from its usual environment variable, if set.

    ``SEGMIND_API_KEY`` (segmind, segmind-async), ``LUMAAI_API_KEY`` (luma), ``FAL_KEY``
    (fal), ``REPLICATE_API_TOKEN`` (replicate); ``None`` for ``local`` or an unset variable.
    """
    env_var = api_key_env_var(name)
    value = os.environ.get(env_var, "").strip() if env_var else ""
    return value or None


def create_backend(
    name: str, *, api_key: str | None = None, base_url: str | None = None, **options: Any
) -> ModifyBackend:
    """Builds the backend registered under ``name``.

    Args:
        name: One of ``BACKEND_NAMES``.
        api_key: The service's key; read from its environment variable when omitted.
            Ignored by ``local``.
        base_url: The API root, for tests or proxies; ignored by ``local``.
        **options: Passed to the backend's constructor (``model``, ``uploader``,
            ``poll_interval_seconds``, ``timeout_seconds``, ``transport``, ...).

    Returns:
        A backend ready to ``submit``; close it with ``aclose()`` or ``async with``.

    Raises:
        InvalidInputError: the name is unknown, or a paid backend has no key (the message
            names the environment variable and the credentials block to use).
    """
    key = _normalise(name)
    cls = backend_class(key)
    if key == "local":
        return cls(**options)
    api_key = api_key or api_key_from_env(key)
    if not api_key:
        raise InvalidInputError(missing_key_message(key))
    return cls(api_key, base_url, **options)
