"""Luma's own Dream Machine API: ``POST /generations/video/modify``, then poll the generation.

Luma takes media only by URL, so ``LumaBackend`` needs a ``MediaUploader`` that puts each
segment (and first frame) where Luma can GET it: ``BlockUploader`` writes it to a storage block
on an object store (e.g. a ``RemoteFileSystem`` on ``s3://``) and gives Luma a presigned URL;
``HttpPutUploader`` PUTs the file to an HTTP store and reads the URL back (the fake server
implements it; so can any presigned-PUT style store).

Price (Luma's page): output pixels × frames at 24 fps; ray-2 $0.01582 and ray-flash-2
$0.00544 per million pixels (1280×720, 5 s = 110.6 Mpx → $1.75 on ray-2).
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from prefect_modify_video.errors import InvalidInputError, ProviderServerError
from prefect_modify_video.providers.base import JobState, ModifyJob, ModifyRequest
from prefect_modify_video.providers.http import (
    USER_AGENT,
    HttpModifyBackend,
    describe_body,
    failure_error,
    guess_mime,
    raise_for_status,
    request_id_of,
    retry_idempotent,
    translate_transport_errors,
)

LUMA_BASE_URL = "https://api.lumalabs.ai"
LUMA_API = "/dream-machine/v1"
LUMA_PRICE_PER_MEGAPIXEL_USD = {"ray-2": 0.01582, "ray-flash-2": 0.00544}
"""Luma's price per million output pixels (width × height × frames at 24 fps)."""
LUMA_MAX_SECONDS = {"ray-2": 10.0, "ray-flash-2": 15.0}

_STATES = {
    "queued": JobState.QUEUED,
    "pending": JobState.QUEUED,
    "dreaming": JobState.RUNNING,
    "processing": JobState.RUNNING,
    "completed": JobState.COMPLETED,
    "failed": JobState.FAILED,
}


def scaled_to(width: int, height: int, max_dimension: int | None) -> tuple[int, int]:
    """``width``×``height`` shrunk, keeping its shape, so the long side fits ``max_dimension``."""
    if not max_dimension or max(width, height) <= max_dimension:
        return width, height
    factor = max_dimension / max(width, height)
    return round(width * factor), round(height * factor)


class HttpPutUploader:
    """Uploads files with one HTTP PUT each and returns the URL the store answers.

    The file goes to ``{base_url}/uploads/{sha256[:16]}-{name}``; the answer's JSON ``url``
    is the address to give the service (if the answer has none, the PUT address itself is
    used, for stores that serve what was PUT there). Content addressing makes a repeated
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
        retry_backoff_seconds: float = 1.0,
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
            try:
                answer = response.json()
            except ValueError:
                return url
            return answer["url"] if isinstance(answer, dict) and answer.get("url") else url

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


class LumaBackend(HttpModifyBackend):
    """Luma Dream Machine API, ``ray-2`` or ``ray-flash-2``.

    Example:
        ```python
        from prefect_modify_video.providers.luma import HttpPutUploader, LumaBackend

        backend = LumaBackend(api_key, uploader=HttpPutUploader(store_url), model="ray-2")
        job = await backend.submit(request, workdir)
        ```
    """

    name: ClassVar[str] = "luma"
    default_base_url: ClassVar[str] = LUMA_BASE_URL
    default_timeout_seconds: ClassVar[float] = 120.0
    requires_uploader: ClassVar[bool] = True
    model = "ray-2"
    max_segment_seconds = LUMA_MAX_SECONDS["ray-2"]
    """ray-2 10 s, ray-flash-2 15 s (Luma's modify-video page); set from ``model``."""
    max_upload_bytes = 100_000_000
    max_dimension = 1280
    """Luma prices and shows Modify at 720p; a larger source only costs upload time."""
    output_fps = 24.0
    max_concurrency = 10
    """Luma: at most 10 generations at once per account (and 20 creates a minute)."""
    poll_interval_seconds = 5.0
    max_wait_seconds = 900.0

    def __init__(self, api_key: str, base_url: str | None = None, **options: Any):
        """Creates the backend; see ``HttpModifyBackend`` for the options.

        Raises:
            InvalidInputError: ``model`` is not ``ray-2`` or ``ray-flash-2``.
        """
        super().__init__(api_key, base_url, **options)
        if self.model not in LUMA_MAX_SECONDS:
            raise InvalidInputError(
                f"luma: unknown model {self.model!r}; use one of {', '.join(LUMA_MAX_SECONDS)}"
            )
        self.max_segment_seconds = LUMA_MAX_SECONDS[self.model]

    def _auth_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._api_key}"}

    def estimate_cost_usd(self, seconds: float, width: int, height: int) -> float:
        """Luma's list price: output pixels × frames at 24 fps × the model's rate.

        The size is first scaled to ``max_dimension``, as the segments are.
        """
        width, height = scaled_to(width, height, self.max_dimension)
        frames = max(seconds, 0.0) * 24
        return round(width * height * frames / 1e6 * LUMA_PRICE_PER_MEGAPIXEL_USD[self.model], 4)

    async def submit(self, request: ModifyRequest, workdir: Path) -> ModifyJob:
        """Uploads the media, creates the generation and returns it queued.

        Raises:
            InvalidInputError: no uploader was given (Luma reads media only by URL).
        """
        self._check_request(request)
        if self.uploader is None:
            raise InvalidInputError(
                "luma: the Luma API reads media only by URL, so it needs a storage uploader. "
                "Pass `uploader=` (a MediaUploader, e.g. a storage block with presigned URLs "
                "or HttpPutUploader) or use another backend"
            )
        body: dict[str, Any] = {
            "generation_type": "modify_video",
            "media": {"url": await self.uploader.upload(Path(request.clip))},
            "mode": request.mode,
            "model": self.model,
        }
        if request.prompt:
            body["prompt"] = request.prompt
        if request.first_frame is not None:
            body["first_frame"] = {"url": await self.uploader.upload(Path(request.first_frame))}
        response = await self._request(
            "POST", f"{LUMA_API}/generations/video/modify", what="submit", idempotent=False, json=body
        )
        generation = self._json(response, what="submit")
        job = ModifyJob(
            provider=self.name,
            state=JobState.QUEUED,
            job_id=self._created_id(response, generation, "id"),
            request_id=request_id_of(response),
        )
        return self._from_generation(job, generation)

    async def poll(self, job: ModifyJob) -> ModifyJob:
        """Reads the generation once and maps its state.

        Raises:
            ContentModerationError: the generation failed for moderation.
        """
        _, generation = await self._get_json(f"{LUMA_API}/generations/{job.job_id}", what="poll")
        return self._from_generation(job, generation if isinstance(generation, dict) else {})

    def _from_generation(self, job: ModifyJob, generation: dict[str, Any]) -> ModifyJob:
        state = _STATES.get(str(generation.get("state", "")).lower(), JobState.RUNNING)
        if state is JobState.FAILED:
            reason = str(generation.get("failure_reason") or "no reason given")
            error = failure_error(reason, provider=self.name, job_id=job.job_id, request_id=job.request_id)
            if error is not None:
                raise error
            return job.with_changes(state=state, failure_reason=reason)
        if state is JobState.COMPLETED:
            assets = generation.get("assets") or {}
            url = assets.get("video") if isinstance(assets, dict) else None
            if not url:
                return job.with_changes(
                    state=JobState.FAILED, failure_reason="completed without a video asset"
                )
            return job.with_changes(state=state, result_url=str(url))
        return job.with_changes(state=state)

    async def get_credits(self) -> float:
        """The account's credit balance in US cents (``GET /credits``)."""
        response, data = await self._get_json(f"{LUMA_API}/credits", what="get credits")
        balance = data.get("credit_balance") if isinstance(data, dict) else None
        if not isinstance(balance, (int, float)):
            raise ProviderServerError(
                f"get credits: the answer has no credit_balance: {describe_body(response)}",
                provider=self.name,
                request_id=request_id_of(response),
            )
        return float(balance)
