"""Credentials blocks, one per modify-video service, and the one way to build a run's backend.

Every paid backend is built by its block's ``get_client``: ``build_backend`` loads the block a
run names (or makes one from the service's environment variable) and asks it, so whatever the
saved block says (Segmind's v2 API, Luma's model, a proxy's address) is what the run uses.
"""

from __future__ import annotations

import os
from abc import ABC
from typing import Any, Literal

from pydantic import Field, SecretStr

from prefect.blocks.abstract import CredentialsBlock
from prefect_modify_video.errors import InvalidInputError
from prefect_modify_video.parameters import BackendSpec
from prefect_modify_video.providers.base import ModifyBackend
from prefect_modify_video.providers.fal import FalBackend
from prefect_modify_video.providers.luma import LumaBackend
from prefect_modify_video.providers.luma_agents import LumaAgentsBackend
from prefect_modify_video.providers.registry import BACKENDS, backend_class
from prefect_modify_video.providers.replicate import ReplicateBackend
from prefect_modify_video.providers.runway import RunwayBackend
from prefect_modify_video.providers.segmind import SegmindBackend
from prefect_modify_video.providers.uploaders import BlockUploader, HttpPutUploader


def _base_url_field(default: str) -> Any:
    """The ``base_url`` field of a service's block, defaulting to the real service."""
    return Field(
        default=default,
        title="Base URL",
        description="The root of the service's API; change it only for a proxy or a test server.",
    )


class ServiceCredentials(CredentialsBlock, ABC):
    """What every service's block holds, its API key and API root, and how it builds a backend.

    Attributes:
        api_key: The service's API key.
        base_url: The API root; change it only for a proxy or a test server.
    """

    api_key: SecretStr = Field(
        default=...,
        title="API Key",
        description="The service's API key; it is sent only in request headers.",
    )
    base_url: str = Field(
        title="Base URL",
        description="The root of the service's API; change it only for a proxy or a test server.",
    )
    """Each subclass gives its service's address as the default (``_base_url_field``)."""

    @property
    def backend_name(self) -> str:
        """The name of the backend ``get_client`` builds."""
        return next(
            name for name, cls in BACKENDS.items() if cls.credentials_block == type(self).__name__
        )

    def for_backend(self, backend_name: str) -> ServiceCredentials:
        """This block, set to build ``backend_name`` (a backend whose key it holds)."""
        return self

    def get_client(self, **options: Any) -> ModifyBackend:
        """Builds the service's backend with this block's key and API root.

        Args:
            **options: Passed to the backend's constructor, e.g. ``timeout_seconds``,
                ``poll_interval_seconds``, ``model`` or ``uploader``.
        """
        return backend_class(self.backend_name)(
            self.api_key.get_secret_value(), self.base_url, **options
        )


class SegmindCredentials(ServiceCredentials):
    """Segmind API key and host, for Luma Ray 2 Modify as sold by Segmind.

    Attributes:
        api_key: The Segmind API key.
        base_url: The API root; change it only for a proxy or a test server.
        use_async_api: Use Segmind's v2 queue (submit, then poll) instead of the blocking
            v1 call.

    Examples:
        Load stored Segmind credentials and build a backend:
        ```python
        from prefect_modify_video.blocks import SegmindCredentials

        segmind_credentials = SegmindCredentials.load("BLOCK_NAME")
        backend = segmind_credentials.get_client()
        ```
    """

    _block_type_name = "Segmind Credentials"
    _logo_url = "https://github.com/segmind.png?size=200"
    _documentation_url = "https://www.segmind.com/models/modify-video/api"

    base_url: str = _base_url_field(SegmindBackend.default_base_url)
    use_async_api: bool = Field(
        default=False,
        title="Use Async API",
        description=(
            "Use Segmind's v2 queue (submit, then poll; a resumed run polls the same job) "
            "instead of the blocking v1 call."
        ),
    )

    @property
    def backend_name(self) -> str:
        """``segmind-async`` with the v2 API, else ``segmind``."""
        return "segmind-async" if self.use_async_api else "segmind"

    def for_backend(self, backend_name: str) -> SegmindCredentials:
        """This block, switched to the v2 API when ``backend_name`` is ``segmind-async``."""
        if backend_name == "segmind-async" and not self.use_async_api:
            return self.model_copy(update={"use_async_api": True})
        return self


class LumaCredentials(ServiceCredentials):
    """Luma Dream Machine API key, host and model, for Luma's own Ray 2 Modify.

    Luma reads media only by URL: pass an ``uploader`` to ``get_client``.

    Attributes:
        api_key: The Luma API key.
        base_url: The API root; change it only for a proxy or a test server.
        model: ``ray-2`` or the cheaper, faster ``ray-flash-2``.

    Examples:
        Load stored Luma credentials and build a backend:
        ```python
        from prefect_modify_video.blocks import LumaCredentials

        luma_credentials = LumaCredentials.load("BLOCK_NAME")
        backend = luma_credentials.get_client(uploader=my_uploader)
        ```
    """

    _block_type_name = "Luma Credentials"
    _logo_url = "https://github.com/lumalabs.png?size=200"
    _documentation_url = "https://docs.lumalabs.ai/docs/modify-video"

    base_url: str = _base_url_field(LumaBackend.default_base_url)
    model: Literal["ray-2", "ray-flash-2"] = Field(
        default="ray-2",
        title="Model",
        description="The Ray 2 model: ray-2 (up to 10 s a call) or ray-flash-2 (up to 15 s, cheaper).",
    )

    def get_client(self, **options: Any) -> ModifyBackend:
        """Builds a ``LumaBackend`` with this block's model unless ``model`` is given.

        Args:
            **options: Passed to the backend's constructor; ``uploader`` is needed to submit.
        """
        options.setdefault("model", self.model)
        return super().get_client(**options)


class FalCredentials(ServiceCredentials):
    """fal API key and queue host, for Luma Ray 2 Modify and Decart Lucy Restyle as sold by fal.

    Attributes:
        api_key: The fal key.
        base_url: The queue root; change it only for a proxy or a test server.
        app: ``luma-ray`` (the ``fal`` backend) or ``lucy-restyle`` (the ``lucy`` backend); naming a backend
            in the run's parameters chooses its app whatever the saved block says.

    Examples:
        Load stored fal credentials and build a backend:
        ```python
        from prefect_modify_video.blocks import FalCredentials

        fal_credentials = FalCredentials.load("BLOCK_NAME")
        backend = fal_credentials.get_client(model="ray-2-flash")
        ```
    """

    _block_type_name = "Fal Credentials"
    _logo_url = "https://github.com/fal-ai.png?size=200"
    _documentation_url = "https://fal.ai/models/fal-ai/luma-dream-machine/ray-2/modify/api"

    base_url: str = _base_url_field(FalBackend.default_base_url)
    app: Literal["luma-ray", "lucy-restyle"] = Field(
        default="luma-ray",
        title="App",
        description="The fal app: luma-ray (Luma Ray 2 Modify, the `fal` backend) or lucy-restyle (Decart Lucy "
        "Restyle, the `lucy` backend).",
    )

    @property
    def backend_name(self) -> str:
        """``lucy`` for Lucy Restyle, else ``fal``."""
        return "lucy" if self.app == "lucy-restyle" else "fal"

    def for_backend(self, backend_name: str) -> FalCredentials:
        """This block, set to the app of ``backend_name`` (the same fal key bills both)."""
        app = "lucy-restyle" if backend_name == "lucy" else "luma-ray"
        return self if app == self.app else self.model_copy(update={"app": app})


class ReplicateCredentials(ServiceCredentials):
    """Replicate API token and host, for ``luma/modify-video`` on Replicate.

    Attributes:
        api_key: The Replicate API token.
        base_url: The API root; change it only for a proxy or a test server.

    Examples:
        Load stored Replicate credentials and build a backend:
        ```python
        from prefect_modify_video.blocks import ReplicateCredentials

        replicate_credentials = ReplicateCredentials.load("BLOCK_NAME")
        backend = replicate_credentials.get_client()
        ```
    """

    _block_type_name = "Replicate Credentials"
    _logo_url = "https://github.com/replicate.png?size=200"
    _documentation_url = "https://replicate.com/luma/modify-video/api"

    base_url: str = _base_url_field(ReplicateBackend.default_base_url)


class RunwayCredentials(ServiceCredentials):
    """Runway API secret and host, for Aleph 2 video-to-video.

    Attributes:
        api_key: The Runway API secret (``RUNWAYML_API_SECRET``).
        base_url: The API root; change it only for a proxy or a test server.

    Examples:
        Load stored Runway credentials and build a backend:
        ```python
        from prefect_modify_video.blocks import RunwayCredentials
        runway_credentials = RunwayCredentials.load("BLOCK_NAME")
        backend = runway_credentials.get_client()
        ```
    """

    _block_type_name = "Runway Credentials"
    _logo_url = "https://github.com/runwayml.png?size=200"
    _documentation_url = "https://docs.dev.runwayml.com/api/"
    base_url: str = _base_url_field(RunwayBackend.default_base_url)


class LumaAgentsCredentials(ServiceCredentials):
    """Luma Agents API key and host, for Ray 3.2 ``video_edit``.

    Attributes:
        api_key: The Luma Agents API key (starts ``luma-api-``; ``LUMA_AGENTS_API_KEY``).
        base_url: The API root; change it only for a proxy or a test server.

    Examples:
        Load stored Luma Agents credentials and build a backend:
        ```python
        from prefect_modify_video.blocks import LumaAgentsCredentials
        credentials = LumaAgentsCredentials.load("BLOCK_NAME")
        backend = credentials.get_client()
        ```
    """

    _block_type_name = "Luma Agents Credentials"
    _logo_url = "https://github.com/lumalabs.png?size=200"
    _documentation_url = "https://docs.agents.lumalabs.ai/guides/videos/editing/"
    base_url: str = _base_url_field(LumaAgentsBackend.default_base_url)


def credentials_block_for(backend_name: str) -> type[ServiceCredentials]:
    """The credentials block class that holds the key of backend ``backend_name``.

    Raises:
        InvalidInputError: the backend is unknown or needs no key (``local``).
    """
    block_name = backend_class(backend_name).credentials_block
    blocks = {block.__name__: block for block in ServiceCredentials.__subclasses__()}
    if block_name not in blocks:
        raise InvalidInputError(
            f"no credentials block for backend {backend_name!r}: it needs no key"
        )
    return blocks[block_name]


def build_backend(spec: BackendSpec, *, api_key: str | None = None, **options: Any) -> ModifyBackend:
    """Builds the backend ``spec`` names: the one construction path of a run's backend.

    A free backend (``local``) is built directly. A paid one is built by a credentials
    block's ``get_client``: the saved block ``spec.credentials_block``, else a block made
    from ``api_key`` or the service's environment variable (``SEGMIND_API_KEY``,
    ``LUMAAI_API_KEY``, ``FAL_KEY``, ``REPLICATE_API_TOKEN``,
    ``RUNWAYML_API_SECRET``, ``LUMA_AGENTS_API_KEY``). So the saved block's own
    settings apply: ``SegmindCredentials(use_async_api=True)`` gives Segmind's v2 API,
    ``LumaCredentials(model="ray-flash-2")`` gives ray-flash-2.

    Args:
        spec: The run's backend parameters. ``base_url`` overrides the block's; ``model``,
            ``poll_interval_seconds``, ``timeout_seconds``, ``max_wait_seconds`` and the upload store
            (``upload_block`` or ``upload_url``) are passed to ``get_client``.
        api_key: A key to use instead of a saved block or the environment, e.g. a dummy for
            a backend that only prices a plan.
        **options: Passed to the backend's constructor, over those taken from ``spec``
            (``local`` takes ``reference_frame`` and ``styled_first_frame``).

    Returns:
        A backend ready to ``submit``; close it with ``aclose()`` or ``async with``.

    Raises:
        InvalidInputError: the name is unknown, the saved block cannot be loaded, or a paid
            backend has no key (the message names the environment variable and the block).
    """
    cls = backend_class(spec.name)
    if cls.is_free:
        return cls(**options)
    block_class = credentials_block_for(cls.name)
    if api_key is None and spec.credentials_block:
        try:
            # Called from async tasks too, where load() would return a coroutine.
            block = block_class.load(spec.credentials_block, _sync=True)
        except ValueError as exc:
            raise InvalidInputError(
                f"{cls.name}: cannot load the {block_class.__name__} block "
                f"{spec.credentials_block!r}: {exc}"
            ) from exc
    else:
        api_key = api_key or os.environ.get(cls.api_key_env or "", "").strip()
        if not api_key:
            raise InvalidInputError(cls.missing_key_message())
        block = block_class(api_key=api_key)
    block = block.for_backend(cls.name)
    if spec.base_url:
        block = block.model_copy(update={"base_url": spec.base_url})
    return block.get_client(**{**_options_of(spec), **options})


def _options_of(spec: BackendSpec) -> dict[str, Any]:
    """The constructor options ``spec`` sets: model, poll interval, timeout, job deadline, uploader."""
    options: dict[str, Any] = {}
    if spec.model:
        options["model"] = spec.model
    if spec.poll_interval_seconds is not None:
        options["poll_interval_seconds"] = spec.poll_interval_seconds
    if spec.timeout_seconds is not None:
        options["timeout_seconds"] = spec.timeout_seconds
    if spec.max_wait_seconds is not None:
        options["max_wait_seconds"] = spec.max_wait_seconds
    if spec.upload_block:
        options["uploader"] = BlockUploader(spec.upload_block)
    elif spec.upload_url:
        options["uploader"] = HttpPutUploader(spec.upload_url)
    return options
