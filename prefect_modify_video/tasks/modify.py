"""The paid step: one segment through the modify-video service, found in the store when already paid for."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from pydantic import BaseModel, Field

from prefect_modify_video.errors import (
    BudgetExceededError,
    ContentModerationError,
    InsufficientCreditsError,
    JobTimedOutError,
    ProviderError,
    ProviderServerError,
    ProviderUnavailableError,
    RateLimitedError,
    RetryableProviderError,
    SubmitOutcomeUnknownError,
)
from prefect_modify_video.parameters import BackendSpec
from prefect_modify_video.media.edit import CONFORM_VERSION, check_returned_clip
from prefect_modify_video.media.ffmpeg import sha256_of_file
from prefect_modify_video.media.plan import Segment
from prefect_modify_video.providers.base import JobState, Mode, ModifyJob, ModifyRequest, run_modify
from prefect_modify_video.store import ResultStore, cache_key

# Waiting on a 429 stays inside the task: the request was refused, so sending it again is safe.
MAX_RATE_LIMIT_WAITS = 5
MAX_RATE_LIMIT_WAIT_SECONDS = 120.0



class RunLedger:
    """What the runs of this process have spent, and which must send nothing more.

    Segment tasks of one run share it (they run in the flow's worker threads): a run whose
    account ran out of credits sends no new segment, and no paid call may take a run past
    its ``max_cost_usd``.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._stopped: dict[str, str] = {}
        self._committed: dict[str, float] = {}
        self._slots: dict[str, threading.BoundedSemaphore] = {}

    def call_slots(self, run_key: str, concurrency: int) -> threading.BoundedSemaphore:
        """The run's semaphore bounding its paid calls in flight to ``concurrency``."""
        with self._lock:
            return self._slots.setdefault(run_key, threading.BoundedSemaphore(concurrency))

    def stop(self, run_key: str, reason: str) -> None:
        """Marks the run so that none of its segments is sent any more."""
        with self._lock:
            self._stopped.setdefault(run_key, reason)

    def reserve(self, run_key: str, amount: float, max_cost_usd: float | None) -> None:
        """Books ``amount`` for a call about to be sent.

        Raises:
            InsufficientCreditsError: the run was stopped for lack of credits.
            BudgetExceededError: the call would take the run past ``max_cost_usd``.
        """
        with self._lock:
            if run_key in self._stopped:
                raise InsufficientCreditsError(f"not sent: {self._stopped[run_key]}")
            committed = self._committed.get(run_key, 0.0)
            if max_cost_usd is not None and committed + amount > max_cost_usd + 1e-9:
                raise BudgetExceededError(
                    f"not sent: ${committed:.2f} is committed and this segment's ${amount:.2f} "
                    f"would pass max_cost_usd=${max_cost_usd:.2f}; raise the budget and re-run "
                    "(segments already paid for are reused)"
                )
            self._committed[run_key] = committed + amount

    def settle(self, run_key: str, reserved: float, actual: float | None) -> None:
        """Replaces a reservation by what the call really cost (0 when it was not billed)."""
        with self._lock:
            self._committed[run_key] = self._committed.get(run_key, 0.0) - reserved + (actual or 0.0)


_ledger = RunLedger()


class ModifySettings(BaseModel):
    """Everything about a paid call that is the same for every segment of a run."""

    prompt: str
    mode: Mode
    first_frame: str | None = Field(
        default=None, description="The run's restyled first frame of the video (sent with the segment at frame 0)."
    )
    first_frame_sha256: str | None = None
    backend: BackendSpec
    store_dir: str
    work_dir: str
    run_key: str = Field(description="Identifies the run for stopping it when credits run out.")
    refresh: bool = False
    reference_frame: str | None = None
    length_tolerance_s: float | None = None
    max_cost_usd: float | None = None
    concurrency: int = Field(default=4, description="Paid calls of the run in flight at once.")


class ModifiedSegment(BaseModel):
    """A segment's returned clip and what it cost."""

    index: int
    clip: str
    paid: bool = Field(description="Whether this run paid for it (False: reused from the store).")
    cost_usd: float | None = Field(default=None, description="As the service reported it, else the list-price estimate.")
    remaining_credits: float | None = None
    job_id: str | None = None
    seconds: float = Field(description="Wall time of this step.")


def retry_if_retryable(task, task_run, state) -> bool:
    """Retries a segment only after an error that another try can fix."""
    # The engine hands over a Failed state whose data is the exception the task raised.
    return isinstance(state.data, RetryableProviderError)


def _job_record(job: ModifyJob) -> dict:
    return {
        "provider": job.provider,
        "job_id": job.job_id,
        "state": job.state.value,
        "result_url": job.result_url,
        "request_id": job.request_id,
        "extra": job.extra,
        "submitted_at": datetime.now(timezone.utc).isoformat(),
    }


def _job_from_record(record: dict) -> ModifyJob:
    return ModifyJob(
        provider=record["provider"],
        state=JobState(record.get("state") or "queued"),
        job_id=record.get("job_id"),
        result_url=record.get("result_url"),
        request_id=record.get("request_id"),
        extra=record.get("extra") or {},
    )


# Errors after which a saved job may still finish: keep its id so the next try polls it.
_JOB_MAY_STILL_FINISH = (JobTimedOutError, ProviderUnavailableError, ProviderServerError, RateLimitedError)


async def _call_service(
    settings: ModifySettings, segment: Segment, request: ModifyRequest, key: str, store: ResultStore
) -> tuple[Path, ModifyJob]:
    """Submits the segment, or polls the job an earlier run saved, and downloads the answer.

    A 429 is waited out here (the request was refused, so sending it again is safe).
    """
    options = {}
    if settings.reference_frame and settings.first_frame:
        options = {"reference_frame": Path(settings.reference_frame), "styled_first_frame": Path(settings.first_frame)}
    workdir = Path(settings.work_dir) / "modify" / segment.name
    returned = workdir / "returned.mp4"
    saved = store.load_job(key)
    resume = _job_from_record(saved) if saved and saved.get("job_id") else None
    async with settings.backend.create(**options) as backend:
        for attempt in range(MAX_RATE_LIMIT_WAITS + 1):
            try:
                job = await run_modify(
                    backend,
                    request,
                    returned,
                    workdir,
                    on_submitted=lambda j: store.save_job(key, _job_record(j)) if j.job_id else None,
                    resume_job=resume,
                )
                return returned, job
            except RateLimitedError as error:
                if attempt == MAX_RATE_LIMIT_WAITS:
                    raise
                wait = 2.0**attempt
                if error.retry_at is not None:
                    wait = (error.retry_at - datetime.now(timezone.utc)).total_seconds()
                await asyncio.sleep(min(max(wait, 0.5), MAX_RATE_LIMIT_WAIT_SECONDS))
            except ProviderError as error:
                if isinstance(error, _JOB_MAY_STILL_FINISH):
                    raise
                # The job is over (failed, refused, unknown to the service): never poll it again.
                store.forget_job(key)
                if resume is None or isinstance(error, ContentModerationError):
                    raise
                get_run_logger().warning(
                    "segment %s: the saved job %s cannot be resumed (%s); submitting anew",
                    segment.name, resume.job_id, type(error).__name__,
                )
                resume = None
    raise AssertionError("unreachable")


@task(
    name="modify-segment",
    description="Sends one segment to the modify-video service, or reuses the stored result.",
    task_run_name="modify-{segment.index:05d}",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=[5, 20, 60],
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_if_retryable,
)
async def modify_video_segment(
    clip: Path,
    segment: Segment,
    settings: ModifySettings,
    estimated_cost_usd: float = 0.0,
    first_frame: Path | None = None,
) -> ModifiedSegment:
    """Restyles one extracted segment, paying at most once for it across runs.

    The result is stored under a key made of the clip's content and the normalised
    parameters, so a later run (after a crash, a failure or a credit stop) finds it.

    Args:
        clip: The extracted segment.
        segment: Its place in the plan.
        settings: Prompt, mode, backend and store of the run.
        estimated_cost_usd: The list price of this call, booked against ``max_cost_usd``.
        first_frame: The image sent as the clip's restyled first frame, if any (the run's image
            for the segment at frame 0; in the sequential mode, the previous answer's frame).

    Returns:
        The stored clip and what it cost.

    Raises:
        ProviderError: a subclass; retryable ones are retried with backoff.
    """
    logger = get_run_logger()
    started = time.monotonic()
    clip = Path(clip)
    backend_model = settings.backend.model or ""
    key = cache_key(
        clip_sha256=sha256_of_file(clip),
        prompt=settings.prompt,
        mode=settings.mode,
        first_frame_sha256=sha256_of_file(Path(first_frame)) if first_frame else None,
        run_first_frame_sha256=settings.first_frame_sha256,
        provider=settings.backend.name,
        model=backend_model,
        conform_version=CONFORM_VERSION,
    )
    store = ResultStore(settings.store_dir)

    def reused(path: Path) -> ModifiedSegment:
        logger.info("segment %s: reusing the stored result (not paid again)", segment.name)
        record = store.record(key)
        return ModifiedSegment(
            index=segment.index, clip=str(path), paid=False, job_id=record.get("job_id"),
            seconds=time.monotonic() - started,
        )

    if not settings.refresh and (hit := store.get(key)):
        return reused(hit)
    with store.lock(key):
        if not settings.refresh and (hit := store.get(key)):
            return reused(hit)
        request = ModifyRequest(
            clip=clip,
            prompt=settings.prompt,
            mode=settings.mode,
            first_frame=Path(first_frame) if first_frame else None,
        )
        slots = _ledger.call_slots(settings.run_key, settings.concurrency)
        # Waiting for a slot in a helper thread keeps this task's event loop free.
        await asyncio.to_thread(slots.acquire)
        try:
            _ledger.reserve(settings.run_key, estimated_cost_usd, settings.max_cost_usd)
        except BaseException:
            slots.release()
            raise
        try:
            returned, job = await _call_service(settings, segment, request, key, store)
        except InsufficientCreditsError as error:
            _ledger.settle(settings.run_key, estimated_cost_usd, 0.0)
            _ledger.stop(settings.run_key, f"the account ran out of credits at segment {segment.name}")
            raise InsufficientCreditsError(
                f"{error}. Segments finished so far are kept; add credits and re-run: only the "
                "missing segments are sent"
            ) from error
        except ProviderError as error:
            # Refused and failed calls are not billed; an unanswered one may have been, so it stays booked.
            if not isinstance(error, SubmitOutcomeUnknownError):
                _ledger.settle(settings.run_key, estimated_cost_usd, 0.0)
            raise
        finally:
            slots.release()
        _ledger.settle(settings.run_key, estimated_cost_usd, job.cost_usd if job.cost_usd is not None else estimated_cost_usd)
        try:
            check_returned_clip(returned, segment, settings.length_tolerance_s)
        except RetryableProviderError:
            store.forget_job(key)
            raise
        stored = store.put(
            key,
            returned,
            {
                "provider": job.provider,
                "job_id": job.job_id,
                "request_id": job.request_id,
                "cost_usd": job.cost_usd,
                "segment": segment.name,
            },
        )
        returned.unlink(missing_ok=True)
    logger.info("segment %s: paid call done (job %s)", segment.name, job.job_id or job.request_id or "-")
    return ModifiedSegment(
        index=segment.index,
        clip=str(stored),
        paid=True,
        cost_usd=job.cost_usd if job.cost_usd is not None else estimated_cost_usd,
        remaining_credits=job.remaining_credits,
        job_id=job.job_id,
        seconds=time.monotonic() - started,
    )
