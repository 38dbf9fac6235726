"""Luma's own Dream Machine API: ``POST /generations/video/modify``, then poll the generation.

Luma takes media only by URL, so ``LumaBackend`` needs a ``MediaUploader`` that puts each
segment (and first frame) where Luma can GET it: see ``prefect_modify_video.providers.uploaders``.

Price (Luma's page): output pixels × frames at 24 fps; ray-2 $0.01582 and ray-flash-2
$0.00544 per million pixels (1280×720, 5 s = 110.6 Mpx → $1.75 on ray-2).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from prefect_modify_video.errors import InvalidInputError, ProviderServerError
from prefect_modify_video.providers.base import FIND_JOB_LOOKBACK_SECONDS, JobState, ModifyJob, ModifyRequest
from prefect_modify_video.providers.http_client import HttpModifyBackend
from prefect_modify_video.providers.http_errors import describe_body, failure_error, request_id_of

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


def epoch_seconds(value: Any) -> float | None:
    """Seconds since the epoch of an ISO 8601 time, or ``None``."""
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def scaled_to(width: int, height: int, max_dimension: int | None) -> tuple[int, int]:
    """``width``×``height`` shrunk, keeping its shape, so the long side fits ``max_dimension``."""
    if not max_dimension or max(width, height) <= max_dimension:
        return width, height
    factor = max_dimension / max(width, height)
    return round(width * factor), round(height * factor)


class LumaBackend(HttpModifyBackend):
    """Luma Dream Machine API, ``ray-2`` or ``ray-flash-2``.

    Example:
        ```python
        from prefect_modify_video.providers.luma import LumaBackend
        from prefect_modify_video.providers.uploaders import HttpPutUploader

        backend = LumaBackend(api_key, uploader=HttpPutUploader(store_url), model="ray-2")
        job = await backend.submit(request, workdir)
        ```
    """

    name: ClassVar[str] = "luma"
    service: ClassVar[str] = "luma"
    api_key_env: ClassVar[str] = "LUMAAI_API_KEY"
    credentials_block: ClassVar[str] = "LumaCredentials"
    default_base_url: ClassVar[str] = LUMA_BASE_URL
    default_timeout_seconds: ClassVar[float] = 120.0
    requires_uploader: ClassVar[bool] = True
    account_concurrency: ClassVar[int] = 10
    account_creates_per_minute: ClassVar[int] = 20
    can_find_jobs: ClassVar[bool] = True
    model = "ray-2"
    max_segment_seconds = LUMA_MAX_SECONDS["ray-2"]
    """ray-2 10 s, ray-flash-2 15 s (Luma's modify-video page); set from ``model``."""
    max_upload_bytes = 100_000_000
    max_dimension = 1280
    """Luma prices and shows Modify at 720p; a larger source only costs upload time."""
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

    def create_marker(self, body: Any) -> dict:
        """The uploaded clip's URL: unique to the request, echoed in the generation's ``request``."""
        media = body.get("media") if isinstance(body, dict) else None
        return {"media_url": media["url"]} if isinstance(media, dict) and media.get("url") else {}

    async def find_job(self, marker: dict, sent_at: float) -> ModifyJob | None:
        """Looks through ``GET /generations`` (newest first) for the generation whose ``request`` has the
        marker's media URL, back to a little before ``sent_at``."""
        if not marker.get("media_url"):
            return None
        offset, page = 0, 100
        while True:
            _, data = await self._get_json(
                f"{LUMA_API}/generations?limit={page}&offset={offset}", what="list generations"
            )
            generations = data.get("generations") if isinstance(data, dict) else None
            if not isinstance(generations, list) or not generations:
                return None
            for generation in generations:
                request = generation.get("request") if isinstance(generation, dict) else None
                media = request.get("media") if isinstance(request, dict) else None
                if isinstance(media, dict) and media.get("url") == marker["media_url"]:
                    job = ModifyJob(provider=self.name, state=JobState.QUEUED, job_id=str(generation["id"]))
                    return self._from_generation(job, generation)
            oldest = epoch_seconds(generations[-1].get("created_at"))
            if not data.get("has_more") or (oldest is not None and oldest < sent_at - FIND_JOB_LOOKBACK_SECONDS):
                return None
            offset += len(generations)

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
