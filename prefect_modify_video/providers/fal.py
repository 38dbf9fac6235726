"""fal's queue for Luma Ray 2 Modify: submit, poll ``status_url``, read ``response_url``.

Media go as URLs: the uploader's if one is given, otherwise ``data:`` URIs, which fal
accepts (a 100 MB clip becomes a 133 MB JSON body; use an uploader for large clips).
Over the account's concurrency fal queues requests rather than refusing them.

Price (fal's page): $0.35 per second of video on ray-2, $0.12 on ray-2-flash, whatever the
size.

**Ray 3.2 edit (``luma/agent/ray/v3.2/video-to-video``) is not offered here**; ``--model ray-3.2`` is refused
with a pointer to the ``luma-agents`` backend (Luma's own API for the same model). fal's page documents the
fields, but not what an edit of a source of another length does: its ``duration`` takes only ``"5s"``/``"10s"``
(default ``"5s"``), where Luma's own API says an edit's output "matches the source" and that ``duration`` must
be omitted. Whether fal cuts, pads or bills a whole block for a 7 s source, and its source length cap, are not
stated (``shared/PROVIDERS-NEW.md`` §2 and §4.7-8). This plugin pays once for answers that keep the sent clip's
length, so an endpoint that may cut or pad an answer, or bill for what it drops, is not used on guesses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from prefect_modify_video.errors import InvalidInputError
from prefect_modify_video.providers.base import JobState, ModifyJob, ModifyRequest
from prefect_modify_video.providers.http_client import HttpModifyBackend
from prefect_modify_video.providers.http_errors import describe_body, failure_error

FAL_BASE_URL = "https://queue.fal.run"
FAL_APP = "/fal-ai/luma-dream-machine"
FAL_MODELS = {"ray-2": "ray-2", "ray-2-flash": "ray-2-flash", "ray-flash-2": "ray-2-flash"}
"""Accepted model names (Luma's ``ray-flash-2`` is an alias) -> fal's endpoint name."""
FAL_PRICE_PER_SECOND_USD = {"ray-2": 0.35, "ray-2-flash": 0.12}
FAL_RAY_3_2_MODELS = frozenset({"ray-3.2", "ray-3.2-edit", "ray/v3.2", "luma/agent/ray/v3.2/video-to-video"})
"""Names of Ray 3.2 edit on fal: refused (see the module's docstring), with a pointer to ``luma-agents``."""
FAL_MAX_SECONDS = {"ray-2": 10.0, "ray-2-flash": 15.0}
"""fal states no cap of its own; it runs Luma's API, so Luma's caps are used."""

_STATES = {
    "IN_QUEUE": JobState.QUEUED,
    "IN_PROGRESS": JobState.RUNNING,
    "COMPLETED": JobState.COMPLETED,
}


class FalBackend(HttpModifyBackend):
    """fal queue API for ``fal-ai/luma-dream-machine/ray-2/modify`` (or ``ray-2-flash``).

    The job's ``extra`` keeps ``status_url``, ``response_url`` and ``cancel_url``.
    """

    name: ClassVar[str] = "fal"
    service: ClassVar[str] = "fal"
    api_key_env: ClassVar[str] = "FAL_KEY"
    credentials_block: ClassVar[str] = "FalCredentials"
    default_base_url: ClassVar[str] = FAL_BASE_URL
    default_timeout_seconds: ClassVar[float] = 300.0
    """Long enough to send a clip as a data URI in the JSON body."""
    model = "ray-2"
    max_segment_seconds = FAL_MAX_SECONDS["ray-2"]
    max_upload_bytes = 100_000_000
    max_dimension = 1280
    """Ray 2 Modify works at up to 720p (1280 long side); larger only costs upload time."""
    max_concurrency = 4
    """fal queues what is over the account's limit instead of refusing it; 4 keeps the
    queue short and each job's wait within ``max_wait_seconds``."""
    poll_interval_seconds = 5.0
    max_wait_seconds = 900.0

    def __init__(self, api_key: str, base_url: str | None = None, **options: Any):
        """Creates the backend; see ``HttpModifyBackend`` for the options.

        Raises:
            InvalidInputError: ``model`` is not ``ray-2`` or ``ray-2-flash`` (``ray-3.2``: use ``luma-agents``).
        """
        super().__init__(api_key, base_url, **options)
        if str(self.model).strip().lower() in FAL_RAY_3_2_MODELS:
            raise InvalidInputError(
                f"fal: model {self.model!r} (Ray 3.2 edit) is not offered through fal: fal's endpoint takes only 5 s "
                "or 10 s outputs and does not say what it does with a source of another length; use --backend "
                "luma-agents (Luma's own API for Ray 3.2 edit, LUMA_AGENTS_API_KEY), whose output keeps the source's length"
            )
        if self.model not in FAL_MODELS:
            raise InvalidInputError(
                f"fal: unknown model {self.model!r}; use ray-2 or ray-2-flash"
            )
        self.model = FAL_MODELS[self.model]
        self.max_segment_seconds = FAL_MAX_SECONDS[self.model]

    @property
    def endpoint(self) -> str:
        """The queue path of the model, e.g. ``/fal-ai/luma-dream-machine/ray-2/modify``."""
        return f"{FAL_APP}/{self.model}/modify"

    def _auth_headers(self) -> dict[str, str]:
        return {"authorization": f"Key {self._api_key}"}

    def estimate_cost_usd(self, seconds: float, width: int, height: int) -> float:
        """fal's list price: a rate per second of video, whatever the size."""
        return round(max(seconds, 0.0) * FAL_PRICE_PER_SECOND_USD[self.model], 4)

    async def submit(self, request: ModifyRequest, workdir: Path) -> ModifyJob:
        """Queues the clip and returns at once with fal's ``request_id`` as job id."""
        self._check_request(request)
        body: dict[str, Any] = {
            "video_url": await self._media_url(Path(request.clip), "video/mp4"),
            "mode": request.mode,
        }
        if request.prompt:
            body["prompt"] = request.prompt
        if request.first_frame is not None:
            body["image_url"] = await self._media_url(Path(request.first_frame), "image/png")
        response = await self._request(
            "POST", self.endpoint, what="submit", idempotent=False, json=body
        )
        data = self._json(response, what="submit")
        job_id = self._created_id(response, data, "request_id")
        extra = {
            key: data[key]
            for key in ("status_url", "response_url", "cancel_url")
            if isinstance(data.get(key), str)
        }
        return ModifyJob(
            provider=self.name,
            state=_STATES.get(str(data.get("status", "IN_QUEUE")), JobState.QUEUED),
            job_id=str(job_id),
            request_id=str(job_id),
            extra=extra,
        )

    def _urls(self, job: ModifyJob) -> tuple[str, str]:
        # fal's status and result routes sit under the app, not under the model path.
        requests = f"{FAL_APP}/requests/{job.job_id}"
        return (
            job.extra.get("status_url") or f"{requests}/status",
            job.extra.get("response_url") or requests,
        )

    async def poll(self, job: ModifyJob) -> ModifyJob:
        """Checks the job once; on ``COMPLETED`` also fetches its result.

        Raises:
            ContentModerationError: the result is a refusal for content (e.g. a 422 whose
                ``detail`` says so).
            InvalidRequestError: the result is another 4xx refusal.
        """
        status_url, response_url = self._urls(job)
        _, data = await self._get_json(status_url, what="poll")
        data = data if isinstance(data, dict) else {}
        state = _STATES.get(str(data.get("status", "")).upper(), JobState.RUNNING)
        if data.get("error"):
            reason = str(data.get("error"))
            error = failure_error(reason, provider=self.name, job_id=job.job_id)
            if error is not None:
                raise error
            return job.with_changes(state=JobState.FAILED, failure_reason=reason)
        if state is not JobState.COMPLETED:
            return job.with_changes(state=state)
        # A failed fal job is COMPLETED too; its result answer carries the error status.
        response, result = await self._get_json(response_url, what="fetch result")
        video = result.get("video") if isinstance(result, dict) else None
        url = video.get("url") if isinstance(video, dict) else video
        if not isinstance(url, str) or not url:
            return job.with_changes(
                state=JobState.FAILED,
                failure_reason=f"completed without a video URL: {describe_body(response)}",
            )
        return job.with_changes(state=JobState.COMPLETED, result_url=url)
