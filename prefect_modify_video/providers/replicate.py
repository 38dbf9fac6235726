"""Replicate's ``luma/modify-video``: create a prediction, poll it, download at once.

Media go as URLs: the uploader's if one is given, otherwise ``data:`` URIs (Replicate
accepts them for file inputs; use an uploader for large clips). Replicate deletes
outputs an hour after the prediction, so the flow downloads each one as soon as it is
done; an expired output is reported as a failed job, which a re-run sends again. ``Prefer: wait``
is not used: a create held open for a minute is more likely to end without an answer, and
an unanswered create cannot be sent again safely.

A create whose answer was lost is looked up in ``GET /v1/predictions`` (newest first, 100 a page,
each with its ``input``) by the clip's URL, when the clip went by URL (an uploader); a clip sent
as a ``data:`` URI leaves nothing unique to look for, so such a create stays outcome-unknown.

Price: Replicate's page for this model was not available here. Replicate resells partner
models at the partner's list price, so the estimate is Luma's own ray-2 rate (output pixels
× frames at 24 fps × $0.01582 per million), which at 720p is $0.35/s, the same as fal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from prefect_modify_video.providers.base import FIND_JOB_LOOKBACK_SECONDS, JobState, ModifyJob, ModifyRequest
from prefect_modify_video.providers.http_client import HttpModifyBackend
from prefect_modify_video.providers.http_errors import failure_error, request_id_of
from prefect_modify_video.providers.luma import LUMA_PRICE_PER_MEGAPIXEL_USD, epoch_seconds, scaled_to

REPLICATE_BASE_URL = "https://api.replicate.com"

_STATES = {
    "starting": JobState.QUEUED,
    "processing": JobState.RUNNING,
    "succeeded": JobState.COMPLETED,
    "failed": JobState.FAILED,
    "canceled": JobState.FAILED,
    "cancelled": JobState.FAILED,
    "aborted": JobState.FAILED,
}


def _first_url(output: Any) -> str | None:
    if isinstance(output, str) and output:
        return output
    if isinstance(output, list):
        return next((item for item in output if isinstance(item, str) and item), None)
    if isinstance(output, dict):
        return _first_url(output.get("url") or output.get("video"))
    return None


class ReplicateBackend(HttpModifyBackend):
    """Replicate HTTP API for the official model ``luma/modify-video``.

    The job's ``extra`` keeps the prediction's ``get_url`` (``urls.get``).
    """

    name: ClassVar[str] = "replicate"
    service: ClassVar[str] = "replicate"
    api_key_env: ClassVar[str] = "REPLICATE_API_TOKEN"
    credentials_block: ClassVar[str] = "ReplicateCredentials"
    default_base_url: ClassVar[str] = REPLICATE_BASE_URL
    default_timeout_seconds: ClassVar[float] = 300.0
    model = "luma/modify-video"
    max_segment_seconds = 30.0
    """The model's input schema: at most 30 s and 100 MB."""
    max_upload_bytes = 100_000_000
    max_dimension = 1280
    """Ray 2 Modify works at up to 720p (1280 long side); larger only costs upload time."""
    can_find_jobs: ClassVar[bool] = True
    max_concurrency = 4
    """Replicate queues predictions over capacity; 4 keeps each wait short."""
    poll_interval_seconds = 5.0
    max_wait_seconds = 900.0

    def _auth_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._api_key}"}

    def estimate_cost_usd(self, seconds: float, width: int, height: int) -> float:
        """An estimate at Luma's ray-2 list price (see the module docstring)."""
        width, height = scaled_to(width, height, self.max_dimension)
        frames = max(seconds, 0.0) * 24
        return round(width * height * frames / 1e6 * LUMA_PRICE_PER_MEGAPIXEL_USD["ray-2"], 4)

    async def submit(self, request: ModifyRequest, workdir: Path) -> ModifyJob:
        """Creates the prediction and returns at once with its id as job id."""
        self._check_request(request)
        inputs: dict[str, Any] = {
            "video": await self._media_url(Path(request.clip), "video/mp4"),
            "mode": request.mode,
        }
        if request.prompt:
            inputs["prompt"] = request.prompt
        if request.first_frame is not None:
            inputs["first_frame"] = await self._media_url(Path(request.first_frame), "image/png")
        response = await self._request(
            "POST",
            f"/v1/models/{self.model}/predictions",
            what="submit",
            idempotent=False,
            json={"input": inputs},
        )
        prediction = self._json(response, what="submit")
        job = ModifyJob(
            provider=self.name,
            state=JobState.QUEUED,
            job_id=self._created_id(response, prediction, "id"),
            request_id=request_id_of(response),
        )
        return self._from_prediction(job, prediction)

    async def poll(self, job: ModifyJob) -> ModifyJob:
        """Reads the prediction once and maps its status.

        Raises:
            ContentModerationError: the prediction failed for moderation.
        """
        url = job.extra.get("get_url") or f"/v1/predictions/{job.job_id}"
        _, prediction = await self._get_json(url, what="poll")
        return self._from_prediction(job, prediction if isinstance(prediction, dict) else {})

    def create_marker(self, body: Any) -> dict:
        """The clip's URL when it went by URL (unique to the upload, echoed in the prediction's ``input``)."""
        inputs = body.get("input") if isinstance(body, dict) else None
        video = inputs.get("video") if isinstance(inputs, dict) else None
        return {"video_url": video} if isinstance(video, str) and urlsplit(video).scheme in ("http", "https") else {}

    async def find_job(self, marker: dict, sent_at: float) -> ModifyJob | None:
        """Looks through ``GET /v1/predictions`` (newest first, following ``next``) for this model's prediction
        whose ``input.video`` is the marker's URL, back to ``FIND_JOB_LOOKBACK_SECONDS`` before ``sent_at``."""
        if not marker.get("video_url"):
            return None
        url: str | None = "/v1/predictions"
        while url:
            _, data = await self._get_json(url, what="list predictions")
            predictions = data.get("results") if isinstance(data, dict) else None
            if not isinstance(predictions, list) or not predictions:
                return None
            for prediction in predictions:
                inputs = prediction.get("input") if isinstance(prediction, dict) else None
                if (
                    isinstance(inputs, dict)
                    and inputs.get("video") == marker["video_url"]
                    and prediction.get("model", self.model) == self.model
                ):
                    job = ModifyJob(provider=self.name, state=JobState.QUEUED, job_id=str(prediction["id"]))
                    return self._from_prediction(job, prediction)
            oldest = epoch_seconds(predictions[-1].get("created_at"))
            if oldest is not None and oldest < sent_at - FIND_JOB_LOOKBACK_SECONDS:
                return None
            url = data.get("next") if isinstance(data.get("next"), str) else None
        return None

    def _from_prediction(self, job: ModifyJob, prediction: dict[str, Any]) -> ModifyJob:
        urls = prediction.get("urls") if isinstance(prediction.get("urls"), dict) else {}
        if isinstance(urls.get("get"), str):
            job = job.with_changes(extra={**job.extra, "get_url": urls["get"]})
        status = str(prediction.get("status", "")).lower()
        state = _STATES.get(status, JobState.RUNNING)
        if state is JobState.FAILED:
            reason = str(prediction.get("error") or f"prediction {status}")
            error = failure_error(reason, provider=self.name, job_id=job.job_id, request_id=job.request_id)
            if error is not None:
                raise error
            return job.with_changes(state=state, failure_reason=reason)
        if state is JobState.COMPLETED:
            url = _first_url(prediction.get("output"))
            if url is None:
                return job.with_changes(
                    state=JobState.FAILED, failure_reason="succeeded without an output URL"
                )
            return job.with_changes(state=state, result_url=url)
        return job.with_changes(state=state)
