"""Luma's Dream Machine API: modify generations by URL, polled, deletable; a credits route."""

from __future__ import annotations

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

LUMA_MODELS: tuple[str, ...] = ("ray-2", "ray-flash-2")
_GENERATION = r"/dream-machine/v1/generations/(?P<job_id>[^/]+)"

_STATES = {
    "queued": "queued",
    "running": "dreaming",
    "completed": "completed",
    "failed": "failed",
    "canceled": "failed",
}


class LumaDialect(Dialect):
    """Luma: ``Authorization: Bearer``; errors ``{"detail": ...}``; credits in US cents.

    Creates answer 201 with a Generation. No rate-limit hint is documented: its 429 is a plain
    ``{"detail": ...}``. Out of credits it answers 400.
    """

    service = "luma"
    auth_schemes = ("bearer",)
    default_cost = 175.0
    default_credits = 50_000.0
    unauthorised_message = "Invalid authentication credentials"
    moderation_reason = "Advanced moderation failed"
    failure_reason = "Job failed: internal error during generation"
    routes = (
        Route("POST", r"/dream-machine/v1/generations/video/modify", RouteKind.CREATE, "create"),
        Route("GET", r"/dream-machine/v1/credits", RouteKind.ACCOUNT, "credit_balance"),
        Route("GET", r"/dream-machine/v1/generations", RouteKind.ACCOUNT, "list_generations"),
        Route("GET", _GENERATION, RouteKind.STATUS, "status"),
        Route("DELETE", _GENERATION, RouteKind.CANCEL, "delete"),
    )

    def no_credits(self) -> Answer:
        return Answer.json(
            400, {"detail": "Insufficient credits: top up at https://lumalabs.ai/api/billing"}
        )

    def invalid_request(self, problem: BadInput) -> Answer:
        return Answer.json(400, {"detail": f"Invalid request: {problem}"})

    def parse_create(self, request: ServiceRequest, **groups: str) -> CreateInput:
        payload = json_object(request.body)
        if payload.get("generation_type") != "modify_video":
            raise BadInput("generation_type: must be 'modify_video'")
        media = payload.get("media")
        if not isinstance(media, dict) or not media.get("url"):
            raise BadInput("media.url: field required")
        mode = payload.get("mode")
        if mode not in MODES:
            raise BadInput(f"mode: field required, one of {', '.join(MODES)}")
        model = payload.get("model")
        if model not in LUMA_MODELS:
            raise BadInput(f"model: field required, one of {', '.join(LUMA_MODELS)}")
        params: dict = {"prompt": payload.get("prompt") or "", "mode": mode, "model": model}
        video = request.media(media["url"], "media.url", params, "video_source")
        first_frame = None
        frame = payload.get("first_frame")
        if frame is not None:
            if not isinstance(frame, dict) or not frame.get("url"):
                raise BadInput("first_frame.url: field required")
            first_frame = request.media(
                frame["url"], "first_frame.url", params, "first_frame_source"
            )
        return CreateInput(video, first_frame, model, echo(payload), params)

    def generation(self, request: ServiceRequest, job: Job, state: str) -> dict:
        """The Generation object of ``job`` in ``state``."""
        return {
            "id": job.id,
            "generation_type": "modify_video",
            "state": _STATES[state],
            "failure_reason": job.failure_reason if state in ("failed", "canceled") else None,
            "created_at": iso(job.created_wall),
            "assets": {"video": request.result_url(job)} if state == "completed" else None,
            "model": job.model,
            "request": job.echo,
        }

    def create(self, request: ServiceRequest, create: CreateInput, fault: Fault | None) -> Answer:
        """201 with the queued Generation."""
        job = request.start_job(create, fault)
        return Answer.json(201, self.generation(request, job, "queued"))

    def status(self, request: ServiceRequest, job: Job) -> Answer:
        """The Generation as it is now."""
        return Answer.json(200, self.generation(request, job, request.state(job)))

    def delete(self, request: ServiceRequest, job: Job) -> Answer:
        """Cancels and forgets the generation: 204."""
        request.cancel(job, forget=True, reason="deleted")
        return Answer(204, b"", "application/json")

    def list_generations(self, request: ServiceRequest) -> Answer:
        """``GET /generations?limit=&offset=``: the account's generations, newest first, each with its ``request``."""
        query = request.query
        limit = int(query.get("limit", ["10"])[0])
        offset = int(query.get("offset", ["0"])[0])
        jobs = sorted(request.jobs(), key=lambda job: job.created_wall, reverse=True)
        page = [self.generation(request, job, request.state(job)) for job in jobs[offset : offset + limit]]
        return Answer.json(200, {"generations": page, "has_more": offset + limit < len(jobs), "count": len(page),
                                 "limit": limit, "offset": offset})

    def credit_balance(self, request: ServiceRequest) -> Answer:
        """``{"credit_balance": cents}``."""
        return Answer.json(200, {"credit_balance": request.credits()})
