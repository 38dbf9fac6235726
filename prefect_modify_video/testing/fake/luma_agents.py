"""Luma's Agents API for Ray 3.2 ``video_edit``: ``POST /v1/generations`` (201), polled; no cancel."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prefect_modify_video.testing.fake.dialect import (
    MODES,
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

if TYPE_CHECKING:
    from prefect_modify_video.testing.fake.server import ServiceRequest

RESOLUTIONS = ("360p", "540p", "720p", "1080p")
URL_LIFETIME_SECONDS = 3600
_STATES = {"queued": "queued", "running": "processing", "completed": "completed", "failed": "failed",
           "canceled": "failed"}


class LumaAgentsDialect(Dialect):
    """Luma Agents: ``Authorization: Bearer``; errors ``{"detail": ...}``; 429 with ``Retry-After``; 402 balance.

    A failed generation carries ``failure_code`` (``content_moderated``, ``generation_failed``...); a completed
    one ``output: [{"type": "video", "url"}]`` whose URL is presigned for one hour.

    Attributes:
        failure_code: The ``failure_code`` of a generation that failed (``Fault.JOB_FAILED``): ``generation_failed``
            by default; any documented code (``budget_exhausted``, ``output_not_found``, ``rate_limited``...).
    """

    service = "luma-agents"
    auth_schemes = ("bearer",)
    default_cost = 0.72
    default_credits = 100.0
    unauthorised_message = "Invalid API key"
    moderation_reason = "The request was flagged by content moderation"
    failure_reason = "The generation failed"
    routes = (
        Route("POST", r"/v1/generations", RouteKind.CREATE, "create"),
        Route("GET", r"/v1/generations/(?P<job_id>[^/]+)", RouteKind.STATUS, "status"),
    )

    def __init__(self) -> None:
        self.failure_code = "generation_failed"

    def no_credits(self) -> Answer:
        return Answer.json(402, {"detail": "Insufficient balance: add credits to continue"})

    def rate_limited(self, reset_after: float) -> Answer:
        return Answer.json(429, {"detail": "Rate limit exceeded"},
                           headers={"Retry-After": str(max(1, round(reset_after)))})

    def invalid_request(self, problem: BadInput) -> Answer:
        return Answer.json(422 if problem.field else 400, {"detail": str(problem)})

    def _ref(self, request: ServiceRequest, ref, field_name: str, params: dict, key: str) -> bytes:
        if not isinstance(ref, dict) or sum(k in ref for k in ("generation_id", "url", "data")) != 1:
            raise BadInput(f"{field_name}: exactly one of generation_id, url or data", field=field_name)
        if "generation_id" in ref:
            raise BadInput(f"{field_name}: generation {ref['generation_id']} not found", field=field_name)
        if not ref.get("media_type"):
            raise BadInput(f"{field_name}.media_type: required with url or data", field=field_name)
        return request.media(ref.get("url") or ref.get("data"), field_name, params, key)

    def parse_create(self, request: ServiceRequest, **groups: str) -> CreateInput:
        payload = json_object(request.body)
        if payload.get("model") != "ray-3.2" or payload.get("type") != "video_edit":
            raise BadInput("model must be 'ray-3.2' and type 'video_edit'")
        prompt = payload.get("prompt")
        if not isinstance(prompt, str) or not 1 <= len(prompt) <= 6000:
            raise BadInput("prompt: 1-6000 characters required", field="prompt")
        video_options = payload.get("video") or {}
        if "duration" in video_options:
            raise BadInput("video.duration: not allowed for video_edit (the output matches the source)",
                           field="video.duration")
        resolution = video_options.get("resolution", "720p")
        if resolution not in RESOLUTIONS:
            raise BadInput(f"video.resolution: one of {', '.join(RESOLUTIONS)}", field="video.resolution")
        edit = video_options.get("edit") or {}
        strength = edit.get("strength")
        if strength is not None and strength not in MODES:
            raise BadInput(f"video.edit.strength: one of {', '.join(MODES)}", field="video.edit.strength")
        if strength is not None and edit.get("auto_controls"):
            raise BadInput("video.edit: strength and auto_controls exclude each other", field="video.edit")
        params: dict = {"prompt": prompt, "mode": strength, "model": "ray-3.2", "resolution": resolution}
        video = self._ref(request, payload.get("source"), "source", params, "video_source")
        first_frame = None
        if video_options.get("start_frame") is not None:
            if edit.get("keyframes"):
                raise BadInput("video.start_frame and video.edit.keyframes exclude each other", field="video")
            first_frame = self._ref(request, video_options["start_frame"], "video.start_frame", params,
                                    "first_frame_source")
        frames, indexes = edit.get("keyframes") or [], edit.get("keyframe_indexes") or []
        if len(frames) != len(indexes) or len(frames) > 64:
            raise BadInput("video.edit.keyframes and keyframe_indexes: the same length, at most 64",
                           field="video.edit.keyframes")
        if len(set(indexes)) != len(indexes) or any(not isinstance(i, int) or i < 0 for i in indexes):
            raise BadInput("video.edit.keyframe_indexes: unique non-negative integers",
                           field="video.edit.keyframe_indexes")
        keyframes = [
            (self._ref(request, ref, f"video.edit.keyframes.{i}", params, "keyframe_source"), float(index))
            for i, (ref, index) in enumerate(zip(frames, indexes))
        ]
        return CreateInput(video, first_frame, "ray-3.2", echo(payload), params, keyframes=keyframes)

    def generation(self, request: ServiceRequest, job: Job, state: str) -> dict:
        """The Generation object of ``job`` in ``state``."""
        generation: dict = {"id": job.id, "created_at": iso(job.created_wall), "model": "ray-3.2",
                            "state": _STATES[state], "type": "video_edit"}
        if state in ("failed", "canceled"):
            generation["failure_code"] = (
                "content_moderated" if job.failure_kind == "moderation"
                else "corrupt_input" if job.failure_kind == "invalid" else self.failure_code
            )
            generation["failure_reason"] = job.failure_reason
        if state == "completed":
            expires = int(time.time()) + URL_LIFETIME_SECONDS
            url = f"{request.result_url(job)}?X-Amz-Expires={URL_LIFETIME_SECONDS}&Expires={expires}"
            generation["output"] = [{"type": "video", "url": url}]
        return generation

    def create(self, request: ServiceRequest, create: CreateInput, fault: Fault | None) -> Answer:
        """201 with the queued Generation."""
        job = request.start_job(create, fault)
        return Answer.json(201, self.generation(request, job, "queued"),
                           headers={"X-API-Version": "2026-04-01", "X-RateLimit-Limit": "60"})

    def status(self, request: ServiceRequest, job: Job) -> Answer:
        """The Generation as it is now, a fresh one-hour URL when completed."""
        return Answer.json(200, self.generation(request, job, request.state(job)),
                           headers={"X-API-Version": "2026-04-01"})
