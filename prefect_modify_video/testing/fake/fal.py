"""fal's queue API for Luma's modify model (ray-2 and ray-2-flash) and Decart's Lucy Restyle (one fal account)."""

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

_REQUEST = r"(?:/fal-ai/luma-dream-machine|/decart/lucy-restyle)(?:/[^/]+)*?/requests/(?P<job_id>[^/]+)"
LUCY_FPS = 22.0
"""Decart lists ``lucy-restyle-v2v`` at 22 fps: Lucy's answers come at that rate."""
_APPS = {"lucy-restyle": "/decart/lucy-restyle"}


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
        Route("POST", r"/decart/lucy-restyle", RouteKind.CREATE, "create", label="fal.lucy"),
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
        self, request: ServiceRequest, variant: str | None = None, **groups: str
    ) -> CreateInput:
        payload = json_object(request.body)
        if variant is None:
            return self.parse_lucy(request, payload)
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

    def parse_lucy(self, request: ServiceRequest, payload: dict) -> CreateInput:
        """Lucy Restyle's body: ``prompt`` and ``video_url`` required, ``resolution`` only 720p; no image."""
        if not payload.get("prompt"):
            raise BadInput("field required", field="prompt")
        if not payload.get("video_url"):
            raise BadInput("field required", field="video_url")
        if payload.get("resolution", "720p") != "720p":
            raise BadInput("unexpected value; permitted: '720p'", field="resolution")
        params: dict = {"prompt": payload["prompt"], "model": "lucy-restyle",
                        "enhance_prompt": payload.get("enhance_prompt", True)}
        try:
            video = request.media(payload["video_url"], "video_url", params, "video_source")
        except BadInput as exc:
            raise BadInput(str(exc), field="video_url") from exc
        return CreateInput(video, None, "lucy-restyle", echo(payload), params, output_fps=LUCY_FPS)

    @staticmethod
    def urls(request: ServiceRequest, job: Job) -> dict:
        """The request id and its status, response and cancel URLs."""
        app = _APPS.get(job.model, "/fal-ai/luma-dream-machine")
        root = f"{request.base_url}{app}/requests/{job.id}"
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
        if state == "completed" and job.model == "lucy-restyle":
            # Lucy's llms.txt example answers the video as a bare URL string.
            return Answer.json(200, {"video": request.result_url(job)})
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
