"""Uploaders: put a local file where a service that takes media only by URL can read it.

``BlockUploader`` writes it to a storage block on an object store (e.g. a ``RemoteFileSystem``
on ``s3://``) and hands out a presigned URL; ``HttpPutUploader`` PUTs it to an HTTP store and
reads the URL back (the fake server implements one; so can any presigned-PUT style store).
Both name files by content, so a repeated upload is harmless.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from urllib.parse import quote

import httpx

from prefect_modify_video.providers.http_client import (
    RETRY_BACKOFF_SECONDS,
    USER_AGENT,
    guess_mime,
    retry_idempotent,
    tls_context,
)
from prefect_modify_video.providers.http_errors import raise_for_status, translate_transport_errors


def url_in_answer(response: httpx.Response) -> str | None:
    """The address an upload store answered: JSON ``{"url": ...}``, or a body that is a URL.

    Simple stores answer the URL as ``text/plain``; anything else (an empty body, "OK", JSON
    without ``url``) gives ``None``.
    """
    text = response.text.strip()
    try:
        answer = json.loads(text)
    except ValueError:
        is_url = text.startswith(("http://", "https://")) and len(text.split()) == 1
        return text if is_url else None
    url = answer.get("url") if isinstance(answer, dict) else None
    return url if isinstance(url, str) and url else None


class HttpPutUploader:
    """Uploads files with one HTTP PUT each and returns the URL the store answers.

    The file goes to ``{base_url}/uploads/{sha256[:16]}-{name}``; the address to give the
    service is the one the store answers, as JSON ``{"url": ...}`` or as a plain-text body
    that is a URL (if the answer has neither, the PUT address itself is used, for stores
    that serve what was PUT there). Content addressing makes a repeated
    upload harmless, so uploads are retried. It is what the tests and the fake server use;
    a real deployment needs a store the service can read from the internet.

    Example:
        ```python
        uploader = HttpPutUploader("https://uploads.example.com")
        backend = LumaBackend(api_key, uploader=uploader)
        ```
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout_seconds: float = 300.0,
        transport: httpx.AsyncBaseTransport | None = None,
        max_retries: int = 3,
        retry_backoff_seconds: float = RETRY_BACKOFF_SECONDS,
    ):
        """Creates the uploader.

        Args:
            base_url: Root of the store.
            headers: Extra headers for each PUT (e.g. the store's own auth).
            timeout_seconds: Read/write timeout of one upload.
            transport: An httpx transport, for tests.
            max_retries: Retries of a failed upload.
            retry_backoff_seconds: First retry delay; it doubles on each retry.
        """
        self.base_url = base_url.rstrip("/")
        self._secrets = tuple((headers or {}).values())
        self.max_retries = max_retries
        self.retry_backoff_seconds = retry_backoff_seconds
        self._client = httpx.AsyncClient(
            headers={"user-agent": USER_AGENT, **(headers or {})},
            timeout=httpx.Timeout(timeout_seconds, connect=min(timeout_seconds, 15.0)),
            transport=transport,
            verify=tls_context(),
        )

    async def upload(self, path: Path) -> str:
        """PUTs ``path`` and returns the URL it can be read at."""
        path = Path(path)
        content = await asyncio.to_thread(path.read_bytes)
        digest = hashlib.sha256(content).hexdigest()[:16]
        url = f"{self.base_url}/uploads/{digest}-{quote(path.name)}"
        headers = {"content-type": guess_mime(path, "application/octet-stream")}

        async def once() -> str:
            with translate_transport_errors("uploader", what="upload"):
                response = await self._client.put(url, content=content, headers=headers)
            raise_for_status(response, "uploader", redact=self._secrets)
            return url_in_answer(response) or url

        return await retry_idempotent(
            once,
            provider="uploader",
            what="upload",
            max_retries=self.max_retries,
            backoff_seconds=self.retry_backoff_seconds,
        )

    async def aclose(self) -> None:
        """Closes the connections."""
        await self._client.aclose()


class BlockUploader:
    """Uploads files into a storage block's folder and returns presigned URLs to them.

    The block must sign URLs: a ``RemoteFileSystem`` on an object store (``s3://``, ``gs://``).
    Files are named by content (``{sha256[:16]}-{name}``), so a repeated upload is harmless.

    Example:
        ```python
        uploader = BlockUploader("block://remote-file-system/luma-uploads/segments/")
        backend = LumaBackend(api_key, uploader=uploader)
        ```
    """

    def __init__(self, folder: str, *, expires_seconds: int = 24 * 3600):
        """Creates the uploader.

        Args:
            folder: ``block://<block-type-slug>/<block-name>/<folder>``.
            expires_seconds: How long each URL works (long enough for the service's queue).
        """
        from prefect_modify_video.storage.locations import parse_block_reference

        self.folder = parse_block_reference(folder.rstrip("/") + "/")
        self.expires_seconds = expires_seconds

    def _upload(self, path: Path) -> str:
        from prefect_modify_video.storage.blocks import deliver_output, signed_block_url

        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        target = self.folder.joined(f"{digest}-{path.name}")
        deliver_output(path, str(target))
        return signed_block_url(target, self.expires_seconds)

    async def upload(self, path: Path) -> str:
        """Writes ``path`` into the block's folder and returns a presigned URL to it."""
        return await asyncio.to_thread(self._upload, Path(path))

    async def aclose(self) -> None:
        """Nothing to close."""
