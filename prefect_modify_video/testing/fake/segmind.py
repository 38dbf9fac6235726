"""Segmind's modify-video API: v1 blocking (answers the MP4) and v2 queue."""

from __future__ import annotations

import email.parser
import email.policy
import json
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from prefect_modify_video.testing.fake.dialect import (
    MODES,
    Answer,
    BadInput,
    Dialect,
    Refused,
    Route,
    RouteKind,
    echo,
)
from prefect_modify_video.testing.fake.faults import Fault, FaultKind
from prefect_modify_video.testing.fake.jobs import CreateInput, Job
from prefect_modify_video.testing.fake.render import RenderError

if TYPE_CHECKING:
    from prefect_modify_video.testing.fake.server import ServiceRequest

_STATES = {
    "queued": "QUEUED",
    "running": "PROCESSING",
    "completed": "COMPLETED",
    "failed": "FAILED",
    "canceled": "FAILED",
}


class SegmindDialect(Dialect):
    """Segmind: ``x-api-key``; errors ``{"error": ...}``; 406 when out of credits.

    Its 429 carries ``x-rate-limit-reset-at-utc`` (ISO 8601, UTC) and no ``Retry-After``, as
    documented. A body that is neither JSON nor multipart is refused with 406 too.
    """

    service = "segmind"
    auth_header = "x-api-key"
    auth_schemes = ()
    default_cost = 0.60
    default_credits = 100.0
    unauthorised_message = "Unauthorized: invalid or missing API key"
    moderation_reason = "Content moderation failed: the input was flagged as NSFW"
    failure_reason = "Generation failed"
    routes = (
        Route("POST", r"/v1/modify-video", RouteKind.CREATE, "create_blocking", "segmind.v1"),
        Route("POST", r"/v2/modify-video", RouteKind.CREATE, "create_queued", "segmind.v2"),
        Route("GET", r"/v2/requests/(?P<job_id>[^/]+)/status", RouteKind.STATUS, "status"),
        Route("GET", r"/v2/requests/(?P<job_id>[^/]+)(?:/response)?", RouteKind.RESULT, "result"),
    )

    def error(self, status: int, message: Any) -> Answer:
        return Answer.json(status, {"error": message})

    def rate_limited(self, reset_after: float) -> Answer:
        reset_at = datetime.now(timezone.utc) + timedelta(seconds=reset_after)
        hint = {"x-rate-limit-reset-at-utc": reset_at.isoformat()}
        return Answer.json(429, {"error": "Rate limit exceeded"}, hint)

    def no_credits(self) -> Answer:
        return Answer.json(406, {"error": "Not enough credits"})

    # ----------------------------------------------------------------- creates

    def parse_create(self, request: ServiceRequest, **groups: str) -> CreateInput:
        fields, files = self._fields(request)
        params: dict = {
            "prompt": str(fields.get("prompt") or ""),
            "mode": str(fields.get("mode") or "adhere_1"),
        }
        if params["mode"] not in MODES:
            raise BadInput(f"mode must be one of {', '.join(MODES)}")
        if "video_url" in files:
            video, params["video_source"] = files["video_url"], "file"
        elif fields.get("video_url"):
            video = request.media(fields["video_url"], "video_url", params, "video_source")
        else:
            raise BadInput("video_url is required")
        first_frame = None
        if "first_frame_url" in files:
            first_frame, params["first_frame_source"] = files["first_frame_url"], "file"
        elif fields.get("first_frame_url"):
            first_frame = request.media(
                fields["first_frame_url"], "first_frame_url", params, "first_frame_source"
            )
        return CreateInput(video, first_frame, "ray-2", echo(fields), params)

    @staticmethod
    def _fields(request: ServiceRequest) -> tuple[dict, dict[str, bytes]]:
        """Parses a JSON or multipart body into text fields and files."""
        content_type = request.headers.get("Content-Type", "")
        if content_type.lower().startswith("application/json"):
            try:
                fields = json.loads(request.body or b"{}")
            except ValueError as exc:
                raise BadInput("the body is not valid JSON") from exc
            if not isinstance(fields, dict):
                raise BadInput("the JSON body must be an object")
            return fields, {}
        if content_type.lower().startswith("multipart/form-data"):
            return parse_multipart(content_type, request.body)
        raise Refused(
            Answer.json(
                406,
                {"error": f"Unsupported Content-Type {content_type!r}; "
                 "send application/json or multipart/form-data"},
            )
        )

    def create_blocking(
        self, request: ServiceRequest, create: CreateInput, fault: Fault | None
    ) -> Answer:
        """v1: does the work in the request and answers the MP4 (billed)."""
        kind = fault.kind if fault else None
        if kind is FaultKind.MODERATION:
            return self.error(400, self.moderation_reason)
        if kind is FaultKind.JOB_FAILED:
            return self.error(500, self.failure_reason)
        if kind is FaultKind.STUCK:
            request.sleep(request.server.timeout_seconds)
            return Answer.gateway(504, "Gateway Timeout")
        started = time.monotonic()
        try:
            clip = request.render(create.video, fault)
        except RenderError:
            return self.error(400, "video_url could not be decoded as a video")
        remaining = request.bill()
        return Answer(
            200,
            clip,
            "video/mp4",
            {
                "x-remaining-credits": f"{remaining:.4f}",
                "x-cost": f"{request.cost():.4f}",
                "x-generation-time": f"{time.monotonic() - started:.3f}",
                "x-request-id": str(uuid.uuid4()),
            },
        )

    def create_queued(
        self, request: ServiceRequest, create: CreateInput, fault: Fault | None
    ) -> Answer:
        """v2: queues a job and answers its URLs."""
        job = request.start_job(create, fault)
        status_url = f"{request.base_url}/v2/requests/{job.id}/status"
        return Answer.json(
            200,
            {
                "request_id": job.id,
                "status": "QUEUED",
                "poll_url": status_url,
                "status_url": status_url,
                "response_url": f"{request.base_url}/v2/requests/{job.id}/response",
            },
        )

    # ----------------------------------------------------------------- jobs

    def status(self, request: ServiceRequest, job: Job) -> Answer:
        """``{request_id, status}``, with ``error`` once failed."""
        state = request.state(job)
        payload = {"request_id": job.id, "status": _STATES[state]}
        if state == "failed":
            payload["error"] = job.failure_reason
        return Answer.json(200, payload)

    def result(self, request: ServiceRequest, job: Job) -> Answer:
        """200 ``{output: url}`` when completed, 422 when failed, 202 while running."""
        state = request.state(job)
        if state in ("failed", "canceled"):
            reason = job.failure_reason or "canceled"
            return Answer.json(422, {"request_id": job.id, "status": "FAILED", "error": reason})
        if state == "completed":
            return Answer.json(
                200,
                {"request_id": job.id, "status": "COMPLETED", "output": request.result_url(job)},
                {
                    "x-remaining-credits": f"{request.credits():.4f}",
                    "x-cost": f"{request.cost():.4f}",
                },
            )
        return Answer.json(202, {"request_id": job.id, "status": _STATES[state]})


def parse_multipart(content_type: str, body: bytes) -> tuple[dict, dict[str, bytes]]:
    """Splits a ``multipart/form-data`` body into text fields and files with ``email``."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise BadInput("the multipart body could not be parsed")
    fields: dict = {}
    files: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = part.get_payload(decode=True) or b""
        if part.get_filename() is not None:
            files[name] = payload
        else:
            fields[name] = payload.decode("utf-8", errors="replace")
    return fields, files
