"""Decart Lucy Restyle through fal's queue: ``POST /decart/lucy-restyle``, poll ``status_url``, read ``response_url``.

The contract, from fal's model page and llms.txt, fal's long-form guide and Decart's SDK (sources and open
points: ``shared/PROVIDERS-NEW.md`` §3; fal's queue protocol: ``shared/PROVIDERS.md``):

- **Auth**: ``Authorization: Key <FAL_KEY>``: the fal account, so the key and block are fal's
  (``FalCredentials`` with ``app="lucy-restyle"``, or ``FAL_KEY``).
- **Create body**: ``prompt`` (required), ``video_url`` (any public URL or a ``data:`` URI, which fal
  accepts), ``seed``, ``resolution`` (only ``"720p"``), ``enhance_prompt`` (default true; sent false so the
  prompt is used as written), ``sync_mode`` (false: the queue). There is **no image input and no strength
  knob** on fal: the mode is ignored (logged once), a run's first-frame image is refused before any work
  (``takes_first_frame``), and the sequential mode's seam frame is not sent.
- **Queue states**: ``IN_QUEUE`` → queued, ``IN_PROGRESS`` → running, ``COMPLETED`` → the result is read from
  ``response_url``: ``{"video": File{url, ...}}``, or (in the llms.txt example) a bare URL string: both are
  accepted. A failed request is ``COMPLETED`` too, its result an error status (422 moderation, 5xx failure).
- **Caps**: "up to 30 min" on fal's guide, "up to 10 minutes" on the API page and Decart's own API (with
  100 MB): the shorter, 10 min, and 100 MB are used. Formats: mp4, mov, webm, m4v, gif. The long side sent
  is kept ≤ 1280 (the output is 720p whatever is sent).
- **Output**: MP4 H.264 at 720p; Decart lists ``lucy-restyle-v2v`` at **22 fps, 1280×704**: the conform step
  resamples every answer to the source's rate, size and length and puts its audio back. The URL is on fal's
  CDN (retention not captured): the answer is downloaded as soon as the job completes.
- **Price**: "$0.01 per second of source video", no minimum stated. fal bills "only successful outputs",
  never server errors or queue time; moderated jobs are taken as not billed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

from prefect_modify_video.errors import InvalidInputError
from prefect_modify_video.providers.base import JobState, ModifyJob, ModifyRequest
from prefect_modify_video.providers.fal import FAL_BASE_URL, FalBackend

logger = logging.getLogger("prefect_modify_video.providers")

LUCY_APP = "/decart/lucy-restyle"
LUCY_PRICE_PER_SECOND_USD = 0.01
LUCY_MAX_SECONDS = 600.0


class LucyBackend(FalBackend):
    """fal queue API for ``decart/lucy-restyle``: fal's queue protocol, Lucy's body, no images."""

    name: ClassVar[str] = "lucy"
    service: ClassVar[str] = "fal"
    default_base_url: ClassVar[str] = FAL_BASE_URL
    takes_modes: ClassVar[bool] = False
    takes_first_frame: ClassVar[bool] = False
    answer_audio: ClassVar[str] = "not stated"
    model = "lucy-restyle"
    max_segment_seconds = LUCY_MAX_SECONDS
    max_upload_bytes = 100_000_000
    max_dimension = 1280
    max_concurrency = 4
    poll_interval_seconds = 5.0
    max_wait_seconds = 3600.0
    """Minutes of video a call: a long clip takes long."""

    def __init__(self, api_key: str, base_url: str | None = None, **options: Any):
        """Creates the backend; see ``HttpModifyBackend`` for the options.

        Raises:
            InvalidInputError: ``model`` is not ``lucy-restyle``.
        """
        model = options.pop("model", None) or "lucy-restyle"
        if model != "lucy-restyle":
            raise InvalidInputError(f"lucy: unknown model {model!r}; use lucy-restyle")
        super(FalBackend, self).__init__(api_key, base_url, **options)
        self._mode_noted = False

    @property
    def endpoint(self) -> str:
        """The queue path of the app."""
        return LUCY_APP

    def estimate_cost_usd(self, seconds: float, width: int, height: int) -> float:
        """$0.01 per second of source video, whatever the size."""
        return round(max(seconds, 0.0) * LUCY_PRICE_PER_SECOND_USD, 4)

    def _urls(self, job: ModifyJob) -> tuple[str, str]:
        requests = f"{LUCY_APP}/requests/{job.job_id}"
        return (
            job.extra.get("status_url") or f"{requests}/status",
            job.extra.get("response_url") or requests,
        )

    async def submit(self, request: ModifyRequest, workdir: Path) -> ModifyJob:
        """Queues the clip with the prompt; the mode and any image are not sent (Lucy takes neither)."""
        self._check_request(request)
        if not request.prompt:
            raise InvalidInputError("lucy: Lucy Restyle needs a prompt (it takes no style image on fal)")
        if not self._mode_noted:
            logger.warning("lucy: Lucy Restyle has no strength knob; mode %s is ignored (the prompt decides)", request.mode)
            self._mode_noted = True
        if request.first_frame is not None:
            logger.info("lucy: Lucy Restyle takes no image on fal; the seam frame is not sent")
        body: dict[str, Any] = {
            "prompt": request.prompt,
            "video_url": await self._media_url(Path(request.clip), "video/mp4"),
            "resolution": "720p",
            "enhance_prompt": False,
            "sync_mode": False,
        }
        response = await self._request("POST", self.endpoint, what="submit", idempotent=False, json=body)
        data = self._json(response, what="submit")
        job_id = self._created_id(response, data, "request_id")
        extra = {k: data[k] for k in ("status_url", "response_url", "cancel_url") if isinstance(data.get(k), str)}
        return ModifyJob(provider=self.name, state=JobState.QUEUED, job_id=job_id, request_id=job_id, extra=extra)
