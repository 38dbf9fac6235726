"""Errors raised by prefect-modify-video.

The tree, so that a reader can see what an ``except`` clause catches::

    ModifyVideoError
    ├── InvalidInputError            bad source, first frame, parameter or output path
    ├── FfmpegError                  ffmpeg or ffprobe failed on a file we made
    ├── BudgetExceededError          a paid call would take the run past max_cost_usd
    ├── DamagedStoreError            a saved job record in the result store cannot be read
    ├── ClaimLostError               another run took over this run's claim on a segment
    └── ProviderError                anything a modify-video service did
        ├── RetryableProviderError   worth another try of the same segment
        │   ├── RateLimitedError         429; carries ``retry_at``
        │   ├── ProviderServerError      5xx
        │   ├── ProviderUnavailableError timeout, refused or dropped connection
        │   ├── ClipValidationError      the answer was not the video we asked for
        │   ├── JobFailedError           the job ran and failed (not billed; try again)
        │   └── JobTimedOutError         the job did not finish in time (poll it again)
        └── FatalProviderError       another try would fail the same way
            ├── AuthenticationError      401/403: the key is wrong
            ├── InvalidRequestError      400/404/405/422: the request is wrong
            ├── InsufficientCreditsError the account has no credits left
            ├── ContentModerationError   the service refused the content
            ├── SubmitOutcomeUnknownError a create got no answer: it may have been billed
            └── ForeignOriginError       an address (e.g. a saved job's) is not the service's own
"""

from __future__ import annotations

from datetime import datetime


class ModifyVideoError(Exception):
    """Base of every error this package raises on purpose."""


class InvalidInputError(ModifyVideoError, ValueError):
    """Raised when a source, first frame, parameter or output path cannot be used."""


class FfmpegError(ModifyVideoError):
    """Raised when an ffmpeg or ffprobe command exits with an error."""

    def __init__(self, command: list[str], returncode: int, stderr: str):
        self.command = command
        self.returncode = returncode
        self.stderr = stderr
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        super().__init__(f"{command[0]} exited with status {returncode}:\n{tail}")


class BudgetExceededError(ModifyVideoError):
    """Raised when a run's estimate, or its next paid call, would pass ``max_cost_usd``."""


class ClaimLostError(ModifyVideoError):
    """Raised when another run took over this run's claim on a segment (this one stalled past its
    lease): nothing more is sent for it here; the other run pays for it or follows its job."""


class DamagedStoreError(ModifyVideoError):
    """Raised when a saved job record in the result store cannot be read (it is set aside, not trusted)."""


class ProviderError(ModifyVideoError):
    """Raised when a modify-video service call does not give a usable clip."""

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status_code: int | None = None,
        request_id: str | None = None,
        job_id: str | None = None,
    ):
        self.provider = provider
        self.status_code = status_code
        self.request_id = request_id
        self.job_id = job_id
        details = [
            f"{name}={value}"
            for name, value in (
                ("status", status_code),
                ("request_id", request_id),
                ("job_id", job_id),
            )
            if value is not None
        ]
        prefix = f"{provider}: " if provider else ""
        suffix = f" ({', '.join(details)})" if details else ""
        super().__init__(f"{prefix}{message}{suffix}")


class RetryableProviderError(ProviderError):
    """Raised when the same request may succeed if tried again."""


class RateLimitedError(RetryableProviderError):
    """Raised on a 429; ``retry_at`` is when the service says the limit resets."""

    def __init__(self, message: str, *, retry_at: datetime | None = None, **kwargs):
        self.retry_at = retry_at
        super().__init__(message, **kwargs)


class ProviderServerError(RetryableProviderError):
    """Raised on a 5xx answer."""


class ProviderUnavailableError(RetryableProviderError):
    """Raised when the service cannot be reached, times out or drops the connection."""


class ClipValidationError(RetryableProviderError):
    """Raised when an answer is not a video, has no frames, or has the wrong length."""


class FatalProviderError(ProviderError):
    """Raised when trying the same request again would fail the same way."""


class AuthenticationError(FatalProviderError):
    """Raised on 401/403: the API key is missing or wrong."""


class InvalidRequestError(FatalProviderError):
    """Raised on 400/404/405/422: the service rejects the request itself."""


class InsufficientCreditsError(FatalProviderError):
    """Raised when the account has no credits left (Segmind's 406, Luma's and others' messages)."""


class ContentModerationError(FatalProviderError):
    """Raised when the service refuses the content; the message carries its reason."""


class JobFailedError(RetryableProviderError):
    """Raised when an accepted job ends in a failed or cancelled state."""


class JobTimedOutError(RetryableProviderError):
    """Raised when an accepted job does not finish within ``max_wait_seconds``."""


class SubmitOutcomeUnknownError(FatalProviderError):
    """Raised when a create request was sent but its answer was lost (read timeout, dropped connection).

    The service may have accepted and billed it, so it is not sent again blindly: its claim is kept
    as ``unknown`` in the store; a re-run looks for the job in the service's list where there is one,
    and sends the segment again only with ``resend_unknown``.
    """


class ForeignOriginError(FatalProviderError):
    """Raised when a request carrying the API key would go to another host than the service's.

    Poll and result addresses saved in a shared store could name any host; the key is sent
    only to the service's own origin.
    """
