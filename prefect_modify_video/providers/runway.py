"""Runway's Aleph 2 (``aleph2``): ``POST /v1/video_to_video``, then poll ``GET /v1/tasks/{id}``.

The contract, from Runway's OpenAPI (``runwayml/openapi``), its Python SDK and docs.dev.runwayml.com
(sources and open points: ``shared/PROVIDERS-NEW.md`` §1):

- **Auth**: ``Authorization: Bearer <RUNWAYML_API_SECRET>`` and ``X-Runway-Version: 2024-11-06`` on
  every request.
- **Create body** (``additionalProperties: false``: unknown fields are a 400): ``model: "aleph2"``,
  ``videoUri`` (https URL ≤ 2048 chars, ``runway://`` upload, or ``data:video/...``; "30 seconds or
  shorter"), ``promptText`` (1-1000 chars), ``keyframes`` (1-5 of ``{uri, seconds}`` in input time,
  ``uri`` https/``runway://``/``data:image/...`` ≤ 5 MB), ``seed``, ``outputFormat`` (``mp4`` default,
  H.264). ``ratio`` is deprecated and not sent. Answer: ``{"id", "estimatedCost": {"credits"}}``, the most
  the task may charge; it is taken as the call's cost when given.
- **Media**: the clip goes by a storage block's presigned URL when an uploader is given, else through
  Runway's upload endpoint: ``POST /v1/uploads {"filename", "type": "ephemeral"}`` answers ``{uploadUrl,
  fields, runwayUri}``; a multipart ``POST`` of ``fields`` + ``file`` to ``uploadUrl`` stores it; the
  ``runwayUri`` (valid 24 h) is the ``videoUri``. Data URIs are not used for video (the OpenAPI caps them
  at 5 MB where the docs say 16 MB). Guide images go as ``data:image/png`` URIs (≤ 5 MB, checked).
- **Caps**: input 2-30 s (segments planned under 30 s; a shorter one is sent padded with its last frame to 2 s,
  the answer's padding dropped: it is billed as 2 s in any case), ≤ 30 fps
  [second-hand]: a faster source is sent at its rate divided by the smallest whole number that brings it to
  30 fps or under (60 → 30, 50 → 25, 120 → 30; each sent frame a source frame), the answer conformed back to
  every source frame; "up to 30 seconds at 1080p": the long side is kept ≤ 1920. "The output resolution
  matches the input video" and its timing is the input's.
- **Task states**: ``PENDING`` and ``THROTTLED`` (over the account's concurrency: queued, starts by itself)
  → queued; ``RUNNING`` (+``progress``) → running; ``SUCCEEDED`` (+``output: [url]``) → completed;
  ``FAILED`` (+``failure``, ``failureCode``) and ``CANCELLED`` → failed. ``failureCode``
  ``SAFETY.INPUT.*``/``SAFETY.OUTPUT.*`` → ``ContentModerationError`` ("You should not retry");
  ``ASSET.INVALID`` → ``InvalidRequestError``; ``INTERNAL*`` → a failed job, tried again.
- **Limits**: over the tier's concurrency tasks wait as ``THROTTLED`` (never refused); over the rolling
  24-hour generation cap the create answers 429: mapped to ``InsufficientCreditsError``, so the run stops
  sending and a re-run after the window resumes. Other 429s, 502-504: retried (``RateLimitedError``,
  ``ProviderServerError``). 400 ``{error, issues}``, 401, 404: not retried. No idempotency header exists,
  so a create is resent only when it surely never left.
- **Polling**: "should not expect updates more frequent than once every five seconds": 5 s here.
- **Output**: signed URLs valid 24-48 h, MP4 H.264; fps and audio are not stated (the conform step puts
  the source's rate, length and audio back in any case).
- **Price** [second-hand quotes of Runway's pricing page]: 28 credits a second with a 56-credit minimum,
  1 credit = $0.01: $0.28/s, a clip under 2 s billed as 2 s. "Moderated generations have the same credit
  cost as successful generations": a moderated task is booked in the run's ledger as billed.
- **Modes**: Aleph 2 has no strength knob; the mode is ignored (logged once) and the prompt's words decide.
- **Guide keyframes**: the run's style image goes to every segment at the segment's own first frame (after
  its overlap); in the sequential mode the previous answer's frame at the seam goes at the clip's start.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import httpx

from prefect_modify_video.errors import (
    ContentModerationError,
    InsufficientCreditsError,
    InvalidInputError,
    InvalidRequestError,
)
from prefect_modify_video.media.probe import probe_video
from prefect_modify_video.providers.base import JobState, ModifyJob, ModifyRequest, timed_guides
from prefect_modify_video.providers.http_client import HttpModifyBackend, data_uri
from prefect_modify_video.providers.http_errors import describe_body, request_id_of

logger = logging.getLogger("prefect_modify_video.providers")

RUNWAY_BASE_URL = "https://api.dev.runwayml.com"
RUNWAY_VERSION = "2024-11-06"
RUNWAY_CREDITS_PER_SECOND = 28
RUNWAY_MIN_SECONDS = 2.0
"""The 56-credit minimum: a clip under 2 s is billed as 2 s."""
USD_PER_CREDIT = 0.01
MAX_KEYFRAMES = 5
MAX_IMAGE_DATA_BYTES = 5_000_000
MAX_PROMPT_CHARS = 1000
MAX_URL_VIDEO_BYTES = 32_000_000
"""A video given by URL: 32 MB (through the upload endpoint: 200 MB)."""

_STATES = {
    "PENDING": JobState.QUEUED,
    "THROTTLED": JobState.QUEUED,
    "RUNNING": JobState.RUNNING,
    "SUCCEEDED": JobState.COMPLETED,
    "FAILED": JobState.FAILED,
    "CANCELLED": JobState.FAILED,
}


class RunwayBackend(HttpModifyBackend):
    """Runway API, Aleph 2 video-to-video (model ``aleph2``)."""

    name: ClassVar[str] = "runway"
    service: ClassVar[str] = "runway"
    api_key_env: ClassVar[str] = "RUNWAYML_API_SECRET"
    credentials_block: ClassVar[str] = "RunwayCredentials"
    default_base_url: ClassVar[str] = RUNWAY_BASE_URL
    default_timeout_seconds: ClassVar[float] = 120.0
    takes_modes: ClassVar[bool] = False
    guide_keyframes: ClassVar[int] = MAX_KEYFRAMES
    bills_moderated_jobs: ClassVar[bool] = True
    answer_audio: ClassVar[str] = "not stated"
    media_note: ClassVar[str | None] = "Runway upload endpoint (or upload store URL); images as data URIs"
    model = "aleph2"
    max_segment_seconds = 30.0
    max_upload_bytes = 200_000_000
    """Runway's upload limit for a video (by URL: 32 MB, used when an uploader is given)."""
    max_dimension = 1920
    """"Up to 30 seconds at 1080p"; the output keeps the input's resolution."""
    max_fps = 30.0
    """Input "at ≤30 fps": a 50 or 60 fps source is sent at 25 or 30 fps, and the answer conformed back."""
    min_clip_seconds = RUNWAY_MIN_SECONDS
    """Input "2-30 s": a shorter segment goes padded with its last frame to 2 s (billed as 2 s anyway)."""
    max_concurrency = 2
    """Tier 1 runs 1-2 tasks at once; more wait as ``THROTTLED`` (and count against ``max_wait_seconds``)."""
    poll_interval_seconds = 5.0
    max_wait_seconds = 1200.0

    def __init__(self, api_key: str, base_url: str | None = None, **options: Any):
        """Creates the backend; see ``HttpModifyBackend`` for the options.

        Raises:
            InvalidInputError: ``model`` is not ``aleph2``.
        """
        super().__init__(api_key, base_url, **options)
        if self.uploader is not None:
            # A clip read from a URL may be 32 MB; through Runway's upload endpoint, 200 MB.
            self.max_upload_bytes = MAX_URL_VIDEO_BYTES
        if self.model != "aleph2":
            raise InvalidInputError(f"runway: unknown model {self.model!r}; use aleph2")
        self._mode_noted = False

    def _auth_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._api_key}", "x-runway-version": RUNWAY_VERSION}

    def prompt_warnings(self, prompt: str) -> list[str]:
        """A prompt over ``promptText``'s 1000 characters is cut there."""
        if len(prompt) > MAX_PROMPT_CHARS:
            return [f"runway: the prompt is {len(prompt)} characters; Aleph 2 takes {MAX_PROMPT_CHARS}: the rest is not sent"]
        return []

    def billed_seconds(self, seconds: float) -> float:
        """Runway bills by the second with a 2 s (56-credit) minimum."""
        return max(seconds, RUNWAY_MIN_SECONDS) if seconds > 0 else 0.0

    def estimate_cost_usd(self, seconds: float, width: int, height: int) -> float:
        """28 credits ($0.28) a second, at least 56 credits, whatever the size (mp4 output, ≤ 4 MP)."""
        return round(self.billed_seconds(seconds) * RUNWAY_CREDITS_PER_SECOND * USD_PER_CREDIT, 4)

    def _raise_for_status(self, response: httpx.Response) -> None:
        if response.status_code == 429 and "/video_to_video" in str(response.request.url.path):
            reason = describe_body(response, redact=(self._api_key,))
            # Over concurrency Runway answers THROTTLED, never 429: a refused create is the daily cap.
            raise InsufficientCreditsError(
                f"the daily generation cap of the account's tier is reached: {reason}. Re-run after the rolling "
                "24-hour window (finished segments are not paid for again), or ask Runway for a higher tier",
                provider=self.name,
                status_code=429,
                request_id=request_id_of(response),
            )
        super()._raise_for_status(response)

    async def _upload(self, path: Path) -> str:
        """A ``runway://`` URI for ``path``: Runway's upload endpoint (or the uploader's URL)."""
        if self.uploader is not None:
            return await self.uploader.upload(path)
        response = await self._request(
            "POST", "/v1/uploads", what="upload", idempotent=True,
            json={"filename": path.name, "type": "ephemeral"},
        )
        data = self._json(response, what="upload")
        target, fields, uri = (data.get(k) if isinstance(data, dict) else None for k in ("uploadUrl", "fields", "runwayUri"))
        if not isinstance(target, str) or not isinstance(uri, str):
            raise InvalidRequestError(
                f"upload: the answer has no uploadUrl/runwayUri: {describe_body(response)}", provider=self.name
            )
        with open(path, "rb") as handle:
            await self._request(
                "POST", target, what="upload", idempotent=True, auth=self._same_origin(httpx.URL(target)),
                data={str(k): str(v) for k, v in (fields or {}).items()},
                files={"file": (path.name, handle.read(), "video/mp4")},
            )
        return uri

    def _image_uri(self, path: Path) -> str:
        if path.stat().st_size > MAX_IMAGE_DATA_BYTES:
            raise InvalidInputError(f"runway: the guide image {path} is over 5 MB; use a smaller image")
        return data_uri(path, "image/png")

    async def submit(self, request: ModifyRequest, workdir: Path) -> ModifyJob:
        """Uploads the clip, creates the task with its guide keyframes and returns it queued."""
        self._check_request(request)
        if not self._mode_noted:
            logger.warning("runway: Aleph 2 has no strength knob; mode %s is ignored (the prompt decides)", request.mode)
            self._mode_noted = True
        info = probe_video(Path(request.clip))
        body: dict[str, Any] = {"model": self.model, "videoUri": await self._upload(Path(request.clip))}
        if request.prompt:
            body["promptText"] = request.prompt[:MAX_PROMPT_CHARS]
        guides = timed_guides(request, info.frames)[:MAX_KEYFRAMES]
        if guides:
            body["keyframes"] = [
                {"uri": self._image_uri(image), "seconds": round(index / info.fps, 4)} for image, index in guides
            ]
        response = await self._request("POST", "/v1/video_to_video", what="submit", idempotent=False, json=body)
        data = self._json(response, what="submit")
        credits = (data.get("estimatedCost") or {}).get("credits") if isinstance(data, dict) else None
        return ModifyJob(
            provider=self.name,
            state=JobState.QUEUED,
            job_id=self._created_id(response, data, "id"),
            request_id=request_id_of(response),
            cost_usd=round(credits * USD_PER_CREDIT, 4) if isinstance(credits, (int, float)) else None,
        )

    async def poll(self, job: ModifyJob) -> ModifyJob:
        """Reads the task once and maps its status.

        Raises:
            ContentModerationError: ``SAFETY.*`` (billed by Runway as a finished task).
            InvalidRequestError: ``ASSET.INVALID``.
        """
        _, task = await self._get_json(f"/v1/tasks/{job.job_id}", what="poll")
        task = task if isinstance(task, dict) else {}
        status = str(task.get("status", "")).upper()
        state = _STATES.get(status, JobState.RUNNING)
        if state is JobState.FAILED:
            code = str(task.get("failureCode") or "")
            reason = str(task.get("failure") or status.lower())
            kwargs = {"provider": self.name, "job_id": job.job_id, "request_id": job.request_id}
            if code.startswith("SAFETY"):
                raise ContentModerationError(
                    f"the service refused the content ({code}): {reason}. Runway bills a moderated task like a "
                    "finished one; change the prompt, the guide images or the source clip before trying again",
                    **kwargs,
                )
            if code.startswith("ASSET"):
                raise InvalidRequestError(f"the input was refused ({code}): {reason}", **kwargs)
            return job.with_changes(state=state, failure_reason=f"{reason} ({code or status})")
        if state is JobState.COMPLETED:
            output = task.get("output") or []
            url = output[0] if isinstance(output, list) and output else None
            if not isinstance(url, str) or not url:
                return job.with_changes(state=JobState.FAILED, failure_reason="succeeded without an output URL")
            return job.with_changes(state=state, result_url=url)
        return job.with_changes(state=state, extra={**job.extra, "status": status})
