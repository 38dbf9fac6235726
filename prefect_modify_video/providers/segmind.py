"""Segmind's Luma Ray 2 Modify: the blocking v1 call and the asynchronous v2 queue.

v1 (``SegmindBackend``) holds one request open for the whole run (about 165 s) and answers
with the MP4 itself, so ``submit`` returns a job that is already ``COMPLETED``. v2
(``SegmindAsyncBackend``) answers at once with a request id that a resumed run can poll.
Both send the clip and the first frame as files in a ``multipart/form-data`` body, under
the field names the JSON form uses for URLs (``video_url``, ``first_frame_url``); with an
uploader they send URLs in a JSON body instead.

Price: Segmind shows "about $0.60" per run and no per-second or per-pixel rate, so the
estimate is $0.60 for each call of up to ``max_segment_seconds`` (30 s). The real charge
is read from the ``x-cost`` header when Segmind sends it.
"""

from __future__ import annotations

import contextlib
import json
import math
import uuid
from pathlib import Path
from typing import Any, ClassVar

import httpx

from prefect_modify_video.media.files import atomic_copy
from prefect_modify_video.providers.base import JobState, ModifyJob, ModifyRequest
from prefect_modify_video.providers.http_client import (
    HttpModifyBackend,
    check_video_answer,
    guess_mime,
    parse_float,
)
from prefect_modify_video.providers.http_errors import describe_body, failure_error, request_id_of

SEGMIND_BASE_URL = "https://api.segmind.com"
SEGMIND_PRICE_PER_CALL_USD = 0.60
"""Segmind's displayed price of one run ("~$0.602"); it states no per-second rate."""

_V2_STATES = {
    "QUEUED": JobState.QUEUED,
    "PROCESSING": JobState.RUNNING,
    "IN_PROGRESS": JobState.RUNNING,
    "COMPLETED": JobState.COMPLETED,
    "SUCCEEDED": JobState.COMPLETED,
    "FAILED": JobState.FAILED,
    "ERROR": JobState.FAILED,
}


def output_url(output: Any) -> str | None:
    """The result URL in a Segmind ``output``: a string, a JSON string, a list or a dict."""
    if isinstance(output, str):
        text = output.strip()
        if text[:1] in ("{", "[", '"'):
            with contextlib.suppress(ValueError):
                return output_url(json.loads(text))
        return text if text.startswith(("http://", "https://")) else None
    if isinstance(output, list):
        for item in output:
            url = output_url(item)
            if url:
                return url
        return None
    if isinstance(output, dict):
        for key in ("url", "video", "video_url", "output", "uri"):
            url = output_url(output.get(key))
            if url:
                return url
    return None


class _SegmindBase(HttpModifyBackend):
    """What both Segmind APIs share: auth, body, headers, caps and price."""

    service: ClassVar[str] = "segmind"
    api_key_env: ClassVar[str] = "SEGMIND_API_KEY"
    credentials_block: ClassVar[str] = "SegmindCredentials"
    default_base_url: ClassVar[str] = SEGMIND_BASE_URL
    model = "luma-ray-2-modify"
    max_segment_seconds = 30.0
    """Segmind: "use short MP4s under 30 seconds"; segments are planned strictly under."""
    max_upload_bytes = 100_000_000
    max_dimension = 1280
    """Ray 2 Modify works at up to 720p (1280 long side); larger only costs upload time."""
    max_concurrency = 4
    """Segmind states no concurrency limit; 4 keeps 429s rare on a default account."""
    poll_interval_seconds = 5.0
    max_wait_seconds = 900.0
    """About 165 s per run is typical; 15 minutes covers queueing at busy times."""

    def _auth_headers(self) -> dict[str, str]:
        return {"x-api-key": self._api_key}

    def estimate_cost_usd(self, seconds: float, width: int, height: int) -> float:
        """$0.60 for each call of up to ``max_segment_seconds`` (Segmind's shown price).

        Segmind publishes a price per run, not per second or pixel, so size is ignored and
        ``seconds`` is turned into the least number of calls it needs.
        """
        calls = max(1, math.ceil(max(seconds, 0.0) / self.max_segment_seconds))
        return round(calls * SEGMIND_PRICE_PER_CALL_USD, 4)

    async def _body(self, request: ModifyRequest) -> dict[str, Any]:
        """``files``+``data`` for a multipart body, or ``json`` when an uploader is set."""
        fields: dict[str, str] = {"mode": request.mode}
        if request.prompt:
            fields["prompt"] = request.prompt
        clip = Path(request.clip)
        if self.uploader is not None:
            fields["video_url"] = await self.uploader.upload(clip)
            if request.first_frame is not None:
                fields["first_frame_url"] = await self.uploader.upload(Path(request.first_frame))
            return {"json": fields}
        files = {"video_url": (clip.name, clip.read_bytes(), "video/mp4")}
        if request.first_frame is not None:
            frame = Path(request.first_frame)
            files["first_frame_url"] = (frame.name, frame.read_bytes(), guess_mime(frame, "image/png"))
        return {"data": fields, "files": files}

    @staticmethod
    def _billing(response: httpx.Response) -> dict[str, Any]:
        return {
            "request_id": request_id_of(response),
            "cost_usd": parse_float(response.headers.get("x-cost")),
            "remaining_credits": parse_float(response.headers.get("x-remaining-credits")),
        }


class SegmindBackend(_SegmindBase):
    """Segmind v1: ``POST /v1/modify-video`` blocks until the MP4 comes back.

    Example:
        ```python
        from prefect_modify_video.providers.segmind import SegmindBackend

        async with SegmindBackend(api_key) as backend:
            job = await backend.submit(request, workdir)   # already COMPLETED
            await backend.download(job, Path("out.mp4"))
        ```
    """

    name: ClassVar[str] = "segmind"
    default_timeout_seconds: ClassVar[float] = 600.0
    """The answer comes only when the video is made (about 165 s, more when busy)."""

    async def submit(self, request: ModifyRequest, workdir: Path) -> ModifyJob:
        """Sends the clip and waits for the modified MP4, saved into ``workdir``.

        Returns:
            A ``COMPLETED`` job whose ``result_path`` is the saved clip (or, if Segmind
            answers JSON holding a URL, whose ``result_url`` is that URL).

        Raises:
            ClipValidationError: a 200 whose body is not a video (HTML, JSON without URL).
            SubmitOutcomeUnknownError: the connection failed after sending; the call may
                have been billed, so it is not resent.
        """
        self._check_request(request)
        body = await self._body(request)
        response = await self._request(
            "POST", "/v1/modify-video", what="submit", idempotent=False, stream=True, **body
        )
        billing = self._billing(response)
        content_type = response.headers.get("content-type", "").lower()
        if "json" in content_type:
            # Segmind's newer snippets read v1 answers as JSON: accept a result URL there.
            with contextlib.suppress(Exception):
                await response.aread()
            await response.aclose()
            url = None
            with contextlib.suppress(ValueError):
                url = output_url(response.json())
            if url is None:
                check_video_answer(
                    content_type, response.content[:512], provider=self.name,
                    request_id=billing["request_id"],
                )
            return ModifyJob(
                provider=self.name, state=JobState.COMPLETED, result_url=url, **billing
            )
        workdir = Path(workdir)
        name = f"segmind-{billing['request_id'] or uuid.uuid4().hex}.mp4".replace("/", "_")
        path = await self._save_video(
            response, workdir / name, what="submit", job_id=None, creates_job=True
        )
        return ModifyJob(provider=self.name, state=JobState.COMPLETED, result_path=path, **billing)

    async def download(self, job: ModifyJob, destination: Path) -> Path:
        """Copies the clip ``submit`` saved (or fetches its URL) to ``destination``.

        The copy is atomic and leaves the saved clip in place, so it can be repeated.
        """
        if job.result_path is None:
            return await super().download(job, destination)
        return atomic_copy(job.result_path, destination)


class SegmindAsyncBackend(_SegmindBase):
    """Segmind v2: ``POST /v2/modify-video`` queues the job; poll ``status_url``.

    The job's ``extra`` keeps ``status_url`` and ``response_url``; Segmind keeps results
    for one hour after submission.
    """

    name: ClassVar[str] = "segmind-async"
    default_timeout_seconds: ClassVar[float] = 300.0

    def _urls(self, job: ModifyJob) -> tuple[str, str]:
        status_url = job.extra.get("status_url") or f"/v2/requests/{job.job_id}/status"
        response_url = job.extra.get("response_url") or f"/v2/requests/{job.job_id}"
        return status_url, response_url

    async def submit(self, request: ModifyRequest, workdir: Path) -> ModifyJob:
        """Queues the clip and returns at once with Segmind's ``request_id`` as job id."""
        self._check_request(request)
        body = await self._body(request)
        response = await self._request(
            "POST", "/v2/modify-video", what="submit", idempotent=False, **body
        )
        data = self._json(response, what="submit")
        job_id = self._created_id(response, data, "request_id")
        extra = {
            key: data[key]
            for key in ("status_url", "response_url", "poll_url")
            if isinstance(data.get(key), str)
        }
        billing = self._billing(response)
        billing["request_id"] = billing["request_id"] or job_id
        return ModifyJob(
            provider=self.name,
            state=_V2_STATES.get(str(data.get("status", "QUEUED")).upper(), JobState.QUEUED),
            job_id=str(job_id),
            extra=extra,
            **billing,
        )

    def _failed(self, job: ModifyJob, data: Any) -> ModifyJob:
        data = data if isinstance(data, dict) else {}
        reason = str(data.get("error") or data.get("detail") or data.get("message") or "no reason given")
        error = failure_error(reason, provider=self.name, job_id=job.job_id, request_id=job.request_id)
        if error is not None:
            raise error
        return job.with_changes(state=JobState.FAILED, failure_reason=reason)

    async def _get_state(self, url: str, *, what: str) -> tuple[httpx.Response, Any, bool]:
        """GETs a v2 URL; the flag says the job failed (a 422 ``FAILED`` answer or body)."""
        response = await self._request("GET", url, what=what, idempotent=True, accept=(422,))
        if response.status_code == 422:
            try:
                data = response.json()
            except ValueError:
                data = None
            if not (isinstance(data, dict) and str(data.get("status", "")).upper() == "FAILED"):
                self._raise_for_status(response)
            return response, data, True
        data = self._json(response, what=what)
        status = str(data.get("status", "")).upper() if isinstance(data, dict) else ""
        return response, data, status in ("FAILED", "ERROR")

    async def poll(self, job: ModifyJob) -> ModifyJob:
        """Checks the job once; on ``COMPLETED`` also fetches its result URL.

        Raises:
            ContentModerationError: the job failed for moderation.
        """
        status_url, response_url = self._urls(job)
        response, data, failed = await self._get_state(status_url, what="poll")
        if failed:
            return self._failed(job, data)
        status = str(data.get("status", "")).upper() if isinstance(data, dict) else ""
        state = _V2_STATES.get(status, JobState.RUNNING)
        if state is not JobState.COMPLETED:
            return job.with_changes(state=state)
        response, data, failed = await self._get_state(response_url, what="fetch result")
        if failed:
            return self._failed(job, data)
        url = output_url(data.get("output") if isinstance(data, dict) else data)
        if url is None:
            return job.with_changes(
                state=JobState.FAILED,
                failure_reason=f"completed without a video URL: {describe_body(response)}",
            )
        billing = self._billing(response)
        return job.with_changes(
            state=JobState.COMPLETED,
            result_url=url,
            cost_usd=billing["cost_usd"] if billing["cost_usd"] is not None else job.cost_usd,
            remaining_credits=(
                billing["remaining_credits"]
                if billing["remaining_credits"] is not None
                else job.remaining_credits
            ),
        )
