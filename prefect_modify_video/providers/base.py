"""The one small protocol every modify-video backend speaks: submit, poll, download.

Blocking services (Segmind v1, the embedded ``local`` backend) finish their work inside
``submit`` and hand back a job that is already ``COMPLETED`` with ``result_path`` set.
Queue services (Segmind v2, Luma, fal, Replicate) hand back a job id at once, so the caller
can save it before waiting on it and a resumed run can poll the same job instead of paying
for a new one.

Nothing here imports Prefect: the tasks in ``prefect_modify_video.tasks`` call these.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, Protocol, get_args

from prefect_modify_video import stopping
from prefect_modify_video.errors import (
    InvalidInputError,
    JobFailedError,
    JobTimedOutError,
    ProviderServerError,
    ProviderUnavailableError,
    RateLimitedError,
    RetryableProviderError,
)

logger = logging.getLogger(__name__)

_PASSING_POLL_ERRORS = (RateLimitedError, ProviderServerError, ProviderUnavailableError)
"""Errors of one poll after which the job itself may well be fine: it is polled again."""
from prefect_modify_video.media.extract import SourceSegment
from prefect_modify_video.media.plan import DEFAULT_OVERLAP_FRAMES

Mode = Literal[
    "adhere_1",
    "adhere_2",
    "adhere_3",
    "flex_1",
    "flex_2",
    "flex_3",
    "reimagine_1",
    "reimagine_2",
    "reimagine_3",
]
MODES: tuple[str, ...] = get_args(Mode)


class JobState(str, Enum):
    """Where a job is; each provider maps its own status words onto these."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        """Whether the job will not change state any more."""
        return self in (JobState.COMPLETED, JobState.FAILED)


@dataclass(frozen=True)
class ModifyRequest:
    """One paid call: a clip under the backend's caps and what to do with it."""

    clip: Path | None
    """The extracted segment: MP4, H.264, constant frame rate, video only (``None`` for a backend that
    reads the source: ``source``)."""
    prompt: str
    mode: Mode
    first_frame: Path | None = None
    """An image: a restyled version of the clip's first frame, if the user gave one."""
    style_image: Path | None = None
    """The run's style image (its restyled first frame of the video), for backends that take timed guide
    images (``guide_keyframes``): sent with every segment as a keyframe at ``style_frame``."""
    style_frame: int = 0
    """Where in the clip (frame index) the segment's own first frame is: after its overlap."""
    source: SourceSegment | None = None
    """For a backend that reads the source itself (``ModifyBackend.reads_source``), instead of ``clip``: the
    segment's sent frames in the source (the frames an extracted clip would hold)."""


@dataclass(frozen=True)
class ModifyJob:
    """What a backend knows about one submitted request."""

    provider: str
    state: JobState
    job_id: str | None = None
    """The service's id for a queued job; ``None`` for blocking services."""
    result_url: str | None = None
    """Where the finished clip can be downloaded (queue services)."""
    result_path: Path | None = None
    """Where the finished clip already is on disk (blocking services)."""
    failure_reason: str | None = None
    request_id: str | None = None
    cost_usd: float | None = None
    """What the service says this call cost, when it says so."""
    remaining_credits: float | None = None
    """What the service says is left on the account, when it says so."""
    extra: dict = field(default_factory=dict)
    """Provider-specific fields needed to poll or fetch (e.g. status and response URLs)."""

    def with_changes(self, **changes) -> "ModifyJob":
        """Returns a copy with the given fields replaced."""
        return replace(self, **changes)


class MediaUploader(Protocol):
    """Puts a local file where a service can read it, for services that take media by URL."""

    async def upload(self, path: Path) -> str:
        """Uploads ``path`` and returns a URL the service can GET."""
        ...



FIND_JOB_LOOKBACK_SECONDS = 600.0
"""How far before a lost create was sent ``find_job`` looks through the service's list of jobs (newest first)."""

class ModifyBackend(ABC):
    """A modify-video service behind submit, poll and download.

    Each subclass declares its service once, in class attributes taken from the service's
    documentation: its name, the account it bills and where that account's key comes from,
    its caps (``plan`` uses them), its capabilities (the flows read them instead of comparing
    names) and, in ``estimate_cost_usd``, its price.
    """

    name: ClassVar[str]
    """The backend's name in parameters, the CLI and the registry, e.g. ``"segmind-async"``."""
    service: ClassVar[str]
    """The account and API dialect it bills: ``"segmind"`` for both Segmind backends."""
    api_key_env: ClassVar[str | None] = None
    """The environment variable holding the service's key (``None``: no key needed)."""
    credentials_block: ClassVar[str | None] = None
    """The name of the credentials block class holding the key, e.g. ``"SegmindCredentials"``."""
    requires_uploader: ClassVar[bool] = False
    """Whether ``submit`` needs a ``MediaUploader`` (the service takes media only by URL)."""
    default_overlap_frames: ClassVar[int] = DEFAULT_OVERLAP_FRAMES
    """Frames shared by neighbouring segments, blended at the seams, unless the run says."""
    uses_reference_frame: ClassVar[bool] = False
    """Whether the backend takes ``reference_frame`` (an image of the source's first frame) and
    ``styled_first_frame`` to fit its own colour transfer, so no colour anchoring is needed."""
    answers_drift: ClassVar[bool] = True
    """Whether the colours of its answers drift from segment to segment (each restyled on its own), so
    seams inside a shot are anchored by default."""
    is_free: ClassVar[bool] = False
    """Whether calls cost nothing: no account, no key, no credentials block."""
    account_concurrency: ClassVar[int | None] = None
    """Generations the service runs at once for one account, as documented (``None``: not documented)."""
    account_creates_per_minute: ClassVar[int | None] = None
    """Creates the service accepts a minute from one account, as documented (``None``: not documented)."""
    reads_source: ClassVar[bool] = False
    """Whether it runs on this machine and reads each segment's sent frames from the source itself
    (``ModifyRequest.source``): no upload clip is encoded for it."""
    can_find_jobs: ClassVar[bool] = False
    """Whether ``find_job`` can look a request up in the service's list of jobs (a create whose answer
    was lost can then be found instead of being paid again)."""

    takes_modes: ClassVar[bool] = True
    """Whether the service has a strength knob for the nine modes; without one the mode is ignored (logged)."""
    takes_first_frame: ClassVar[bool] = True
    """Whether the service takes a first-frame image; a run's ``first_frame`` is refused before any work if not."""
    guide_keyframes: ClassVar[int] = 0
    """How many timed guide images one call takes (0: none); the run's style image goes to every segment."""
    bills_moderated_jobs: ClassVar[bool] = False
    """Whether a job refused by moderation is billed as a finished one (booked in the run's ledger)."""
    answer_audio: ClassVar[str] = "none"
    """What the service's answer carries as audio (the source's audio is put back in any case)."""
    media_note: ClassVar[str | None] = None
    """How the service takes media, for the README's table, where it is not simply in the request or by URL."""
    billing_block_seconds: ClassVar[float | None] = None
    """The length of the blocks the service bills in (``None``: by the second); the plan sizes segments to
    fit them when that is cheaper."""

    before_create: Callable[[dict], None] | None = None
    """Called just before a create request leaves, with ``create_marker`` of its body: the caller's
    fencing point (it records that a create is in flight; raising stops the request)."""
    model: str = ""
    max_segment_seconds: float = 30.0
    """Longest clip the service takes; segments are planned strictly under it."""
    max_upload_bytes: int = 100_000_000
    max_dimension: int | None = None
    """Longest side of what we send; larger sources are scaled down on extract."""
    min_clip_seconds: float | None = None
    """Shortest clip the service takes (``None``: any); a shorter segment is sent padded with its last frame up to
    it (``Segment.pad_frames``) and the answer's padding dropped."""
    max_fps: float | None = None
    """Highest frame rate the service takes (``None``: any). A faster source is sent at its rate divided by the
    smallest whole number that brings it under (``media.plan.sent_frame_step``) and the answer conformed back."""
    max_concurrency: int = 4
    poll_interval_seconds: float = 10.0
    max_wait_seconds: float = 900.0

    @classmethod
    def credentials_hint(cls) -> str:
        """Where the service's key comes from, for messages that ask to fix it."""
        return (
            f"the `api_key` of your {cls.credentials_block} block or the {cls.api_key_env} "
            "environment variable"
        )

    @classmethod
    def missing_key_message(cls) -> str:
        """The message for a paid backend asked for without an API key."""
        return (
            f"{cls.name}: no API key given. Set {cls.api_key_env} or save a "
            f"{cls.credentials_block} block and name it in the backend's credentials_block "
            "(or pass its `get_client()` to the flow)."
        )

    @abstractmethod
    def estimate_cost_usd(self, seconds: float, width: int, height: int) -> float:
        """Estimated list price of modifying ``seconds`` of video at ``width``×``height``."""

    def billed_seconds(self, seconds: float) -> float:
        """The seconds the service bills for a clip of ``seconds`` (its minimum, its blocks): as sent by default."""
        return max(seconds, 0.0)

    @abstractmethod
    async def submit(self, request: ModifyRequest, workdir: Path) -> ModifyJob:
        """Starts one paid call; ``workdir`` is a folder the backend may write into.

        Raises:
            ProviderError: a subclass saying whether trying again can help.
        """

    def prompt_warnings(self, prompt: str) -> list[str]:
        """Warnings about the prompt worth showing the user before paying (none by default)."""
        return []

    async def poll(self, job: ModifyJob) -> ModifyJob:
        """Checks a submitted job once and returns it with its new state."""
        return job

    def create_marker(self, body: Any) -> dict:
        """What identifies a create request's body in the service's list of jobs (``{}``: nothing)."""
        return {}

    async def find_job(self, marker: dict, sent_at: float) -> ModifyJob | None:
        """The job a create request with ``marker``, sent at ``sent_at`` (epoch seconds), started, if any.

        Raises:
            NotImplementedError: the service has no list of jobs to look in (``can_find_jobs``).
        """
        raise NotImplementedError(f"{self.name}: the service has no list of jobs to find a request in")

    @abstractmethod
    async def download(self, job: ModifyJob, destination: Path) -> Path:
        """Writes the finished clip of a ``COMPLETED`` job to ``destination``."""

    async def aclose(self) -> None:
        """Releases connections; the backend is not used afterwards."""

    async def __aenter__(self) -> "ModifyBackend":
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.aclose()


def timed_guides(request: ModifyRequest, frames: int) -> list[tuple[Path, int]]:
    """The timed guide images of one call, as ``(image, clip frame index)``, at most one per frame.

    The seam frame of the sequential mode (``first_frame`` on a segment after the first) goes at frame 0; the
    run's style image at ``style_frame``, the segment's own first frame. Where both fall on frame 0 (no
    overlap) the seam frame keeps it: continuity inside a shot matters more there, and the style image has
    already shaped the previous answer.
    """
    guides: list[tuple[Path, int]] = []
    style = Path(request.style_image) if request.style_image else None
    seam = Path(request.first_frame) if request.first_frame else None
    if seam is not None and style is not None and seam.resolve() == style.resolve():
        seam = None
    if seam is not None:
        guides.append((seam, 0))
    if style is not None:
        at = min(max(request.style_frame, 0), max(frames - 1, 0))
        if not any(index == at for _, index in guides):
            guides.append((style, at))
        else:
            logger.info("the style image and the seam frame fall on the same frame; the seam frame is sent")
    return sorted(guides, key=lambda guide: guide[1])


async def wait_for_job(
    backend: ModifyBackend,
    job: ModifyJob,
    *,
    poll_first: bool = False,
    poll_interval_seconds: float | None = None,
    max_wait_seconds: float | None = None,
) -> ModifyJob:
    """Polls ``job`` until it is terminal, sleeping without holding a thread.

    This loop owns the waiting on one job: a poll that fails for a passing reason (a 429, a 5xx,
    a timeout or a dropped connection, once the HTTP client's own retries are spent) leaves the
    job as it was, and it is polled again after the interval (or when the rate limit resets),
    until the deadline. It never submits anything.

    Args:
        backend: The service.
        job: A submitted job.
        poll_first: Poll at once instead of after one interval (a job saved by an earlier try).
        poll_interval_seconds: Seconds between polls; the backend's when ``None``.
        max_wait_seconds: The deadline, from now; the backend's when ``None``.

    Returns:
        The job in state ``COMPLETED``.

    Raises:
        JobFailedError: the service says the job failed.
        JobTimedOutError: the job is not terminal after ``max_wait_seconds`` (its id is kept:
            polling it later may still find it done).
        StopRequested: a stop was requested (the first SIGINT or SIGTERM of a CLI run); checked
            between polls, at least every ``stopping.SLICE_SECONDS``. The job is kept.
        InvalidInputError: the job must be waited on and the interval or the deadline is not
            more than 0.
    """
    interval = backend.poll_interval_seconds if poll_interval_seconds is None else poll_interval_seconds
    limit = backend.max_wait_seconds if max_wait_seconds is None else max_wait_seconds
    # Only a job that must be waited on needs an interval and a deadline (the local backend has neither).
    if not job.state.is_terminal and (not interval > 0 or not limit > 0):
        raise InvalidInputError(
            f"{backend.name}: poll_interval_seconds ({interval}) and max_wait_seconds ({limit}) must be more than 0"
        )
    deadline = time.monotonic() + limit
    last_error: RetryableProviderError | None = None
    wait = 0.0 if poll_first else interval
    polled = not poll_first
    kept = f"job {job.job_id} stays saved and a re-run follows it without paying again"
    while not (polled and job.state.is_terminal):
        if time.monotonic() >= deadline:
            cause = f"; the last poll failed: {last_error}" if last_error else ""
            raise JobTimedOutError(
                f"job still {job.state.value} after {limit:g} s (max_wait_seconds){cause}; a re-run polls it "
                "again (raise --max-wait-seconds for a slow service)",
                provider=backend.name,
                job_id=job.job_id,
            )
        await stopping.sleep(min(wait, max(deadline - time.monotonic(), 0.0)), f"{backend.name}: {kept}")
        try:
            job = await backend.poll(job)
            last_error, wait = None, interval
        except _PASSING_POLL_ERRORS as error:
            last_error = error
            wait = max(interval, seconds_until(getattr(error, "retry_at", None)), 1.0)
            logger.warning(
                "%s: polling job %s failed (%s); polling again in %.1f s", backend.name, job.job_id, error, wait
            )
            if job.state is not JobState.COMPLETED or job.result_url is None:
                continue
            # A saved job already known to be done: its saved result address is tried as it is.
        polled = True
    if job.state is JobState.FAILED:
        raise JobFailedError(
            f"job failed: {job.failure_reason or 'no reason given'}",
            provider=backend.name,
            job_id=job.job_id,
        )
    return job


def seconds_until(moment: datetime | None) -> float:
    """Seconds from now until ``moment`` (0 when it is ``None`` or past)."""
    return max((moment - datetime.now(timezone.utc)).total_seconds(), 0.0) if moment else 0.0
