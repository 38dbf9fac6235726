"""Scripted misbehaviours of the fake services: what a test can make one request do."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar


class FaultKind(str, enum.Enum):
    """What a scripted fault does."""

    SERVER_500 = "server_500"
    """500 with the service's JSON error body."""
    SERVER_502 = "server_502"
    """502 with a gateway's HTML page."""
    SERVER_504 = "server_504"
    """504 with a gateway's HTML page."""
    RATE_LIMITED = "rate_limited"
    """429 with the service's documented reset hint (header or body)."""
    NO_CREDITS = "no_credits"
    """The service's no-credits answer (Segmind 406, Luma 400, fal 403, Replicate 402)."""
    NOT_FOUND = "not_found"
    """404: the job (on a poll) or the result file (on a download) is gone."""
    TIMEOUT = "timeout"
    """Sleeps (longer than a client's timeout), then handles the request normally."""
    LATENCY = "latency"
    """Sleeps, then handles the request normally."""
    DROPPED_CONNECTION = "dropped_connection"
    """Closes the socket without answering."""
    HTML_200 = "html_200"
    """200 with an HTML page instead of the expected body."""
    WRONG_LENGTH = "wrong_length"
    """The returned clip is the first ``factor`` of the input's length, restyled (billed)."""
    MODERATION = "moderation"
    """The content is refused (Segmind v1 400; queued jobs fail with a moderation reason)."""
    JOB_FAILED = "job_failed"
    """The job ends failed (Segmind v1: 500); not billed."""
    STUCK = "stuck"
    """The job never finishes (Segmind v1: hangs ``timeout_seconds``, then 504)."""


JOB_KINDS = frozenset(
    {FaultKind.WRONG_LENGTH, FaultKind.MODERATION, FaultKind.JOB_FAILED, FaultKind.STUCK}
)
"""Faults that decide how a job ends: they can only be scripted on create calls."""

CREATE_ONLY_KINDS = JOB_KINDS | {FaultKind.NO_CREDITS}
"""Every fault kind that only a create call can carry."""


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour; use the constants or the constructors.

    Attributes:
        kind: What happens.
        seconds: Sleep of ``LATENCY``/``TIMEOUT`` or reset delay of ``RATE_LIMITED``;
            ``None`` takes the server's default.
        factor: Length of a ``WRONG_LENGTH`` clip relative to the input.
        after_accept: For ``DROPPED_CONNECTION``: on a create, do the work (and bill it)
            before dropping, the ambiguous case where a retry would pay twice; on a
            download, send the headers and half the file, then drop (a truncated file).
        retry_after: For ``RATE_LIMITED``: also send a standard ``Retry-After`` header (the
            reset in whole seconds, rounded up), whatever the service documents.
    """

    kind: FaultKind
    seconds: float | None = None
    factor: float = 0.5
    after_accept: bool = False
    retry_after: bool = False

    SERVER_500: ClassVar[Fault]
    SERVER_502: ClassVar[Fault]
    SERVER_504: ClassVar[Fault]
    RATE_LIMITED: ClassVar[Fault]
    NO_CREDITS: ClassVar[Fault]
    NOT_FOUND: ClassVar[Fault]
    TIMEOUT: ClassVar[Fault]
    LATENCY: ClassVar[Fault]
    DROPPED_CONNECTION: ClassVar[Fault]
    HTML_200: ClassVar[Fault]
    WRONG_LENGTH: ClassVar[Fault]
    MODERATION: ClassVar[Fault]
    JOB_FAILED: ClassVar[Fault]
    STUCK: ClassVar[Fault]

    @classmethod
    def rate_limited(cls, reset_after: float | None = None, *, retry_after: bool = False) -> Fault:
        """A 429 whose reset time is ``reset_after`` seconds ahead.

        Args:
            reset_after: Seconds until the limit resets; ``None`` takes the server's
                ``rate_limit_reset_seconds``.
            retry_after: Add a ``Retry-After`` header even where the service documents
                another hint (Segmind) or none (Luma, fal).
        """
        return cls(FaultKind.RATE_LIMITED, seconds=reset_after, retry_after=retry_after)

    @classmethod
    def timeout(cls, seconds: float | None = None) -> Fault:
        """Sleeps ``seconds`` (default: the server's ``timeout_seconds``), then answers."""
        return cls(FaultKind.TIMEOUT, seconds=seconds)

    @classmethod
    def latency(cls, seconds: float) -> Fault:
        """Sleeps ``seconds``, then answers normally."""
        return cls(FaultKind.LATENCY, seconds=seconds)

    @classmethod
    def wrong_length(cls, factor: float = 0.5) -> Fault:
        """Returns a clip that covers only the first ``factor`` of the input (billed).

        The answer is the start of the sent clip, restyled: its frame ``i`` shows the same
        moment as frame ``i`` of a full-length answer, so it lines up with the start of
        what was sent and only the end is missing.
        """
        return cls(FaultKind.WRONG_LENGTH, factor=factor)

    @classmethod
    def dropped_connection(cls, after_accept: bool = False) -> Fault:
        """Closes the socket unanswered; with ``after_accept`` the call is still billed.

        On a download, ``after_accept`` sends the headers and half the file first.
        """
        return cls(FaultKind.DROPPED_CONNECTION, after_accept=after_accept)


for _kind in FaultKind:
    setattr(Fault, _kind.name, Fault(_kind, seconds=1.0 if _kind is FaultKind.LATENCY else None))
del _kind
