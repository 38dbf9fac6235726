"""Runway's API for Aleph 2: uploads, ``POST /v1/video_to_video``, tasks polled and deletable."""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING

from prefect_modify_video.testing.fake.dialect import (
    Answer,
    BadInput,
    Dialect,
    Route,
    RouteKind,
    echo,
    iso,
    json_object,
)
from prefect_modify_video.testing.fake.faults import Fault
from prefect_modify_video.testing.fake.jobs import CreateInput, Job
from prefect_modify_video.testing.fake.render import clip_rate_and_seconds

if TYPE_CHECKING:
    from prefect_modify_video.testing.fake.server import ServiceRequest

RUNWAY_VERSION = "2024-11-06"
_TASK = r"/v1/tasks/(?P<job_id>[^/]+)"
_FIELDS = {"model", "videoUri", "promptText", "keyframes", "seed", "targetAspectRatio", "contentModeration",
           "outputFormat", "proresProfile", "ratio"}
_STATES = {"queued": "PENDING", "running": "RUNNING", "completed": "SUCCEEDED", "failed": "FAILED",
           "canceled": "CANCELLED"}
CREDITS_PER_SECOND = 28
MAX_FPS = 30.0
"""Aleph 2 takes input "at ≤30 fps"."""
MIN_SECONDS, MAX_SECONDS = 2.0, 30.0
"""Aleph 2 takes input of "2-30 s"."""


def multipart_file(body: bytes, content_type: str) -> bytes:
    """The ``file`` part of a ``multipart/form-data`` body.

    Raises:
        BadInput: there is none.
    """
    match = re.search(r'boundary="?([^";]+)"?', content_type or "")
    if not match:
        raise BadInput("the upload is not multipart/form-data")
    for part in body.split(b"--" + match.group(1).encode()):
        head, _, data = part.partition(b"\r\n\r\n")
        if b'name="file"' in head:
            return data[:-2] if data.endswith(b"\r\n") else data
    raise BadInput("the upload has no file part")


class RunwayDialect(Dialect):
    """Runway: ``Authorization: Bearer`` plus ``X-Runway-Version``; errors ``{"error", "issues"?}``.

    Over the tier's concurrency a task waits ``THROTTLED`` (the first ``throttled_polls`` polls of every task
    show it); the only 429 is the rolling daily cap. A moderated task (``SAFETY.INPUT.*``) is billed like a
    finished one; an ``INTERNAL`` failure is not. A clip over 30 fps or outside 2-30 s (Aleph 2 takes "2-30 s at
    ≤30 fps") fails its task as ``ASSET.INVALID`` when the task reads it, unbilled. Tasks answer at 24 fps.

    Attributes:
        throttled_polls: How many first polls of each task answer ``THROTTLED``.
        failure_code: The ``failureCode`` of a task that failed (``Fault.JOB_FAILED``): ``INTERNAL.BAD_OUTPUT.*`` by
            default; any documented code (``INTERNAL``, ``SAFETY.OUTPUT.*``...).
    """

    service = "runway"
    auth_schemes = ("bearer",)
    default_cost = 0.56
    default_credits = 100.0
    unauthorised_message = "Invalid API key"
    moderation_reason = "The input did not pass our content moderation."
    failure_reason = "An unexpected error occurred."
    bills_moderation = True
    routes = (
        Route("POST", r"/v1/video_to_video", RouteKind.CREATE, "create"),
        Route("POST", r"/v1/uploads", RouteKind.ACCOUNT, "upload"),
        Route("POST", r"/v1/upload-bucket/(?P<upload_id>[^/]+)", RouteKind.ACCOUNT, "upload_file"),
        Route("GET", _TASK, RouteKind.STATUS, "status"),
        Route("DELETE", _TASK, RouteKind.CANCEL, "delete"),
    )

    def __init__(self) -> None:
        self.throttled_polls = 1
        self.failure_code = "INTERNAL.BAD_OUTPUT.CODE01"

    def error(self, status: int, message) -> Answer:
        return Answer.json(status, {"error": message})

    def no_credits(self) -> Answer:
        return self.error(400, "You do not have enough credits to run this task.")

    def rate_limited(self, reset_after: float) -> Answer:
        return self.error(429, "You have exceeded the daily task limit for this model. Try again tomorrow.")

    def invalid_request(self, problem: BadInput) -> Answer:
        path = [problem.field] if problem.field else []
        return Answer.json(400, {"error": "Validation of body failed",
                                 "issues": [{"code": "custom", "path": path, "message": str(problem)}]})

    def _check_version(self, request: ServiceRequest) -> None:
        if request.headers.get("X-Runway-Version") != RUNWAY_VERSION:
            raise BadInput(f"X-Runway-Version must be {RUNWAY_VERSION}", field="X-Runway-Version")

    def _medium(self, request: ServiceRequest, value, field_name: str, params: dict, key: str) -> bytes:
        if isinstance(value, str) and value.startswith("runway://"):
            value = f"{request.base_url}/uploads/runway-{value.removeprefix('runway://')}"
            data = request.media(value, field_name, params, key)
            params[key] = "runway-upload"
            return data
        return request.media(value, field_name, params, key)

    def parse_create(self, request: ServiceRequest, **groups: str) -> CreateInput:
        self._check_version(request)
        payload = json_object(request.body)
        unknown = set(payload) - _FIELDS
        if unknown:
            raise BadInput(f"Unrecognized key(s) in object: {', '.join(sorted(unknown))}")
        if payload.get("model") != "aleph2":
            raise BadInput("Invalid enum value. Expected 'aleph2'", field="model")
        if "ratio" in payload:
            raise BadInput("ratio is deprecated for aleph2", field="ratio")
        prompt = payload.get("promptText")
        if prompt is not None and not (isinstance(prompt, str) and 1 <= len(prompt) <= 1000):
            raise BadInput("promptText must be 1-1000 characters", field="promptText")
        params: dict = {"prompt": prompt or "", "model": "aleph2"}
        video = self._medium(request, payload.get("videoUri"), "videoUri", params, "video_source")
        keyframes = payload.get("keyframes") or []
        if not isinstance(keyframes, list) or len(keyframes) > 5:
            raise BadInput("keyframes must be an array of 1 to 5 items", field="keyframes")
        received = []
        for i, frame in enumerate(keyframes):
            if not isinstance(frame, dict) or not frame.get("uri"):
                raise BadInput("keyframe uri required", field=f"keyframes.{i}.uri")
            seconds = frame.get("seconds")
            if seconds is None and frame.get("at") is not None:
                seconds = float(frame["at"])  # a fraction of the input; kept as given
            if not isinstance(seconds, (int, float)) or not 0 <= seconds <= 30:
                raise BadInput("seconds must be between 0 and 30", field=f"keyframes.{i}.seconds")
            image = self._medium(request, frame["uri"], f"keyframes.{i}.uri", params, "keyframe_source")
            received.append((image, float(seconds)))
        rate, seconds = clip_rate_and_seconds(video)
        # Runway reads the asset only when the task runs: a clip outside its caps fails the task as ASSET.INVALID.
        refusal = None
        if rate and rate > MAX_FPS + 1e-3:
            refusal = f"The input video is {rate:g} fps; at most {MAX_FPS:g} fps is supported."
        elif seconds is not None and not MIN_SECONDS - 1e-3 <= seconds <= MAX_SECONDS + 1e-3:
            refusal = f"The input video is {seconds:.2f} seconds; it must be {MIN_SECONDS:g} to {MAX_SECONDS:g} seconds."
        params["input_fps"], params["input_seconds"] = rate, seconds
        return CreateInput(video, None, "aleph2", echo(payload), params, keyframes=received, refusal=refusal)

    def upload(self, request: ServiceRequest) -> Answer:
        """``{uploadUrl, fields, runwayUri}`` for a multipart POST of the file."""
        payload = json_object(request.body)
        if not payload.get("filename") or payload.get("type") != "ephemeral":
            return self.invalid_request(BadInput("filename and type 'ephemeral' required"))
        upload_id = uuid.uuid4().hex
        return Answer.json(200, {
            "uploadUrl": f"{request.base_url}/v1/upload-bucket/{upload_id}",
            "fields": {"key": f"uploads/{upload_id}/{payload['filename']}", "policy": "fake-policy"},
            "runwayUri": f"runway://{upload_id}",
        })

    def upload_file(self, request: ServiceRequest, upload_id: str) -> Answer:
        """Stores the multipart ``file``: 204 as S3 answers a form POST."""
        try:
            data = multipart_file(request.body, request.headers.get("Content-Type", ""))
        except BadInput as problem:
            return self.invalid_request(problem)
        request.store_upload(f"runway-{upload_id}", data, "video/mp4")
        return Answer(204, b"", "application/json")

    def task(self, request: ServiceRequest, job: Job, state: str) -> dict:
        """The task object of ``job`` in ``state``."""
        status = _STATES[state]
        if state != "canceled" and job.polls <= self.throttled_polls:
            # Waiting for a slot of the tier's concurrency: it shows nothing else yet.
            status, state = "THROTTLED", "queued"
        task: dict = {"id": job.id, "createdAt": iso(job.created_wall), "status": status}
        if status == "RUNNING":
            task["progress"] = 0.5
        if status == "SUCCEEDED":
            task["output"] = [request.result_url(job) + "?_jwt=fake-signature"]
        if status in ("FAILED", "CANCELLED"):
            task["failure"] = job.failure_reason or "cancelled"
            task["failureCode"] = (
                "SAFETY.INPUT.TEXT" if job.failure_kind == "moderation"
                else "ASSET.INVALID" if job.failure_kind == "invalid"
                else self.failure_code
            )
        return task

    def create(self, request: ServiceRequest, create: CreateInput, fault: Fault | None) -> Answer:
        """200 ``{"id"}`` with the most credits the task may charge."""
        job = request.start_job(create, fault)
        return Answer.json(200, {"id": job.id, "estimatedCost": {"credits": round(request.cost() * 100)}})

    def status(self, request: ServiceRequest, job: Job) -> Answer:
        """The task as it is now (``THROTTLED`` for its first polls)."""
        return Answer.json(200, self.task(request, job, request.state(job)))

    def delete(self, request: ServiceRequest, job: Job) -> Answer:
        """Cancels a running task or deletes a finished one: 204."""
        request.cancel(job, forget=True, reason="cancelled")
        return Answer(204, b"", "application/json")
