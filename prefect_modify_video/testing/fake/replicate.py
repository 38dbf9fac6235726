"""Replicate's predictions API for ``luma/modify-video``."""

from __future__ import annotations

import math
import re
import uuid
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

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
from prefect_modify_video.testing.fake.faults import Fault, FaultKind
from prefect_modify_video.testing.fake.jobs import CreateInput, Job

if TYPE_CHECKING:
    from prefect_modify_video.testing.fake.server import ServiceRequest

_STATES = {
    "queued": "starting",
    "running": "processing",
    "completed": "succeeded",
    "failed": "failed",
    "canceled": "canceled",
}
_PREFER_WAIT = re.compile(r"\bwait(?:\s*=\s*(\d+(?:\.\d+)?))?")


class ReplicateDialect(Dialect):
    """Replicate: ``Authorization: Bearer`` (or ``Token``); problem-JSON errors
    ``{"title", "detail", "status"}``; 402 when out of credit.

    Its 429 body says when the limit resets, as documented: ``{"detail": "Request was
    throttled. Your rate limit resets in ~Ns.", "status": 429}``, N the reset delay rounded
    up (at least 1); a ``retry-after`` header with the same seconds comes with it.
    ``Prefer: wait[=n]`` holds a create until the prediction ends (at most
    ``replicate_max_wait_seconds``).
    """

    service = "replicate"
    auth_schemes = ("bearer", "token")
    default_cost = 1.75
    default_credits = 100.0
    unauthorised_message = "You did not pass a valid authentication token"
    moderation_reason = (
        "The input or output was flagged as sensitive (NSFW). "
        "Please try again with different inputs. (E005)"
    )
    failure_reason = "Prediction failed: internal error during generation"
    routes = (
        Route("POST", r"/v1/models/luma/modify-video/predictions", RouteKind.CREATE, "create"),
        Route("GET", r"/v1/predictions", RouteKind.ACCOUNT, "list_predictions"),
        Route("GET", r"/v1/predictions/(?P<job_id>[^/]+)", RouteKind.STATUS, "status"),
        Route("POST", r"/v1/predictions/(?P<job_id>[^/]+)/cancel", RouteKind.CANCEL, "cancel"),
    )

    def error(self, status: int, message: Any) -> Answer:
        return Answer.json(
            status, {"title": HTTPStatus(status).phrase, "detail": message, "status": status}
        )

    def unauthorised(self) -> Answer:
        return Answer.json(
            401, {"title": "Unauthenticated", "detail": self.unauthorised_message, "status": 401}
        )

    def rate_limited(self, reset_after: float) -> Answer:
        seconds = max(1, math.ceil(reset_after))
        return Answer.json(
            429,
            {
                "detail": f"Request was throttled. Your rate limit resets in ~{seconds}s.",
                "status": 429,
            },
            {"retry-after": str(seconds)},
        )

    def no_credits(self) -> Answer:
        return Answer.json(
            402,
            {
                "title": "Insufficient credit",
                "detail": "You have insufficient credit to run this model. Go to "
                "https://replicate.com/account/billing#billing to purchase credit.",
                "status": 402,
            },
        )

    def invalid_request(self, problem: BadInput) -> Answer:
        return Answer.json(
            422, {"title": "Input validation failed", "detail": str(problem), "status": 422}
        )

    def new_job_id(self) -> str:
        return uuid.uuid4().hex[:26]

    def parse_create(self, request: ServiceRequest, **groups: str) -> CreateInput:
        payload = json_object(request.body)
        given = payload.get("input")
        if not isinstance(given, dict):
            raise BadInput("- input: input is required")
        video_value = given.get("video") or given.get("video_url")
        if not video_value:
            raise BadInput("- input: video is required")
        mode = given.get("mode") or "flex_1"
        if mode not in MODES:
            raise BadInput(f"- input.mode: must be one of {', '.join(MODES)}")
        params: dict = {"prompt": given.get("prompt") or "", "mode": mode}
        video = request.media(video_value, "video", params, "video_source")
        first_frame = None
        frame_value = given.get("first_frame") or given.get("first_frame_url")
        if frame_value:
            first_frame = request.media(frame_value, "first_frame", params, "first_frame_source")
        return CreateInput(video, first_frame, "luma/modify-video", echo(given), params)

    def prediction(self, request: ServiceRequest, job: Job, state: str) -> dict:
        """The prediction object of ``job`` in ``state``."""
        base = f"{request.base_url}/v1/predictions/{job.id}"
        terminal = state in ("completed", "failed", "canceled")
        return {
            "id": job.id,
            "model": "luma/modify-video",
            "version": "fake",
            "input": job.echo,
            "logs": "",
            "output": request.result_url(job) if state == "completed" else None,
            "data_removed": False,
            "error": job.failure_reason if state == "failed" else None,
            "status": _STATES[state],
            "created_at": iso(job.created_wall),
            "completed_at": iso(job.completed_wall) if terminal else None,
            "urls": {"get": base, "cancel": f"{base}/cancel"},
        }

    def create(self, request: ServiceRequest, create: CreateInput, fault: Fault | None) -> Answer:
        """201 with the prediction; with ``Prefer: wait`` once it ended or the hold ran out."""
        job = request.start_job(create, fault)
        prefer = _PREFER_WAIT.search(request.headers.get("Prefer", ""))
        state = "queued"
        if prefer:
            longest = request.server.replicate_max_wait_seconds
            hold = min(float(prefer.group(1) or longest), longest)
            if fault is not None and fault.kind is FaultKind.STUCK:
                request.sleep(hold)
            elif job.done.wait(hold):
                request.release(job)
            state = request.state(job)
        return Answer.json(201, self.prediction(request, job, state))

    def status(self, request: ServiceRequest, job: Job) -> Answer:
        """The prediction as it is now."""
        return Answer.json(200, self.prediction(request, job, request.state(job)))

    def list_predictions(self, request: ServiceRequest) -> Answer:
        """``GET /v1/predictions[?cursor=]``: the account's predictions, newest first, 100 a page, ``next`` the
        absolute URL of the next page (``null`` on the last)."""
        page_size = 100
        start = int(request.query.get("cursor", ["0"])[0] or 0)
        jobs = sorted(request.jobs(), key=lambda job: job.created_wall, reverse=True)
        page = [self.prediction(request, job, request.state(job)) for job in jobs[start : start + page_size]]
        more = start + page_size < len(jobs)
        following = f"{request.base_url}/v1/predictions?cursor={start + page_size}" if more else None
        previous = f"{request.base_url}/v1/predictions?cursor={max(0, start - page_size)}" if start else None
        return Answer.json(200, {"next": following, "previous": previous, "results": page})

    def cancel(self, request: ServiceRequest, job: Job) -> Answer:
        """Cancels a running prediction; answers it as it is then."""
        request.cancel(job)
        return Answer.json(200, self.prediction(request, job, request.state(job)))
