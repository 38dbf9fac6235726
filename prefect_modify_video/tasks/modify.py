"""The paid step: one segment through the modify-video service, paid for at most once.

Retries have one owner at each level:

- **a request**: the HTTP client repeats only what is safe to repeat (GETs, and a create that
  surely never reached the service);
- **a job**: ``wait_for_job`` polls until the job ends or its deadline passes; a poll that fails
  for a passing reason (429, 5xx, timeout, dropped connection) is polled again, never submitted;
- **a segment**: Prefect's task retries, configured once from the run's parameters. Every
  attempt first reloads the segment's saved job, so no attempt can submit a segment whose job
  id is saved.

Money: a job id is saved before any waiting (a run that cannot save it sends nothing more);
every job the service completed (and so billed) is booked once in the run's ledger, whether its
answer is used, thrown away or only partly used; a failed download keeps the saved job, so the
next attempt or run fetches the answer again instead of paying for it again.

An answer that covers only the start of what was sent is kept for the part it covers and only
the missing remainder is sent (``prefect_modify_video.media.answers``); the pieces are joined
into the segment's answer.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from prefect.runtime import task_run as current_task_run
from pydantic import BaseModel, Field

from prefect_modify_video.errors import (
    BudgetExceededError,
    DamagedStoreError,
    ClipValidationError,
    ContentModerationError,
    FatalProviderError,
    ForeignOriginError,
    InsufficientCreditsError,
    InvalidRequestError,
    RateLimitedError,
    JobFailedError,
    JobTimedOutError,
    ModifyVideoError,
    RetryableProviderError,
    SubmitOutcomeUnknownError,
)
from prefect_modify_video.blocks.credentials import build_backend
from prefect_modify_video.claims import Claim, RunBilling, SharedBudget, acquire_claim, drop_unknown_claim
from prefect_modify_video.tasks.account import AccountLimits
from prefect_modify_video.tasks.work_files import local_file
from prefect_modify_video.media.extract import EXTRACT_VERSION, SourceSegment, write_frame_image
from prefect_modify_video.parameters import BackendSpec, ModifyVideoParameters
from prefect_modify_video.media.answers import covered_frames, join_answers, last_frame_image, remainder_clip
from prefect_modify_video.media.files import sha256_of_file
from prefect_modify_video.media.plan import Segment
from prefect_modify_video.media.probe import probe_video
from prefect_modify_video.providers.registry import backend_class
from prefect_modify_video.providers.base import (
    JobState,
    Mode,
    ModifyBackend,
    ModifyJob,
    ModifyRequest,
    seconds_until,
    wait_for_job,
)
from prefect_modify_video.run_plan import RunPlan
from prefect_modify_video.store import ResultStore, cache_key

MAX_RATE_LIMIT_PAUSE_SECONDS = 120.0
"""Longest a refused create waits for the service's reset time before its try fails and Prefect retries."""
MAX_REMAINDERS = 3
"""Remainders sent for one segment whose answers keep coming back short, before it fails."""


@dataclass(frozen=True)
class BilledCall:
    """One job the service completed, and so billed, in a run."""

    segment: int
    job_id: str
    cost_usd: float


class RunLedger:
    """What the runs of this process have spent and committed, and which must send nothing more.

    Segment tasks of one run share it (they run in the flow's worker threads): a run whose
    account ran out of credits sends no new segment, no paid call may take a run past its
    ``max_cost_usd``, and every billed job is booked here once, so the run reports what the
    service billed.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._stopped: dict[str, str] = {}
        self._committed: dict[str, dict[str, float]] = {}
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._billed: dict[str, dict[str, BilledCall]] = {}

    def call_slots(self, run_key: str, concurrency: int) -> threading.BoundedSemaphore:
        """The run's semaphore bounding its paid calls in flight to ``concurrency``."""
        with self._lock:
            return self._slots.setdefault(run_key, threading.BoundedSemaphore(concurrency))

    def stop(self, run_key: str, reason: str) -> None:
        """Marks the run so that none of its segments is sent any more."""
        with self._lock:
            self._stopped.setdefault(run_key, reason)

    def check_not_stopped(self, run_key: str) -> None:
        """Raises ``InsufficientCreditsError`` when the run was stopped."""
        with self._lock:
            if run_key in self._stopped:
                raise InsufficientCreditsError(f"not sent: {self._stopped[run_key]}")

    def reserve(self, run_key: str, call_key: str, amount: float, max_cost_usd: float | None) -> None:
        """Commits ``amount`` for the call ``call_key`` about to be sent (once per call key).

        Raises:
            InsufficientCreditsError: the run was stopped.
            BudgetExceededError: the call would take the run past ``max_cost_usd``.
        """
        self.check_not_stopped(run_key)
        with self._lock:
            calls = self._committed.setdefault(run_key, {})
            if call_key in calls:
                return
            committed = sum(calls.values())
            if max_cost_usd is not None and committed + amount > max_cost_usd + 1e-9:
                raise BudgetExceededError(
                    f"not sent: ${committed:.2f} is committed and this segment's ${amount:.2f} "
                    f"would pass max_cost_usd=${max_cost_usd:.2f}; raise the budget and re-run "
                    "(segments already paid for are reused)"
                )
            calls[call_key] = amount

    def settle(self, run_key: str, call_key: str, actual: float) -> None:
        """Replaces a call's commitment by what it really cost."""
        with self._lock:
            self._committed.setdefault(run_key, {})[call_key] = actual

    def release(self, run_key: str, call_key: str) -> None:
        """Drops a call's commitment: it was not billed."""
        with self._lock:
            self._committed.get(run_key, {}).pop(call_key, None)

    def book(self, run_key: str, call: BilledCall) -> None:
        """Books a billed job once (booking the same job id again replaces it)."""
        with self._lock:
            self._billed.setdefault(run_key, {})[call.job_id] = call

    def billed(self, run_key: str, segment: int | None = None) -> list[BilledCall]:
        """Every job billed in the run (or for one of its segments), in booking order."""
        with self._lock:
            calls = list(self._billed.get(run_key, {}).values())
        return [c for c in calls if segment is None or c.segment == segment]


ledger = RunLedger()
"""The process's ledger; the flow reads a run's billed calls from it."""


def run_billing(settings: ModifySettings, store: ResultStore | None = None) -> RunBilling:
    """The run's billing records in its store: ``billing/<run key>/`` (``claims.RunBilling``)."""
    return RunBilling((store or ResultStore(settings.store_dir)).conditional_files(f"billing/{settings.run_key}"))


def book_billed_call(settings: ModifySettings, store: ResultStore, call: BilledCall) -> None:
    """Books a billed job in this process's ledger and in the run's billing records in the store
    (``claims.RunBilling``), which the run reads whatever process or machine its segment tasks ran on."""
    ledger.book(settings.run_key, call)
    try:
        run_billing(settings, store).book(call.segment, call.job_id, call.cost_usd)
    except Exception as error:  # noqa: BLE001 - the job is billed and its answer saved: the report is what suffers
        get_run_logger().warning(
            "segment %05d: job %s is billed but could not be booked in the store %s (%s); the run's reported cost "
            "counts it only if the segment ran in the flow's own process", call.segment, call.job_id, store.location, error,
        )


def billed_calls(settings: ModifySettings, segments: list[int] | range) -> list[BilledCall]:
    """Every job billed in the run for ``segments``: booked in this process or, by any process of the run
    (a Dask worker, a retry elsewhere), in the store; each job once."""
    found = {call.job_id: call for call in ledger.billed(settings.run_key) if call.segment in set(segments)}
    try:
        for segment, job_id, cost in run_billing(settings).billed(segments):
            found.setdefault(job_id, BilledCall(segment, job_id, cost))
    except Exception as error:  # noqa: BLE001 - the process's own ledger is still reported
        get_run_logger().warning("the run's billing records in %s cannot be read (%s)", settings.store_dir, error)
    return sorted(found.values(), key=lambda call: call.segment)


def clear_billing_records(settings: ModifySettings, segments: list[int] | range) -> None:
    """Removes the run's billing records from the store once ``billed_calls`` has added them up."""
    try:
        run_billing(settings).clear(segments)
    except Exception as error:  # noqa: BLE001 - the run's report is made; a record left behind costs nothing
        get_run_logger().warning("the run's billing records in %s could not be removed (%s)", settings.store_dir, error)


class ModifySettings(BaseModel):
    """Everything about a paid call that is the same for every segment of a run."""

    prompt: str
    mode: Mode
    first_frame: str | None = Field(
        default=None, description="The run's restyled first frame of the video (sent with the segment at frame 0)."
    )
    first_frame_sha256: str | None = None
    backend: BackendSpec
    backend_name: str = Field(description="The service's backend, as built (a block may choose it).")
    model: str = Field(default="", description="The service's model, as built.")
    source_sha256: str = Field(description="The source file's content hash: part of every segment's key.")
    sent_size: tuple[int, int] = Field(description="Width and height of the clips sent to the service.")
    store_dir: str
    work_dir: str
    run_key: str = Field(description="Identifies the run in the ledger (spend, billed calls, credit stop).")
    refresh: bool = False
    resend_unknown: bool = False
    reference_frame: str | None = None
    max_cost_usd: float | None = None
    budget: str | None = Field(default=None, description="A budget shared through the store (max_cost_usd is its cap).")
    concurrency: int = Field(default=4, description="Paid calls of the run in flight at once.")

    @classmethod
    def for_run(
        cls,
        params: ModifyVideoParameters,
        run: RunPlan,
        *,
        source: str,
        first_frame: str | None,
        store: ResultStore,
        work_dir: Path,
        mode: Mode,
    ) -> ModifySettings:
        """The settings of a planned run over the local ``source`` (the preview makes one per ``mode``)."""
        store.conditional_files("claims")  # a store that cannot hold claims is refused before any work
        reference = None
        if first_frame and run.backend.uses_reference_frame:
            reference = str(write_frame_image(source, 0, Path(work_dir) / "reference.png"))
        return cls(
            prompt=params.prompt,
            mode=mode,
            first_frame=first_frame,
            first_frame_sha256=sha256_of_file(first_frame) if first_frame else None,
            backend=params.backend,
            backend_name=run.backend.name,
            model=run.backend.model,
            source_sha256=sha256_of_file(source),
            sent_size=run.sent_size,
            store_dir=store.location,
            work_dir=str(work_dir),
            run_key=uuid.uuid4().hex,
            refresh=params.refresh,
            resend_unknown=params.resend_unknown,
            max_cost_usd=params.max_cost_usd,
            budget=params.budget,
            concurrency=run.concurrency,
            reference_frame=reference,
        )


class ModifiedSegment(BaseModel):
    """A segment's returned clip and what it cost."""

    index: int
    clip: str
    paid: bool = Field(description="Whether this run paid for it (False: reused from the store).")
    billed_calls: int = Field(default=0, description="Jobs billed for it in this run (a short answer's remainders too).")
    cost_usd: float | None = Field(default=None, description="As the service reported it, else the list-price estimate.")
    remaining_credits: float | None = None
    job_id: str | None = None
    seconds: float = Field(description="Wall time of this step.")
    key: str | None = Field(default=None, description="The segment's key in the store.")
    store_dir: str | None = Field(default=None, description="The store holding the clip.")

    def local_clip(self) -> Path:
        """The clip on this machine: where the paid step left it, else fetched from the store (a task on
        another machine of a Dask cluster gets it from the store block)."""
        if Path(self.clip).is_file() or self.key is None:
            return Path(self.clip)
        return ResultStore(self.store_dir).get(self.key) or Path(self.clip)


def segment_key(settings: ModifySettings, segment: Segment, first_frame_key: str | None) -> str:
    """The store key of a segment's answer: what was asked, never the bytes of an encode.

    It is made of the source's content hash, the sent frame range and size, the normalised
    prompt and mode, the keys of the images sent, the service and model and the extraction
    version; so two machines (other ffmpeg builds, other thread counts) find each other's answers.

    Args:
        settings: The run's settings.
        segment: The segment.
        first_frame_key: What identifies the first-frame image sent with it: the image's hash
            (the run's first frame), the previous segment's key (sequential mode), or ``None``.
    """
    return cache_key(
        source_sha256=settings.source_sha256,
        sent_frames=[segment.sent_first_frame, segment.end_frame],
        sent_size=list(settings.sent_size),
        prompt=" ".join(settings.prompt.split()),
        mode=settings.mode,
        first_frame=first_frame_key,
        run_first_frame_sha256=settings.first_frame_sha256,
        service=settings.backend_name,
        model=settings.model,
        extract_version=EXTRACT_VERSION,
        **({"frame_step": segment.frame_step} if segment.frame_step > 1 else {}),
    )


def retry_if_retryable(task, task_run, state) -> bool:
    """Retries a segment only after an error that another try can fix.

    A job that passed its deadline (``max_wait_seconds``) is not waited on again in the same run:
    the deadline is the user's bound on the wait, not one per try; its id stays saved and a re-run
    polls it.
    """
    # The engine hands over a Failed state whose data is the exception the task raised.
    return isinstance(state.data, RetryableProviderError) and not isinstance(state.data, JobTimedOutError)


class ResultUnavailableError(FatalProviderError):
    """Raised when a billed job's answer cannot be fetched: its link is gone.

    The job stays saved, so a re-run tries the download again first and never pays for it again.
    """


class JobNotSavedError(ModifyVideoError):
    """Raised when a submitted job's id cannot be saved: the run sends nothing more."""


def _job_record(job: ModifyJob, *, billed: bool = False) -> dict:
    return {
        "provider": job.provider,
        "job_id": job.job_id,
        "state": job.state.value,
        "result_url": job.result_url,
        "request_id": job.request_id,
        "cost_usd": job.cost_usd,
        "extra": job.extra,
        "billed": billed,
        "saved_at": datetime.now(timezone.utc).isoformat(),
    }


def _job_from_record(record: dict) -> ModifyJob:
    return ModifyJob(
        provider=record["provider"],
        state=JobState(record.get("state") or "queued"),
        job_id=record.get("job_id"),
        result_url=record.get("result_url"),
        request_id=record.get("request_id"),
        cost_usd=record.get("cost_usd"),
        extra=record.get("extra") or {},
    )


class _SegmentPayer:
    """Gets one segment's answer from the service, paying once for every frame of it."""

    def __init__(
        self, settings: ModifySettings, segment: Segment, key: str, estimate_usd: float, store: ResultStore,
        claim: Claim,
    ):
        self.settings = settings
        self.claim = claim
        self.shared_budget = (
            SharedBudget(store.conditional_files("budgets"), settings.budget, settings.max_cost_usd)
            if settings.budget else None
        )
        self.segment = segment
        self.key = key
        self.estimate_usd = estimate_usd
        self.store = store
        self.workdir = Path(settings.work_dir) / "modify" / segment.name
        self.remaining_credits: float | None = None
        self.logger = get_run_logger()
        # --refresh pays again for what is stored: on a segment's first try only, not on its retries.
        self.refresh = settings.refresh and current_task_run.run_count <= 1

    def backend(self, key: str) -> ModifyBackend:
        """The service's client; its creates pass the claim's fencing point first."""
        options = {}
        if self.settings.reference_frame and self.settings.first_frame:
            options = {
                "reference_frame": Path(self.settings.reference_frame),
                "styled_first_frame": Path(self.settings.first_frame),
            }
        backend = build_backend(self.settings.backend, **options)
        backend.before_create = lambda marker: self.claim.fence({"key": key, **marker})
        return backend

    def _reserve(self, key: str) -> None:
        """Commits the piece's estimate in the run's ledger and, when named, the shared budget."""
        settings = self.settings
        ledger.reserve(settings.run_key, key, self.estimate_usd, None if self.shared_budget else settings.max_cost_usd)
        if self.shared_budget is not None:
            try:
                self.shared_budget.reserve(key, self.estimate_usd)
            except BaseException:
                ledger.release(settings.run_key, key)
                raise

    def _settle(self, key: str, cost: float) -> None:
        ledger.settle(self.settings.run_key, key, cost)
        if self.shared_budget is not None:
            self.shared_budget.settle(key, cost)

    def _release(self, key: str) -> None:
        ledger.release(self.settings.run_key, key)
        if self.shared_budget is not None:
            self.shared_budget.release(key)

    async def answer(self, clip: Path | SourceSegment, first_frame: Path | None) -> Path:
        """The answer for the whole clip: stored, or paid for (a short one completed by remainders).

        ``clip`` is the segment's frames in the source for a backend that reads them there (``reads_source``):
        its answer covers them all (``covered_frames``), so it has no remainders.
        """
        if isinstance(clip, SourceSegment):
            return (await self._piece(self.key, clip, first_frame))[0]
        sent_frames = probe_video(clip).frames
        pieces: list[tuple[Path, int]] = []
        start, key, image = 0, self.key, first_frame
        for _ in range(MAX_REMAINDERS + 1):
            piece_clip = clip if start == 0 else remainder_clip(
                clip, start, self.workdir / f"from-{start}.mp4",
                min_seconds=backend_class(self.settings.backend_name).min_clip_seconds,
            )
            answer, covered = await self._piece(key, piece_clip, image)
            covered = min(covered, sent_frames - start)  # a padded remainder's answer covers its padding too
            pieces.append((answer, covered))
            start += covered
            if start >= sent_frames:
                break
            self.logger.warning(
                "segment %s: the answer covers %d of the %d frames sent; sending only the remaining %d",
                self.segment.name, start, sent_frames, sent_frames - start,
            )
            key = cache_key(segment_key=self.key, sent_from_frame=start)
            image = last_frame_image(answer, self.workdir / f"from-{start}.png")
        else:
            raise ClipValidationError(
                f"segment {self.segment.name}: the service's answers covered {start} of {sent_frames} frames "
                f"after {MAX_REMAINDERS} remainders; the pieces are kept and a re-run sends only what is missing",
                provider=self.settings.backend_name,
            )
        if len(pieces) == 1:
            return pieces[0][0]
        rate = probe_video(clip).frame_rate
        joined = join_answers([p for p, _ in pieces], [c for _, c in pieces], rate, self.workdir / "joined.mp4")
        return self.store.put(self.key, joined, self._record(joined, clip, sent_frames, pieces=len(pieces)))

    def _record(self, answer: Path, clip: Path | SourceSegment, covered: int, **extra) -> dict:
        return {
            "segment": self.segment.name,
            "service": self.settings.backend_name,
            "covered_frames": covered,
            "answer_sha256": sha256_of_file(answer),
            **({"sent_clip_sha256": sha256_of_file(clip)} if isinstance(clip, Path) else {}),
            **extra,
        }

    async def _piece(self, key: str, clip: Path | SourceSegment, first_frame: Path | None) -> tuple[Path, int]:
        """The stored or paid answer for ``clip`` under ``key``, and how many of its frames it covers."""
        stored = None if self.refresh else self.store.get(key)
        if stored is not None and (covered := self.store.record(key).get("covered_frames")):
            return stored, int(covered)
        returned, job = await self._pay(key, clip, first_frame)
        try:
            covered = covered_frames(returned, clip)
        except ClipValidationError:
            # Billed and unusable: the next try sends the piece again.
            self.store.forget_job(key)
            returned.unlink(missing_ok=True)
            raise
        record = self._record(returned, clip, covered, job_id=job.job_id, request_id=job.request_id,
                              cost_usd=job.cost_usd)
        return self.store.put(key, returned, record), covered

    def _call_id(self, key: str, job: ModifyJob) -> str:
        return job.job_id or job.request_id or f"{self.settings.backend_name}:{key}"

    def _book(self, key: str, job: ModifyJob) -> None:
        cost = job.cost_usd if job.cost_usd is not None else self.estimate_usd
        book_billed_call(self.settings, self.store, BilledCall(self.segment.index, self._call_id(key, job), cost))

    async def _pay(self, key: str, clip: Path | SourceSegment, first_frame: Path | None) -> tuple[Path, ModifyJob]:
        """Submits the piece, or follows the job an earlier try saved, and downloads its answer."""
        settings = self.settings
        # Answers land in the store first (never in a work folder that a failed run deletes).
        returned = self.store.incoming_path(key)
        try:
            saved, damaged = self.store.load_job(key), None
        except DamagedStoreError as error:  # set aside: settled below through the service's list, if it has one
            saved, damaged = None, error
        if saved and self.refresh and not saved.get("billed"):
            self.logger.info("segment %s: --refresh: abandoning the saved job %s", self.segment.name, saved.get("job_id"))
            self.store.forget_job(key)
            saved = None
        try:
            resumed = _job_from_record(saved) if saved and saved.get("job_id") else None
        except (KeyError, ValueError, TypeError) as error:
            raise DamagedStoreError(
                f"segment {self.segment.name}: the saved job record jobs/{key}.json in {self.store.location} "
                f"is not one this version can read ({error!r}); the job it names may have been billed. Check the "
                "service's dashboard, then delete that file and re-run to send the segment again"
            ) from error
        billed_before = bool(saved and saved.get("billed"))
        if billed_before and resumed is not None and returned.is_file():
            self.logger.info("segment %s: the answer of job %s was already downloaded", self.segment.name, resumed.job_id)
            return returned, resumed
        request = ModifyRequest(
            clip=clip if isinstance(clip, Path) else None, source=clip if isinstance(clip, SourceSegment) else None,
            prompt=settings.prompt, mode=settings.mode, first_frame=first_frame,
            style_image=Path(settings.first_frame) if settings.first_frame else None,
            style_frame=self.segment.clip_index(self.segment.first_frame),
        )
        slots = ledger.call_slots(settings.run_key, settings.concurrency)
        # Waiting for a slot in a helper thread keeps this task's event loop free.
        await asyncio.to_thread(slots.acquire)
        held = [slots]

        def give_back_slot() -> None:
            # Held while a generation can be running at the service; booking and the download come after.
            while held:
                held.pop().release()

        try:
            async with self.backend(key) as backend:
                if resumed is None and not billed_before:
                    resumed = await self._resolve_taken_over(backend, key, damaged)
                    # A job an earlier run already saw finished (and booked) is not booked again.
                    billed_before = resumed is not None and bool(self.claim.previous.get("billed"))
                if not billed_before:
                    self._reserve(key)
                try:
                    limits = AccountLimits.for_backend(backend, settings.backend)
                    if limits is None:
                        job = await self._follow(backend, key, request, resumed, None)
                    else:
                        async with limits.generation():
                            job = await self._follow(backend, key, request, resumed, limits)
                except BaseException as error:
                    give_back_slot()
                    if isinstance(error, ContentModerationError) and backend.bills_moderated_jobs and not billed_before:
                        # Billed like a finished job (Runway): booked, never used, and kept committed.
                        self._settle(key, self.estimate_usd)
                        book_billed_call(settings, self.store, BilledCall(
                            self.segment.index, error.job_id or f"{settings.backend_name}:{key}", self.estimate_usd))
                    # Kept committed: a job still saved (it may yet finish) and an unanswered create.
                    elif self.store.load_job(key) is None and not isinstance(error, SubmitOutcomeUnknownError):
                        self._release(key)
                    raise
                give_back_slot()  # the job is over at the service
                if not billed_before:
                    # Billed now: marked before the download, so no later try books or pays it again.
                    self._settle(key, job.cost_usd if job.cost_usd is not None else self.estimate_usd)
                    self._book(key, job)
                    if job.job_id:
                        self._save_job(key, job, billed=True)
                        self.claim.update(state="submitted", job_id=job.job_id, billed=True)
                if job.remaining_credits is not None:
                    self.remaining_credits = job.remaining_credits
                await self._download(backend, job, returned)
        finally:
            give_back_slot()
        return returned, job

    async def _resolve_taken_over(
        self, backend: ModifyBackend, key: str, damaged: DamagedStoreError | None = None
    ) -> ModifyJob | None:
        """The job of a create a dead (or unanswered) holder of this claim may have sent, or whose saved
        record is ``damaged``, if any: looked up in the service's list of jobs by what the claim kept.

        Returns:
            The job found in the service's list (saved, to be followed), or ``None`` when nothing was
            in flight for ``key`` or the service's list shows it never arrived.

        Raises:
            SubmitOutcomeUnknownError: a create may have been sent and billed, and the service has no
                list to look in: nothing is sent blind (``--refresh`` is the user's decision to pay again).
        """
        previous = self.claim.previous
        kept = previous.get("marker") or {}
        lost = self.claim.taken_over in ("sending", "unknown") or (damaged and self.claim.taken_over == "submitted")
        if not lost or kept.get("key", key) != key:
            if damaged is not None:
                raise damaged
            return None
        marker = {k: v for k, v in kept.items() if k != "key"}
        where = f"{self.store.location} (claims/{self.key}.json)"
        if backend.can_find_jobs and marker:
            job = await backend.find_job(marker, float(previous.get("sending_at") or 0))
            if job is None and damaged is not None:
                raise damaged
            if job is None:
                self.logger.warning("segment %s: a create sent by %s never reached %s (not in its list of jobs): sending it",
                                    self.segment.name, previous.get("host", "another run"), backend.service)
                return None
            self.logger.warning("segment %s: found job %s, created by %s whose answer was lost; following it",
                                self.segment.name, job.job_id, previous.get("host", "another run"))
            self._save_job(key, job)
            return job
        if damaged is not None:
            raise damaged
        self.claim.release(keep_as="unknown")
        raise SubmitOutcomeUnknownError(
            f"segment {self.segment.name}: a create was sent by {previous.get('host', 'another run')} "
            f"(pid {previous.get('pid', '?')}) and its answer was lost; {backend.service} may have accepted and "
            f"billed it and has no list of jobs to check. Look in the service's dashboard; the claim is kept in {where}; "
            "to send the segment again, re-run with --resend-unknown",
            provider=backend.name,
        )

    async def _follow(
        self, backend: ModifyBackend, key: str, request: ModifyRequest, resumed: ModifyJob | None,
        limits: AccountLimits | None,
    ):
        """Submits (saving the job id at once) or resumes, then waits for the job to end."""
        settings = self.settings
        if resumed is None:
            try:
                if limits is not None:
                    await limits.before_create()
                job = await backend.submit(request, self.workdir)
            except SubmitOutcomeUnknownError:
                # Kept as ``unknown``: the next run resolves it through the service's list or asks the user.
                self.claim.release(keep_as="unknown")
                raise
            except RateLimitedError as error:
                # Refused, so not billed: the segment's next try (Prefect's) goes after the reset the
                # service gave (Segmind's header, Replicate's body, Retry-After), holding the run's slot.
                await asyncio.sleep(min(seconds_until(error.retry_at), MAX_RATE_LIMIT_PAUSE_SECONDS))
                raise
            except InsufficientCreditsError as error:
                ledger.stop(settings.run_key, f"the account ran out of credits at segment {self.segment.name}")
                raise InsufficientCreditsError(
                    f"{error}. Segments finished so far are kept; add credits and re-run: only the "
                    "missing segments are sent"
                ) from error
            if job.job_id:
                self._save_job(key, job)
                self.claim.update(state="submitted", job_id=job.job_id)
            poll_first = False
        else:
            self.logger.info("segment %s: following the saved job %s", self.segment.name, resumed.job_id)
            job, poll_first = resumed, True
        try:
            return await wait_for_job(backend, job, poll_first=poll_first)
        except ForeignOriginError as error:
            # Kept, not followed and not sent again: someone wrote another host into the shared store.
            raise ForeignOriginError(
                f"segment {self.segment.name}: {error}. The saved job is kept in {self.store.location} "
                f"(jobs/{key}.json): check who can write to the store, then delete that file to send the segment again",
                provider=settings.backend_name, job_id=job.job_id,
            ) from error
        except (JobFailedError, InvalidRequestError, FatalProviderError) as error:
            # The job is over without an answer (failed, refused, unknown to the service): not billed.
            self.store.forget_job(key)
            if isinstance(error, InsufficientCreditsError):
                ledger.stop(settings.run_key, f"the account ran out of credits at segment {self.segment.name}")
            if resumed is not None and isinstance(error, InvalidRequestError):
                raise JobFailedError(
                    f"the saved job {resumed.job_id} cannot be followed ({error}); the next try submits anew",
                    provider=settings.backend_name, job_id=resumed.job_id,
                ) from error
            raise

    def _save_job(self, key: str, job: ModifyJob, *, billed: bool = False) -> None:
        try:
            self.store.save_job(key, _job_record(job, billed=billed))
        except Exception as error:
            ledger.stop(self.settings.run_key, f"the job id of segment {self.segment.name} could not be saved")
            raise JobNotSavedError(
                f"segment {self.segment.name}: job {job.job_id} was accepted by {job.provider} but its id could "
                f"not be saved in the store {self.store.location} ({error}); the run sends nothing more. "
                "Fix the store, then re-run"
            ) from error

    async def _download(self, backend: ModifyBackend, job: ModifyJob, destination: Path) -> None:
        """Downloads a billed job's answer; a failure keeps the saved job for the next try."""
        try:
            await backend.download(job, destination)
        except RetryableProviderError as error:
            if isinstance(error, JobFailedError) and error.status_code in (404, 410):
                raise ResultUnavailableError(
                    f"segment {self.segment.name}: job {job.job_id} was billed but its result link answers "
                    f"{error.status_code}; fetch it from the service's dashboard, or re-run: the download is "
                    "tried again first and the segment is not bought again",
                    provider=job.provider, job_id=job.job_id, status_code=error.status_code,
                ) from error
            raise


async def answer_segment(
    clip: Path | SourceSegment,
    segment: Segment,
    settings: ModifySettings,
    key: str,
    estimated_cost_usd: float = 0.0,
    first_frame: Path | None = None,
) -> ModifiedSegment:
    """Restyles one extracted segment, paying at most once for it across tries, runs and machines' stores.

    The paid step of the segment task (``tasks.segment.modify_video_segment``), which Prefect
    retries after a retryable error: every try reloads the saved job first.

    Args:
        clip: The extracted segment, or its frames in the source for a backend that reads them there
            (``ModifyBackend.reads_source``).
        segment: Its place in the plan.
        settings: Prompt, mode, backend and store of the run.
        key: The segment's store key (``segment_key``).
        estimated_cost_usd: The list price of this call, booked against ``max_cost_usd``.
        first_frame: The image sent as the clip's restyled first frame, if any (the run's image
            for the segment at frame 0; in the sequential mode, the previous answer's frame).

    Returns:
        The stored clip and what it cost.

    Raises:
        ProviderError: a subclass; retryable ones are retried by Prefect (``retry_if_retryable``).
    """
    started = time.monotonic()
    # Files from the run's shared work folder when the segment tasks run on other machines (``tasks.work_files``).
    if not isinstance(clip, SourceSegment):
        clip = local_file(clip, settings.work_dir)
    first_frame = local_file(first_frame, settings.work_dir) if first_frame else None
    settings = settings.model_copy(update={
        name: str(local_file(value, settings.work_dir))
        for name in ("first_frame", "reference_frame") if (value := getattr(settings, name))
    })
    store = ResultStore(settings.store_dir)
    logger = get_run_logger()
    free = backend_class(settings.backend_name).is_free

    def complete_hit() -> Path | None:
        if settings.refresh and current_task_run.run_count <= 1:
            return None
        hit = store.get(key)
        covered = store.record(key).get("covered_frames") if hit else None
        return hit if hit and (covered is None or covered >= segment.clip_frames) else None

    def reused(path: Path) -> ModifiedSegment:
        logger.info("segment %s: reusing the stored result (%s)", segment.name,
                    "not restyled again" if free else "not paid again")
        return ModifiedSegment(
            index=segment.index, clip=str(path), paid=False, job_id=store.record(key).get("job_id"),
            seconds=time.monotonic() - started, key=key, store_dir=settings.store_dir,
        )

    if hit := complete_hit():
        return reused(hit)
    claims = store.conditional_files("claims")
    if (settings.refresh or settings.resend_unknown) and current_task_run.run_count <= 1 and drop_unknown_claim(claims, key):
        logger.warning("segment %s: sending again a segment whose earlier create got no answer", segment.name)

    def waiting(other: dict) -> None:
        logger.info(
            "segment %s: another run (%s, pid %s, flow run %s) is paying for it; waiting for its result",
            segment.name, other.get("host", "?"), other.get("pid", "?"), other.get("flow_run", "?"),
        )

    claim = await acquire_claim(
        claims, key, is_done=lambda: complete_hit() is not None, holder={"flow_run": str(flow_run.get_id() or "")},
        on_wait=waiting,
    )
    if claim is None:
        return reused(complete_hit())
    try:
        payer = _SegmentPayer(settings, segment, key, estimated_cost_usd, store, claim)
        stored = await payer.answer(clip, Path(first_frame) if first_frame else None)
    finally:
        # A job left saved (its answer not fetched yet) keeps the claim as ``submitted`` with what identifies
        # its request, so that even a damaged job record can be settled through the service's list of jobs.
        piece = (claim.data.get("marker") or {}).get("key")
        claim.release(keep_as="submitted" if piece and store.has_saved_job(piece) else None)
    calls = billed_calls(settings, [segment.index])
    logger.info(
        "segment %s: done with %d %s (%s)", segment.name, len(calls),
        "restyling call(s), free" if free else "billed call(s)", ", ".join(c.job_id for c in calls) or "reused pieces",
    )
    return ModifiedSegment(
        index=segment.index,
        clip=str(stored),
        paid=bool(calls),
        billed_calls=len(calls),
        cost_usd=sum(c.cost_usd for c in calls),
        remaining_credits=payer.remaining_credits,
        job_id=calls[-1].job_id if calls else None,
        seconds=time.monotonic() - started,
        key=key,
        store_dir=settings.store_dir,
    )
