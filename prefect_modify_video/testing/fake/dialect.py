"""What a fake service is: the base class of the four dialects and the values they share.

A dialect declares everything that differs between services: its name, auth header and
scheme, routes, how it parses a create, its job/status JSON, its error body shape, its 429
and no-credits answers. The server (``server.py``) does the rest the same way for all of them:
counting, auth checking, faults, credits, jobs, billing.
"""

from __future__ import annotations

import enum
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

if TYPE_CHECKING:
    from prefect_modify_video.testing.fake.jobs import CreateInput
    from prefect_modify_video.testing.fake.server import ServiceRequest

MODES: tuple[str, ...] = (
    "adhere_1",
    "adhere_2",
    "adhere_3",
    "flex_1",
    "flex_2",
    "flex_3",
    "reimagine_1",
    "reimagine_2",
    "reimagine_3",
)
MAX_MEDIA_BYTES = 100_000_000

GATEWAY_HTML = (
    "<html>\r\n<head><title>{code} {phrase}</title></head>\r\n<body>\r\n"
    "<center><h1>{code} {phrase}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
MAINTENANCE_HTML = (
    "<!DOCTYPE html><html><head><title>Maintenance</title></head>"
    "<body><h1>We'll be right back</h1><p>The service is under maintenance.</p></body></html>"
)


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: status, body, content type and extra headers."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Answer:
        """A JSON answer."""
        return cls(status, json.dumps(payload).encode(), "application/json", headers or {})

    @classmethod
    def html(cls, status: int, text: str) -> Answer:
        """An HTML page."""
        return cls(status, text.encode(), "text/html; charset=utf-8")

    @classmethod
    def gateway(cls, status: int, phrase: str) -> Answer:
        """A gateway's (nginx) HTML error page."""
        return cls.html(status, GATEWAY_HTML.format(code=status, phrase=phrase))


class RouteKind(enum.Enum):
    """What a route does, which decides what the server checks and counts before it."""

    CREATE = "create"
    """Counted in ``calls``; auth, create faults and credits checked; body parsed."""
    STATUS = "status"
    """A status poll: auth, poll faults; counted in ``polls`` and moves the job along."""
    RESULT = "result"
    """A result request: auth and poll faults, not counted."""
    CANCEL = "cancel"
    """A cancel or delete: auth only."""
    ACCOUNT = "account"
    """An account request (credits): auth only."""


@dataclass(frozen=True)
class Route:
    """One route of a service.

    Attributes:
        method: HTTP method.
        path: Regular expression the whole path must match; ``job_id`` names the job,
            other groups go to ``Dialect.parse_create``.
        kind: What the server does before calling the dialect.
        answer: Name of the dialect method that answers: ``(request, create, fault)`` for
            a create, ``(request, job)`` for status/result/cancel, ``(request)`` for account.
        label: ``ReceivedCall.route`` of a create (default: the service name).
    """

    method: str
    path: str
    kind: RouteKind
    answer: str
    label: str | None = None

    @property
    def pattern(self) -> re.Pattern:
        """The compiled ``path``."""
        return _compiled(self.path)


_PATTERNS: dict[str, re.Pattern] = {}


def _compiled(path: str) -> re.Pattern:
    if path not in _PATTERNS:
        _PATTERNS[path] = re.compile(path)
    return _PATTERNS[path]


class BadInput(Exception):
    """A create request the service refuses with its validation error.

    Attributes:
        field: The request field at fault, when known.
    """

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class Refused(Exception):
    """Raised by a dialect to answer ``answer`` at once (a service-specific refusal)."""

    def __init__(self, answer: Answer):
        super().__init__(answer.status)
        self.answer = answer


class Dialect:
    """One service's HTTP contract, as the fake speaks it.

    Subclasses set the class attributes and implement ``parse_create``, the methods their
    routes name, and override the answers whose shape differs from the default.

    Attributes:
        service: The service's name (``segmind``, ``luma``, ``fal``, ``replicate``).
        auth_header: Header that carries the key.
        auth_schemes: Accepted schemes before the key (lower case, e.g. ``("bearer",)``);
            empty when the header's value is the key itself.
        routes: The service's routes.
        default_cost: Cost of one billed call in the service's credit unit.
        default_credits: Starting balance in the same unit.
        unauthorised_message: Text of the 401 answer.
        moderation_reason: Failure reason of a job refused by moderation.
        failure_reason: Failure reason of a job that failed.
        bills_moderation: Whether a moderated job is billed.
    """

    service: ClassVar[str]
    auth_header: ClassVar[str] = "Authorization"
    auth_schemes: ClassVar[tuple[str, ...]] = ("bearer",)
    routes: ClassVar[tuple[Route, ...]] = ()
    default_cost: ClassVar[float]
    default_credits: ClassVar[float]
    unauthorised_message: ClassVar[str] = "Unauthorized"
    moderation_reason: ClassVar[str] = "Content moderation failed"
    failure_reason: ClassVar[str] = "Generation failed"
    bills_moderation: ClassVar[bool] = False
    """Whether a job refused by moderation is billed like a finished one (Runway)."""

    # ----------------------------------------------------------------- auth

    def key_from(self, headers: Mapping[str, str]) -> str | None:
        """The key the request carries in this service's header and scheme, if any."""
        value = (headers.get(self.auth_header) or "").strip()
        if self.auth_schemes:
            scheme, _, value = value.partition(" ")
            if scheme.lower() not in self.auth_schemes:
                return None
        return value.strip() or None

    # ----------------------------------------------------------------- answers

    def error(self, status: int, message: Any) -> Answer:
        """An error in this service's body shape (default ``{"detail": message}``)."""
        return Answer.json(status, {"detail": message})

    def unauthorised(self) -> Answer:
        """The 401 answer to a missing or wrong key."""
        return self.error(401, self.unauthorised_message)

    def not_found(self, job_id: str) -> Answer:
        """The answer about a job the service does not know."""
        return self.error(404, f"Request {job_id} not found")

    def server_error(self) -> Answer:
        """A 500 from the service itself."""
        return self.error(500, "Internal server error")

    def rate_limited(self, reset_after: float) -> Answer:
        """The 429 answer, with whatever reset hint the service documents."""
        return self.error(429, "Too many requests: rate limit exceeded")

    def no_credits(self) -> Answer:
        """The answer to a create when the account cannot pay."""
        raise NotImplementedError

    def invalid_request(self, problem: BadInput) -> Answer:
        """The answer to a create whose body the service refuses."""
        return self.error(400, str(problem))

    # ----------------------------------------------------------------- creates and jobs

    def new_job_id(self) -> str:
        """A fresh job id in this service's format."""
        return str(uuid.uuid4())

    def parse_create(self, request: ServiceRequest, **groups: str) -> CreateInput:
        """Reads a create call's body.

        Raises:
            BadInput: The body is invalid (answered with ``invalid_request``).
            Refused: The service refuses it with its own answer.
        """
        raise NotImplementedError


def echo(value: Any) -> Any:
    """A copy of a request body for echoing back, with data URIs shortened."""
    if isinstance(value, dict):
        return {key: echo(item) for key, item in value.items()}
    if isinstance(value, list):
        return [echo(item) for item in value]
    if isinstance(value, str) and value.startswith("data:"):
        return value.partition(",")[0] + ",..."
    return value


def iso(moment: datetime | None) -> str | None:
    """``moment`` as ISO 8601 with a ``Z``, or ``None``."""
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def json_object(body: bytes) -> dict:
    """The request body as a JSON object.

    Raises:
        BadInput: It is not JSON or not an object.
    """
    try:
        payload = json.loads(body or b"null")
    except ValueError as exc:
        raise BadInput("the body is not valid JSON") from exc
    if not isinstance(payload, dict):
        raise BadInput("the body must be a JSON object")
    return payload
