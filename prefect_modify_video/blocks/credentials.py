"""Credentials blocks, one per modify-video service; each builds its backend."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr

from prefect.blocks.abstract import CredentialsBlock
from prefect_modify_video.errors import InvalidInputError
from prefect_modify_video.providers.base import ModifyBackend
from prefect_modify_video.providers.fal import FAL_BASE_URL
from prefect_modify_video.providers.luma import LUMA_BASE_URL
from prefect_modify_video.providers.registry import create_backend
from prefect_modify_video.providers.replicate import REPLICATE_BASE_URL
from prefect_modify_video.providers.segmind import SEGMIND_BASE_URL


class SegmindCredentials(CredentialsBlock):
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

    api_key: SecretStr = Field(
        default=...,
        title="API Key",
        description="The Segmind API key, sent in the x-api-key header.",
    )
    base_url: str = Field(
        default=SEGMIND_BASE_URL,
        title="Base URL",
        description="The root of the Segmind API; change it only for a proxy or a test server.",
    )
    use_async_api: bool = Field(
        default=False,
        title="Use Async API",
        description=(
            "Use Segmind's v2 queue (submit, then poll; a resumed run polls the same job) "
            "instead of the blocking v1 call."
        ),
    )

    def get_client(self, **options: Any) -> ModifyBackend:
        """Builds a Segmind backend (``segmind``, or ``segmind-async`` with the v2 API).

        Args:
            **options: Passed to the backend's constructor, e.g. ``timeout_seconds``.
        """
        name = "segmind-async" if self.use_async_api else "segmind"
        return create_backend(
            name, api_key=self.api_key.get_secret_value(), base_url=self.base_url, **options
        )


class LumaCredentials(CredentialsBlock):
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

    api_key: SecretStr = Field(
        default=...,
        title="API Key",
        description="The Luma API key, sent as a Bearer token.",
    )
    base_url: str = Field(
        default=LUMA_BASE_URL,
        title="Base URL",
        description="The root of the Luma API; change it only for a proxy or a test server.",
    )
    model: Literal["ray-2", "ray-flash-2"] = Field(
        default="ray-2",
        title="Model",
        description="The Ray 2 model: ray-2 (up to 10 s a call) or ray-flash-2 (up to 15 s, cheaper).",
    )

    def get_client(self, **options: Any) -> ModifyBackend:
        """Builds a ``LumaBackend``.

        Args:
            **options: Passed to the backend's constructor; ``uploader`` is needed to submit.
        """
        options.setdefault("model", self.model)
        return create_backend(
            "luma", api_key=self.api_key.get_secret_value(), base_url=self.base_url, **options
        )


class FalCredentials(CredentialsBlock):
    """fal API key and queue host, for Luma Ray 2 Modify as sold by fal.

    Attributes:
        api_key: The fal key.
        base_url: The queue root; change it only for a proxy or a test server.

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

    api_key: SecretStr = Field(
        default=...,
        title="API Key",
        description="The fal key, sent as 'Authorization: Key <key>'.",
    )
    base_url: str = Field(
        default=FAL_BASE_URL,
        title="Base URL",
        description="The root of fal's queue API; change it only for a proxy or a test server.",
    )

    def get_client(self, **options: Any) -> ModifyBackend:
        """Builds a ``FalBackend``.

        Args:
            **options: Passed to the backend's constructor, e.g. ``model="ray-2-flash"``.
        """
        return create_backend(
            "fal", api_key=self.api_key.get_secret_value(), base_url=self.base_url, **options
        )


class ReplicateCredentials(CredentialsBlock):
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

    api_key: SecretStr = Field(
        default=...,
        title="API Token",
        description="The Replicate API token, sent as a Bearer token.",
    )
    base_url: str = Field(
        default=REPLICATE_BASE_URL,
        title="Base URL",
        description="The root of the Replicate API; change it only for a proxy or a test server.",
    )

    def get_client(self, **options: Any) -> ModifyBackend:
        """Builds a ``ReplicateBackend``.

        Args:
            **options: Passed to the backend's constructor, e.g. ``uploader``.
        """
        return create_backend(
            "replicate", api_key=self.api_key.get_secret_value(), base_url=self.base_url, **options
        )


_BLOCKS: dict[str, type[CredentialsBlock]] = {
    "segmind": SegmindCredentials,
    "segmind-async": SegmindCredentials,
    "luma": LumaCredentials,
    "fal": FalCredentials,
    "replicate": ReplicateCredentials,
}


def credentials_block_for(backend_name: str) -> type[CredentialsBlock]:
    """The credentials block class that holds the key of backend ``backend_name``.

    Raises:
        InvalidInputError: the backend is unknown or needs no key (``local``).
    """
    key = str(backend_name).strip().lower().replace("_", "-")
    if key not in _BLOCKS:
        raise InvalidInputError(
            f"no credentials block for backend {backend_name!r}; "
            f"blocks exist for {', '.join(_BLOCKS)}"
        )
    return _BLOCKS[key]
