"""Luma Ray 3.2 ``video_edit`` on Luma's Agents API: ``POST /v1/generations``, then poll the generation.

The contract, from Luma's ``luma-agents-python`` SDK, its CLI and docs.agents.lumalabs.ai (sources and open
points: ``shared/PROVIDERS-NEW.md`` §2):

- **Auth**: ``Authorization: Bearer <LUMA_AGENTS_API_KEY>`` (keys start ``luma-api-``); an ``X-Request-Id``
  is echoed back (it is not an idempotency key, so a create is resent only when it surely never left).
- **Create body**: ``model: "ray-3.2"``, ``type: "video_edit"``, ``prompt`` (1-6000 chars, required),
  ``source`` (one of ``{generation_id}``, ``{url, media_type: "video/mp4"}`` or ``{data: <base64>,
  media_type}``), ``video.resolution`` (``360p``/``540p``/``720p``/``1080p``, default 720p),
  ``video.edit.strength`` (the nine ``adhere_1``..``reimagine_3`` presets: our modes, one to one; never
  with ``auto_controls``), ``video.edit.keyframes`` + ``video.edit.keyframe_indexes`` (≤ 64 ImageRefs at
  unique positions "in the source video's frame grid"). ``video.duration`` is omitted: an edit's output
  "matches the source". Answer: **201** with the Generation.
- **Media**: the clip goes as the uploader's URL when one is given, else as base64 ``data`` (≤ 200 MB, the
  documented limit for URL and base64 alike; over it Luma answers 413). Guide images go the same way.
- **Caps**: the source "must be 18 seconds or shorter" (SDK, CLI; other pages say 20 or 30 s: the
  shortest is used); no fps or input-size limit found; the output size follows ``video.resolution``
  (its aspect the source's), so the long side sent is kept ≤ 1920 and the resolution asked for is the
  smallest of 540p/720p/1080p that holds the sent clip's short side.
- **States**: ``queued`` → queued, ``processing`` → running, ``completed`` (+``output: [{type, url}]``)
  → completed, ``failed`` (+``failure_code``, ``failure_reason``) → failed. ``failure_code``:
  ``content_moderated`` → ``ContentModerationError``; ``budget_exhausted`` → ``InsufficientCreditsError``;
  ``image_too_large``/``unsupported_format``/``corrupt_input``/``invalid_request`` → ``InvalidRequestError``;
  ``generation_failed``/``output_not_found``/``rate_limited`` → a failed job, tried again (Luma: retry only
  the first two; ``rate_limited`` passes with time).
- **Errors**: 400, 401, 403, 413, 422 not retried; 402 (balance) → ``InsufficientCreditsError``; 429
  ("Rate limit exceeded" per 60-s window, "Too many concurrent jobs") with ``Retry-After``, 502, 503 retried.
- **Polling**: every 2-5 s (3 s here). No list, cancel or webhook exists.
- **Output**: MP4 at a presigned URL with a **1-hour** expiry: the flow downloads each answer as soon as its
  job completes, and a resumed run polls again for a fresh URL before downloading. Ray 3 is 24 fps natively
  (the edit's rate is not stated); **no audio** ("audio is currently not supported").
- **Price** [second-hand quotes of Luma's pricing page]: "per video block, not per second": SDR 5 s blocks
  $0.72/$1.08/$2.16 and 10 s blocks twice that at 540p/720p/1080p. A 7 s source is billed as 10 s; how 11-18 s
  sources bill is not documented, so they are estimated as 15 s/20 s (5 s blocks), and the plan sizes segments
  to fill whole blocks when that is cheaper. 360p is priced as 540p (its rate is not published). Billing of
  failed or moderated jobs is not documented: they are taken as not billed.
- **Guide keyframes**: the run's style image at every segment's own first frame (after its overlap), and in the
  sequential mode the previous answer's frame at the seam at frame 0 (``timed_guides``).
"""

from __future__ import annotations

import base64
import math
from pathlib import Path
from typing import Any, ClassVar

from prefect_modify_video.errors import (
    ContentModerationError,
    InsufficientCreditsError,
    InvalidInputError,
    InvalidRequestError,
)
from prefect_modify_video.media.probe import probe_video
from prefect_modify_video.providers.base import JobState, ModifyJob, ModifyRequest, timed_guides
from prefect_modify_video.providers.http_client import HttpModifyBackend, guess_mime
from prefect_modify_video.providers.http_errors import request_id_of
from prefect_modify_video.providers.luma import scaled_to

LUMA_AGENTS_BASE_URL = "https://agents.lumalabs.ai"
LUMA_AGENTS_MAX_SECONDS = 18.0
LUMA_AGENTS_BLOCK_SECONDS = 5.0
LUMA_AGENTS_BLOCK_PRICE_USD = {"540p": 0.72, "720p": 1.08, "1080p": 2.16}
"""SDR price of one 5 s block by output resolution (a 10 s block is two)."""
RESOLUTIONS = (("540p", 540), ("720p", 720), ("1080p", 1080))
MAX_KEYFRAMES = 64
MAX_MEDIA_BYTES = 200_000_000
MAX_PROMPT_CHARS = 6000

_STATES = {
    "queued": JobState.QUEUED,
    "processing": JobState.RUNNING,
    "completed": JobState.COMPLETED,
    "failed": JobState.FAILED,
}
_INVALID = {"image_too_large", "unsupported_format", "corrupt_input", "invalid_request"}


def blocks_of(seconds: float, block: float) -> float:
    """``seconds`` rounded up to whole blocks (a hair over a block does not start a new one).

    Example:
        >>> blocks_of(7.0, 5.0), blocks_of(4.99, 5.0), blocks_of(10.0, 5.0)
        (10.0, 5.0, 10.0)
    """
    return math.ceil(max(seconds, 0.0) / block - 1e-6) * block


def resolution_for(width: int, height: int) -> str:
    """The smallest Ray 3.2 resolution whose short side holds the clip's (1080p at most)."""
    short = min(width, height)
    return next((name for name, side in RESOLUTIONS if short <= side), "1080p")


class LumaAgentsBackend(HttpModifyBackend):
    """Luma Agents API, Ray 3.2 ``video_edit``."""

    name: ClassVar[str] = "luma-agents"
    service: ClassVar[str] = "luma-agents"
    api_key_env: ClassVar[str] = "LUMA_AGENTS_API_KEY"
    credentials_block: ClassVar[str] = "LumaAgentsCredentials"
    default_base_url: ClassVar[str] = LUMA_AGENTS_BASE_URL
    default_timeout_seconds: ClassVar[float] = 300.0
    """Long enough to send a clip as base64 in the JSON body."""
    guide_keyframes: ClassVar[int] = MAX_KEYFRAMES
    media_note: ClassVar[str | None] = "base64 in the request (or upload store URL)"
    billing_block_seconds: ClassVar[float | None] = LUMA_AGENTS_BLOCK_SECONDS
    model = "ray-3.2"
    max_segment_seconds = LUMA_AGENTS_MAX_SECONDS
    max_upload_bytes = MAX_MEDIA_BYTES
    max_dimension = 1920
    max_concurrency = 4
    """Luma limits concurrent jobs per client by tier (over it: 429 "Too many concurrent jobs")."""
    poll_interval_seconds = 3.0
    max_wait_seconds = 1200.0

    def __init__(self, api_key: str, base_url: str | None = None, **options: Any):
        """Creates the backend; see ``HttpModifyBackend`` for the options.

        Raises:
            InvalidInputError: ``model`` is not ``ray-3.2``.
        """
        super().__init__(api_key, base_url, **options)
        if self.model != "ray-3.2":
            raise InvalidInputError(f"luma-agents: unknown model {self.model!r}; use ray-3.2")

    def _auth_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._api_key}"}

    def prompt_warnings(self, prompt: str) -> list[str]:
        """A prompt over Ray 3.2's 6000 characters is cut there."""
        if len(prompt) > MAX_PROMPT_CHARS:
            return [f"luma-agents: the prompt is {len(prompt)} characters; Ray 3.2 takes {MAX_PROMPT_CHARS}: the rest is not sent"]
        return []

    def billed_seconds(self, seconds: float) -> float:
        """Whole 5 s blocks: a 7 s clip is billed as 10 s."""
        return blocks_of(seconds, LUMA_AGENTS_BLOCK_SECONDS)

    def estimate_cost_usd(self, seconds: float, width: int, height: int) -> float:
        """The block price at the resolution asked for, times the blocks the clip fills."""
        width, height = scaled_to(width, height, self.max_dimension)
        blocks = self.billed_seconds(seconds) / LUMA_AGENTS_BLOCK_SECONDS
        return round(blocks * LUMA_AGENTS_BLOCK_PRICE_USD[resolution_for(width, height)], 4)

    async def _image_ref(self, path: Path, default_mime: str) -> dict[str, str]:
        mime = guess_mime(path, default_mime)
        if self.uploader is not None:
            return {"url": await self.uploader.upload(path), "media_type": mime}
        return {"data": base64.b64encode(path.read_bytes()).decode("ascii"), "media_type": mime}

    async def submit(self, request: ModifyRequest, workdir: Path) -> ModifyJob:
        """Creates the edit with the clip (URL or base64), the mode and the guide keyframes."""
        self._check_request(request)
        if not request.prompt:
            raise InvalidInputError("luma-agents: Ray 3.2 edit needs a prompt (1-6000 characters)")
        info = probe_video(Path(request.clip))
        edit: dict[str, Any] = {"strength": request.mode}
        guides = timed_guides(request, info.frames)[:MAX_KEYFRAMES]
        if guides:
            edit["keyframes"] = [await self._image_ref(image, "image/png") for image, _ in guides]
            edit["keyframe_indexes"] = [index for _, index in guides]
        body: dict[str, Any] = {
            "model": self.model,
            "type": "video_edit",
            "prompt": request.prompt[:MAX_PROMPT_CHARS],
            "source": await self._image_ref(Path(request.clip), "video/mp4"),
            "video": {"resolution": resolution_for(info.width, info.height), "edit": edit},
        }
        response = await self._request("POST", "/v1/generations", what="submit", idempotent=False, json=body)
        generation = self._json(response, what="submit")
        job = ModifyJob(
            provider=self.name,
            state=JobState.QUEUED,
            job_id=self._created_id(response, generation, "id"),
            request_id=request_id_of(response),
            cost_usd=self.estimate_cost_usd(info.duration_s, info.width, info.height),
        )
        return self._from_generation(job, generation)

    async def poll(self, job: ModifyJob) -> ModifyJob:
        """Reads the generation once; a completed one carries a fresh 1-hour URL.

        Raises:
            ContentModerationError: ``content_moderated``.
            InsufficientCreditsError: ``budget_exhausted``.
            InvalidRequestError: the input was refused (too large, unsupported, corrupt, invalid).
        """
        _, generation = await self._get_json(f"/v1/generations/{job.job_id}", what="poll")
        return self._from_generation(job, generation if isinstance(generation, dict) else {})

    def _from_generation(self, job: ModifyJob, generation: dict[str, Any]) -> ModifyJob:
        state = _STATES.get(str(generation.get("state", "")).lower(), JobState.RUNNING)
        if state is JobState.FAILED:
            code = str(generation.get("failure_code") or "")
            reason = str(generation.get("failure_reason") or code or "no reason given")
            kwargs = {"provider": self.name, "job_id": job.job_id, "request_id": job.request_id}
            if code == "content_moderated":
                raise ContentModerationError(
                    f"the service refused the content: {reason}. Change the prompt, the guide images or the "
                    "source clip; trying again unchanged fails the same way",
                    **kwargs,
                )
            if code == "budget_exhausted":
                raise InsufficientCreditsError(
                    f"the account's budget is exhausted: {reason}. Top up, then re-run: finished segments are "
                    "not paid for again",
                    **kwargs,
                )
            if code in _INVALID:
                raise InvalidRequestError(f"the input was refused ({code}): {reason}", **kwargs)
            return job.with_changes(state=state, failure_reason=f"{reason} ({code or 'failed'})")
        if state is JobState.COMPLETED:
            outputs = generation.get("output") or []
            url = next(
                (o.get("url") for o in outputs if isinstance(o, dict) and o.get("url")
                 and str(o.get("type", "video")).startswith("video")),
                None,
            )
            if not url:
                return job.with_changes(state=JobState.FAILED, failure_reason="completed without a video output")
            return job.with_changes(state=state, result_url=str(url))
        return job.with_changes(state=state)
