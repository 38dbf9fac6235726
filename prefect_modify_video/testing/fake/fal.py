"""fal's queue API for Luma's modify model (ray-2 and ray-2-flash)."""

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
    json_object,
)
from prefect_modify_video.testing.fake.faults import Fault
from prefect_modify_video.testing.fake.jobs import CreateInput, Job

if TYPE_CHECKING:
    from prefect_modify_video.testing.fake.server import ServiceRequest

_REQUEST = r"/fal-ai/luma-dream-machine(?:/[^/]+)*?/requests/(?P<job_id>[^/]+)"


class FalDialect(Dialect):
    """fal: ``Authorization: Key``; errors ``{"detail": ...}``; validation errors 422 lists.

    No rate-limit hint is documented: its 429 is a plain ``{"detail": ...}``. Out of credits the
    account is "locked": 403.
    """

    service = "fal"
    auth_schemes = ("key",)
    default_cost = 1.75
    default_credits = 100.0
    unauthorised_message = "Authentication is required to access this application."
    moderation_reason = (
        "The content could not be processed because it was flagged by a content checker."
    )
    failure_reason = "Internal error while processing the request"
    routes = (
        Route(
            "POST",
            r"/fal-ai/luma-dream-machine/(?P<variant>ray-2|ray-2-flash)/modify",
            RouteKind.CREATE,
            "create",
        ),
        Route("GET", _REQUEST + "/status", RouteKind.STATUS, "status"),
        Route("PUT", _REQUEST + "/cancel", RouteKind.CANCEL, "cancel"),
        Route("GET", _REQUEST, RouteKind.RESULT, "result"),
    )

    def no_credits(self) -> Answer:
        return Answer.json(
            403,
            {"detail": "User is locked. Reason: Exhausted balance. "
             "Top up your balance at fal.ai/dashboard/billing."},
        )

    def invalid_request(self, problem: BadInput) -> Answer:
        loc = problem.field or "video_url"
        return Answer.json(
            422, {"detail": [{"loc": ["body", loc], "msg": str(problem), "type": "value_error"}]}
        )

    def parse_create(
        self, request: ServiceRequest, variant: str = "ray-2", **groups: str
    ) -> CreateInput:
        payload = json_object(request.body)
        mode = payload.get("mode") or "flex_1"
        if mode not in MODES:
            raise BadInput(f"not a valid mode; permitted: {', '.join(MODES)}", field="mode")
        if not payload.get("video_url"):
            raise BadInput("field required", field="video_url")
        params: dict = {"prompt": payload.get("prompt") or "", "mode": mode, "model": variant}
        try:
            video = request.media(payload["video_url"], "video_url", params, "video_source")
            first_frame = None
            if payload.get("image_url"):
                first_frame = request.media(
                    payload["image_url"], "image_url", params, "first_frame_source"
                )
        except BadInput as exc:
            raise BadInput(str(exc), field="video_url") from exc
        return CreateInput(video, first_frame, variant, echo(payload), params)

    @staticmethod
    def urls(request: ServiceRequest, job: Job) -> dict:
        """The request id and its status, response and cancel URLs."""
        root = f"{request.base_url}/fal-ai/luma-dream-machine/requests/{job.id}"
        return {
            "request_id": job.id,
            "status_url": f"{root}/status",
            "response_url": root,
            "cancel_url": f"{root}/cancel",
        }

    def create(self, request: ServiceRequest, create: CreateInput, fault: Fault | None) -> Answer:
        """200 with the queued request's URLs."""
        job = request.start_job(create, fault)
        return Answer.json(200, {**self.urls(request, job), "queue_position": 0})

    def status(self, request: ServiceRequest, job: Job) -> Answer:
        """``IN_QUEUE``, ``IN_PROGRESS`` or ``COMPLETED`` (with ``error`` if it failed)."""
        state = request.state(job)
        status = {"queued": "IN_QUEUE", "running": "IN_PROGRESS"}.get(state, "COMPLETED")
        payload: dict = {"status": status, **self.urls(request, job), "logs": None, "metrics": {}}
        if status == "IN_QUEUE":
            payload["queue_position"] = 0
        if state in ("failed", "canceled"):
            payload["error"] = job.failure_reason or "canceled"
            payload["error_type"] = (
                "content_policy_violation" if job.failure_kind == "moderation" else "internal_error"
            )
        return Answer.json(200, payload)

    def result(self, request: ServiceRequest, job: Job) -> Answer:
        """``{"video": {"url", ...}}`` when completed; 422 moderation, 500 failed, 400 else."""
        state = request.state(job)
        if state == "completed":
            return Answer.json(
                200,
                {
                    "video": {
                        "url": request.result_url(job),
                        "content_type": "video/mp4",
                        "file_name": job.result_name,
                        "file_size": request.result_size(job),
                    }
                },
            )
        if state == "canceled":
            return Answer.json(400, {"detail": "Request was cancelled"})
        if state == "failed" and job.failure_kind == "moderation":
            return Answer.json(
                422,
                {"detail": [{"loc": ["body", "video_url"], "msg": job.failure_reason,
                             "type": "content_policy_violation"}]},
            )
        if state == "failed":
            return Answer.json(500, {"detail": job.failure_reason})
        return Answer.json(400, {"detail": "Request is still in progress"})

    def cancel(self, request: ServiceRequest, job: Job) -> Answer:
        """202 ``CANCELLATION_REQUESTED``, or 400 ``ALREADY_COMPLETED``."""
        if request.cancel(job):
            return Answer.json(202, {"status": "CANCELLATION_REQUESTED"})
        return Answer.json(400, {"status": "ALREADY_COMPLETED"})
