"""The fake modify-video server: one local HTTP port speaking every dialect in ``DIALECTS``.

It is a stdlib ``ThreadingHTTPServer`` on 127.0.0.1 in a daemon thread, like httpx's
``TestServer``: clients under test point their ``base_url`` at ``server.base_url`` and talk
real HTTP to it. The services' own routes, auth schemes and answers are their dialects'
(``segmind.py``, ``luma.py``, ``fal.py``, ``replicate.py``); this module does what is the
same for all: counting, auth checks, faults, credits, jobs, billing, and three routes of
its own::

    PUT    /uploads/{name}     store a file: {"url": GET url} (or the URL as text/plain)
    GET    /uploads/{name}     an uploaded file (no auth)
    GET    /files/{name}       a result clip (no auth)
    GET    /health             {"ok": true}

Any non-empty key passes unless ``api_key`` is given; a wrong or missing one answers 401.

Queued jobs answer ``queued`` on create, ``running`` from the first poll and their terminal
state from poll number ``polls_to_complete`` (or ``seconds_to_complete`` after creation, or at
once after a Replicate ``Prefer: wait``). The ffmpeg work runs in the background from creation.

Faults are scripted per service and consumed one per matching call (``None`` behaves
normally; once the queue is empty every call behaves normally)::

    with FakeModifyServer() as server:
        server.script("segmind", [Fault.SERVER_500, None, Fault.rate_limited(2.0)])
        server.script("luma", [Fault.MODERATION])           # the job fails at poll time
        server.script("fal", [Fault.SERVER_502], on="poll")  # a status poll fails once
        server.script_each_job("fal", [Fault.rate_limited(1)] * 6, on="poll")  # every job's
        ...                                                                    # first 6 polls
        assert server.stats("segmind").billed == 1

Billing: ``calls`` counts every request to a create route; ``billed`` counts creates that
produced a clip (failed jobs and error answers are not billed), once each, whatever happens
to polls and downloads afterwards. Each billed call subtracts the service's cost from its
credits; a create when credits are below one call's cost gets the service's no-credits
answer.
"""

from __future__ import annotations

import base64
import binascii
import collections
import dataclasses
import hashlib
import logging
import math
import re
import signal
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable, Literal, Mapping
from urllib.parse import parse_qs, unquote_to_bytes, urlsplit

import httpx

from prefect_modify_video.testing.fake.dialect import (
    MAINTENANCE_HTML,
    MAX_MEDIA_BYTES,
    Answer,
    BadInput,
    Dialect,
    Refused,
    Route,
    RouteKind,
)
from prefect_modify_video.testing.fake.dialects import DIALECTS, SERVICES
from prefect_modify_video.testing.fake.faults import CREATE_ONLY_KINDS, Fault, FaultKind
from prefect_modify_video.testing.fake.jobs import CreateInput, Job
from prefect_modify_video.testing.fake.render import RenderError, render_modified_clip

logger = logging.getLogger(__name__)

PROVIDERS: tuple[str, ...] = SERVICES
"""The services the fake speaks (``DIALECTS``' keys)."""
DEFAULT_COSTS: dict[str, float] = {name: cls.default_cost for name, cls in DIALECTS.items()}
"""Cost of one billed call, in each service's credit unit (Luma: US cents; others: USD)."""
DEFAULT_CREDITS: dict[str, float] = {name: cls.default_credits for name, cls in DIALECTS.items()}
"""Starting balance per service, in the same units as ``DEFAULT_COSTS``."""

UploadAnswer = Literal["json", "text"]
_FAULT_TARGETS = ("create", "poll", "download")
_EACH_JOB_TARGETS = ("poll", "download")


@dataclass(frozen=True)
class ProviderStats:
    """A snapshot of one provider's counters.

    Attributes:
        calls: Requests to a create route (including refused ones).
        billed: Creates that produced a clip.
        polls: Status requests.
        downloads: Result-file downloads.
        credits: Balance left, in the provider's unit.
        peak_in_flight: Most jobs running at once (from create until they end), the account's
            concurrency as the service would see it.
    """

    calls: int
    billed: int
    polls: int
    downloads: int
    credits: float
    peak_in_flight: int = 0


@dataclass(frozen=True)
class ReceivedCall:
    """What an authenticated create call sent (never the key).

    Attributes:
        provider: ``segmind``, ``luma``, ``fal`` or ``replicate``.
        route: ``segmind.v1``, ``segmind.v2``, ``luma``, ``fal`` or ``replicate``.
        params: The non-media fields (prompt, mode, model) and how each medium came
            (``video_source``/``first_frame_source``: ``url``, ``data``, ``base64``, ``file``).
        video_bytes: Size of the clip received.
        first_frame_bytes: Size of the first frame received, if any.
        keyframes: The timed guide images received: ``(sha256 of the image, where)``, ``where`` in the
            service's unit (Runway: seconds; Luma: frame index).
    """

    provider: str
    route: str
    params: dict
    video_bytes: int
    first_frame_bytes: int | None
    keyframes: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class _StoredFile:
    data: bytes
    content_type: str
    service: str | None = None
    job: Job | None = None


class _Dropped(Exception):
    """Raised inside a route to close the socket without answering."""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    fake: FakeModifyServer


class FakeModifyServer:
    """The fake Segmind, Luma, fal and Replicate, on one local port.

    Use it as a context manager (or ``start()``/``stop()``)::

        with FakeModifyServer(polls_to_complete=2) as server:
            httpx.post(f"{server.base_url}/v1/modify-video", headers={"x-api-key": "k"},
                       json={"video_url": data_uri, "prompt": "pastel", "mode": "flex_1"})

    Options are plain attributes and may be changed while it runs.

    Args:
        host: Interface to bind.
        port: Port to bind; 0 picks a free one.
        api_key: The only key accepted (one string for all, or a mapping per provider);
            ``None`` accepts any non-empty key.
        polls_to_complete: Status polls after which a queued job shows its terminal state.
        seconds_to_complete: If set, a job also shows its terminal state this long after
            creation, polls or not.
        output_size: ``(width, height)`` of returned clips; ``None`` keeps the input's.
        rate_limit_reset_seconds: Default reset delay of a ``RATE_LIMITED`` fault.
        timeout_seconds: Default sleep of a ``TIMEOUT`` fault.
        replicate_max_wait_seconds: Longest hold of a Replicate ``Prefer: wait``.
        credits: Starting balance per provider (missing ones use ``DEFAULT_CREDITS``).
        costs: Cost of a billed call per provider (missing ones use ``DEFAULT_COSTS``).
        drift: Size of each answer's own colour cast and brightness (``drift_filter``); 0
            (the default) answers every clip with the same look.
        drift_seed: Number of the first cast; the n-th distinct clip sent gets cast
            ``drift_seed + n`` and keeps it, so neighbouring segments differ (``drift_filter``).
        upload_answer: How ``PUT /uploads/{name}`` answers the stored file's URL:
            ``"json"`` (``{"url": ...}``, the default) or ``"text"`` (a ``text/plain``
            body that is just the URL), the two forms an HTTP PUT store may use.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str | Mapping[str, str] | None = None,
        polls_to_complete: int = 2,
        seconds_to_complete: float | None = None,
        output_size: tuple[int, int] | None = None,
        rate_limit_reset_seconds: float = 1.0,
        timeout_seconds: float = 30.0,
        replicate_max_wait_seconds: float = 60.0,
        credits: Mapping[str, float] | None = None,
        costs: Mapping[str, float] | None = None,
        drift: float = 0.0,
        drift_seed: int = 0,
        upload_answer: UploadAnswer = "json",
    ):
        if upload_answer not in ("json", "text"):
            raise ValueError(f"upload_answer must be 'json' or 'text', not {upload_answer!r}")
        self.host = host
        self.port = port
        self.api_key = api_key
        self.polls_to_complete = polls_to_complete
        self.seconds_to_complete = seconds_to_complete
        self.output_size = output_size
        self.rate_limit_reset_seconds = rate_limit_reset_seconds
        self.timeout_seconds = timeout_seconds
        self.replicate_max_wait_seconds = replicate_max_wait_seconds
        self.drift = drift
        self.drift_seed = drift_seed
        self.upload_answer: UploadAnswer = upload_answer
        self.costs = {**DEFAULT_COSTS, **(costs or {})}
        self.initial_credits = {**DEFAULT_CREDITS, **(credits or {})}
        self.dialects: dict[str, Dialect] = {name: cls() for name, cls in DIALECTS.items()}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._epoch = 0
        self._clear()

    # ----------------------------------------------------------------- lifecycle

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running server."""
        if self._httpd is None:
            raise RuntimeError("the fake server is not started")
        host = "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    def _bind(self) -> _HTTPServer:
        if self._httpd is not None:
            raise RuntimeError("the fake server is already started")
        self._stopping.clear()
        httpd = _HTTPServer((self.host, self.port), _Handler)
        httpd.fake = self
        self._httpd = httpd
        self.port = httpd.server_address[1]
        return httpd

    def start(self) -> FakeModifyServer:
        """Binds and serves in a daemon thread; returns ``self``."""
        httpd = self._bind()
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-modify-server-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self, *, announce: bool = False) -> None:
        """Binds and serves in the calling thread until interrupted, then closes.

        Args:
            announce: Print the base URL once listening.
        """
        httpd = self._bind()
        if announce:
            print(f"fake modify-video server on {self.base_url} (Ctrl-C to stop)", flush=True)
        try:
            httpd.serve_forever(poll_interval=0.2)
        finally:
            self._stopping.set()
            httpd.server_close()
            self._httpd = None

    def stop(self) -> None:
        """Stops serving and closes the socket; sleeping handlers wake up."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._stopping.set()
        try:
            httpd.shutdown()
        finally:
            httpd.server_close()
            if thread is not None:
                thread.join(timeout=5)
            self._httpd = None
            self._thread = None

    def __enter__(self) -> FakeModifyServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- test API

    def script(
        self, provider: str, faults: Iterable[Fault | None], *, on: str = "create"
    ) -> None:
        """Appends faults to a provider's queue; each matching call consumes one.

        Args:
            provider: ``segmind`` (v1 and v2 share it), ``luma``, ``fal`` or ``replicate``.
            faults: ``Fault`` values; ``None`` lets that call behave normally.
            on: ``create`` (create calls), ``poll`` (status and result requests) or
                ``download`` (``GET /files/...`` of that provider's results). Job faults
                (wrong length, moderation, job failed, stuck) and no-credits are for
                ``create`` only.
        """
        faults = self._checked_faults(provider, faults, on, _FAULT_TARGETS)
        with self._lock:
            self._scripts[(provider, on)].extend(faults)

    def script_each_job(
        self, provider: str, faults: Iterable[Fault | None], *, on: str = "poll"
    ) -> None:
        """Gives every job created from now on its own copy of ``faults``.

        Each request about a job (``on="poll"``: its status and result requests;
        ``on="download"``: ``GET`` of its result file) consumes one fault of that job's
        own queue; once it is empty the provider's ``script`` queue is used, then normal
        answers. So ``script_each_job("fal", [Fault.rate_limited(1)] * 6)`` makes the first
        six polls of *every* job answer 429 with a one-second reset. Calling it again
        replaces the list for later jobs (``[]`` stops it); ``reset()`` clears it. Jobs
        created before the call keep what they had.

        Args:
            provider: ``segmind`` (v2 jobs), ``luma``, ``fal`` or ``replicate``.
            faults: ``Fault`` values; ``None`` lets that request behave normally.
            on: ``poll`` or ``download``.
        """
        faults = self._checked_faults(provider, faults, on, _EACH_JOB_TARGETS)
        with self._lock:
            self._each_job[(provider, on)] = faults

    def stats(self, provider: str) -> ProviderStats:
        """Returns a snapshot of ``provider``'s counters and credits."""
        self._check_provider(provider)
        with self._lock:
            return ProviderStats(
                calls=self._calls[provider],
                billed=self._billed[provider],
                polls=self._polls[provider],
                downloads=self._downloads[provider],
                credits=self._credits[provider],
                peak_in_flight=self._peak[provider],
            )

    def received(self, provider: str) -> list[ReceivedCall]:
        """Returns what each authenticated create call to ``provider`` sent, oldest first."""
        self._check_provider(provider)
        with self._lock:
            return list(self._received[provider])

    def create_spans(self, provider: str) -> list[tuple[float, float]]:
        """Returns ``(start, end)`` (``time.monotonic()``) of each authenticated create call to ``provider``,
        oldest first: the calls in flight over time. For a blocking route
        (Segmind v1) a span is the whole generation, latency faults included."""
        self._check_provider(provider)
        with self._lock:
            return sorted(self._create_spans[provider])

    def credits(self, provider: str) -> float:
        """Returns ``provider``'s balance."""
        return self.stats(provider).credits

    def set_credits(self, provider: str, amount: float) -> None:
        """Sets ``provider``'s balance (e.g. 0 to exhaust it)."""
        self._check_provider(provider)
        with self._lock:
            self._credits[provider] = float(amount)

    def restore_credits(self, provider: str | None = None) -> None:
        """Puts one provider's balance (or all) back to its starting value."""
        for name in [provider] if provider else PROVIDERS:
            self.set_credits(name, self.initial_credits[name])

    def reset(self) -> None:
        """Clears counters, scripts, jobs, files and received calls; restores credits.

        Work still running from before the reset is not counted afterwards.
        """
        with self._lock:
            self._epoch += 1
            self._clear()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Waits until background jobs finished their work; returns whether they all did."""
        deadline = time.monotonic() + timeout
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        return not any(worker.is_alive() for worker in workers)

    # ----------------------------------------------------------------- internals

    def _clear(self) -> None:
        self._calls = dict.fromkeys(PROVIDERS, 0)
        self._billed = dict.fromkeys(PROVIDERS, 0)
        self._polls = dict.fromkeys(PROVIDERS, 0)
        self._downloads = dict.fromkeys(PROVIDERS, 0)
        self._peak = dict.fromkeys(PROVIDERS, 0)
        self._credits = {name: float(self.initial_credits[name]) for name in PROVIDERS}
        self._scripts: dict[tuple[str, str], collections.deque] = collections.defaultdict(
            collections.deque
        )
        self._each_job: dict[tuple[str, str], list[Fault | None]] = {}
        self._received: dict[str, list[ReceivedCall]] = {name: [] for name in PROVIDERS}
        self._create_spans: dict[str, list[tuple[float, float]]] = {name: [] for name in PROVIDERS}
        self._jobs: dict[str, Job] = {}
        self._files: dict[str, _StoredFile] = {}
        self._workers: list[threading.Thread] = []
        self._casts: dict[bytes, int] = {}

    def _cast_of(self, video: bytes) -> int:
        """The colour cast of a clip: the n-th distinct clip sent gets cast ``drift_seed + n``."""
        digest = hashlib.sha256(video).digest()
        with self._lock:
            return self._casts.setdefault(digest, self.drift_seed + len(self._casts))

    @staticmethod
    def _check_provider(provider: str) -> None:
        if provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}; expected one of {PROVIDERS}")

    def _checked_faults(
        self, provider: str, faults: Iterable[Fault | None], on: str, targets: tuple[str, ...]
    ) -> list[Fault | None]:
        self._check_provider(provider)
        if on not in targets:
            raise ValueError(f"on must be one of {', '.join(map(repr, targets))}, not {on!r}")
        faults = list(faults)
        for fault in faults:
            if fault is not None and not isinstance(fault, Fault):
                raise TypeError(f"expected Fault or None, got {fault!r}")
            if fault is not None and on != "create" and fault.kind in CREATE_ONLY_KINDS:
                raise ValueError(f"{fault.kind.value} can only be scripted on create calls")
        return faults

    def _next_fault(self, provider: str, on: str, job: Job | None = None) -> Fault | None:
        """The next fault for a request: the job's own queue first, then the provider's."""
        with self._lock:
            own = job.faults.get(on) if job is not None else None
            if own:
                return own.popleft()
            queue = self._scripts.get((provider, on))
            return queue.popleft() if queue else None

    def _count(self, counter: dict[str, int], provider: str) -> None:
        with self._lock:
            counter[provider] += 1

    def _key_ok(self, provider: str, key: str | None) -> bool:
        if not key:
            return False
        expected = self.api_key
        if isinstance(expected, Mapping):
            expected = expected.get(provider)
        return expected is None or key == expected

    def _can_pay(self, provider: str) -> bool:
        with self._lock:
            return self._credits[provider] >= self.costs[provider]

    def _bill(self, provider: str, epoch: int) -> float:
        """Counts one billed call, subtracts its cost and returns the balance left.

        A call started before the last ``reset()`` (another ``epoch``) is not counted.
        """
        with self._lock:
            if epoch == self._epoch:
                self._billed[provider] += 1
                self._credits[provider] = round(self._credits[provider] - self.costs[provider], 6)
            return self._credits[provider]

    def _sleep(self, seconds: float) -> None:
        self._stopping.wait(max(0.0, seconds))

    def _store(self, name: str, stored: _StoredFile) -> None:
        with self._lock:
            self._files[name] = stored

    def _file(self, name: str) -> _StoredFile | None:
        with self._lock:
            return self._files.get(name)

    def _render(self, video: bytes, fault: Fault | None, fps: float = 24.0) -> bytes:
        factor = fault.factor if fault and fault.kind is FaultKind.WRONG_LENGTH else 1.0
        return render_modified_clip(
            video,
            fps=fps,
            output_size=self.output_size,
            length_factor=factor,
            drift=self.drift,
            cast=self._cast_of(video) if self.drift > 0 else 0,
        )

    def _load_media(self, value: Any, field_name: str) -> tuple[bytes, str]:
        """Reads a URL, data URI or bare base64 value; returns the bytes and their source."""
        if not isinstance(value, str) or not value.strip():
            raise BadInput(f"{field_name} must be a URL or a data URI")
        value = value.strip()
        if value.startswith("data:"):
            header, sep, payload = value.partition(",")
            if not sep:
                raise BadInput(f"{field_name} is a malformed data URI")
            try:
                if header.endswith(";base64"):
                    return base64.b64decode(payload), "data"
                return unquote_to_bytes(payload), "data"
            except (binascii.Error, ValueError) as exc:
                raise BadInput(f"{field_name} is a malformed data URI") from exc
        if value.startswith(("http://", "https://")):
            parts = urlsplit(value)
            match = re.fullmatch(r"/(?:uploads|files)/(.+)", parts.path)
            if match and parts.port == self.port:
                stored = self._file(match.group(1))
                if stored is not None:
                    return stored.data, "url"
            try:
                response = httpx.get(value, timeout=30.0, follow_redirects=True)
                response.raise_for_status()
            except httpx.HTTPError as exc:
                raise BadInput(f"could not download {field_name}: {exc}") from exc
            return response.content, "url"
        try:
            return base64.b64decode(value, validate=True), "base64"
        except (binascii.Error, ValueError) as exc:
            raise BadInput(f"{field_name} must be a URL, a data URI or base64") from exc

    def _new_job(
        self, dialect: Dialect, route: str, create: CreateInput, fault: Fault | None, epoch: int
    ) -> Job:
        job_id = dialect.new_job_id()
        job = Job(
            id=job_id,
            service=dialect.service,
            route=route,
            model=create.model,
            echo=create.echo,
            fault=fault,
            created_wall=datetime.now(timezone.utc),
            epoch=epoch,
            output_fps=create.output_fps,
            refusal=create.refusal,
        )
        worker = threading.Thread(
            target=self._work, args=(job, create.video), name=f"fake-job-{job_id}", daemon=True
        )
        with self._lock:
            for on in _EACH_JOB_TARGETS:
                job.faults[on] = collections.deque(self._each_job.get((dialect.service, on), ()))
            self._jobs[job_id] = job
            self._workers.append(worker)
            in_flight = sum(1 for other in self._jobs.values() if other.service == job.service and self._running(other))
            self._peak[job.service] = max(self._peak[job.service], in_flight)
        worker.start()
        return job

    def _work(self, job: Job, video: bytes) -> None:
        """Does a queued job's work in the background; bills it when it produced a clip."""
        fault = job.fault
        dialect = self.dialects[job.service]
        if fault is not None and fault.kind is FaultKind.STUCK:
            return
        try:
            if fault is not None and fault.kind is FaultKind.MODERATION:
                self._fail(job, "moderation", dialect.moderation_reason)
                if dialect.bills_moderation:
                    self._bill(job.service, job.epoch)
            elif fault is not None and fault.kind is FaultKind.JOB_FAILED:
                self._fail(job, "failed", dialect.failure_reason)
            elif job.refusal is not None:
                self._fail(job, "invalid", job.refusal)
            else:
                try:
                    clip = self._render(video, fault, job.output_fps)
                except RenderError:
                    self._fail(job, "invalid", "the input video could not be decoded")
                else:
                    name = f"{job.id}.mp4"
                    self._store(name, _StoredFile(clip, "video/mp4", job.service, job))
                    with self._lock:
                        job.result_name = name
                        job.outcome = "completed"
                        job.completed_wall = datetime.now(timezone.utc)
                        canceled = job.canceled
                    if not canceled:
                        self._bill(job.service, job.epoch)
        except Exception:  # pragma: no cover - a bug in the fake itself
            logger.exception("fake job %s crashed", job.id)
            self._fail(job, "failed", "internal error in the fake server")
        finally:
            job.done.set()

    def _fail(self, job: Job, kind: str, reason: str) -> None:
        with self._lock:
            job.outcome = "failed"
            job.failure_kind = kind
            job.failure_reason = reason
            job.completed_wall = datetime.now(timezone.utc)

    def _job(self, provider: str, job_id: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
        return job if job is not None and job.service == provider else None

    def _running(self, job: Job) -> bool:
        """Whether ``job`` still counts against the account's concurrency (not yet seen ended)."""
        if job.canceled or job.ended_seen:
            return False
        if job.fault is not None and job.fault.kind is FaultKind.STUCK:
            return True
        if self.seconds_to_complete is not None and time.monotonic() - job.created >= self.seconds_to_complete:
            return not job.done.is_set()
        return True

    def jobs(self, provider: str) -> list[Job]:
        """The jobs ``provider`` knows (not forgotten by a delete), in creation order."""
        with self._lock:
            return [job for job in self._jobs.values() if job.service == provider]

    def _job_state(self, job: Job) -> str:
        """What a job shows now: queued, running, completed, failed or canceled."""
        if job.canceled:
            return "canceled"
        started = "running" if job.polls or job.released else "queued"
        if job.fault is not None and job.fault.kind is FaultKind.STUCK:
            return started
        ready = job.released or (job.polls and job.polls >= self.polls_to_complete)
        if self.seconds_to_complete is not None:
            ready = ready or time.monotonic() - job.created >= self.seconds_to_complete
        if not ready or not job.done.wait(timeout=120):
            return started
        job.ended_seen = True
        return job.outcome


class ServiceRequest:
    """One request as a dialect sees it, and what a dialect may ask of the server.

    Attributes:
        server: The fake server (its options: ``timeout_seconds``...).
        dialect: The service answering.
        headers: The request headers.
        body: The request body.
        base_url: ``http://host:port`` as the client addressed the server.
        label: ``ReceivedCall.route`` of a create.
        epoch: The server's epoch when the call arrived (work from before a reset is not
            counted).
    """

    def __init__(
        self,
        server: FakeModifyServer,
        dialect: Dialect,
        headers: Mapping[str, str],
        body: bytes,
        base_url: str,
        label: str,
    ):
        self.server = server
        self.dialect = dialect
        self.headers = headers
        self.body = body
        self.base_url = base_url
        self.label = label
        self.epoch = server._epoch
        self.query: dict[str, list[str]] = {}
        """The request's query parameters."""

    def jobs(self) -> list[Job]:
        """The jobs of this service the server knows, in creation order."""
        return self.server.jobs(self.dialect.service)

    def media(self, value: Any, field_name: str, params: dict, key: str) -> bytes:
        """Reads a medium given as URL, data URI or base64; notes its source in ``params``.

        Raises:
            BadInput: Unreadable, or over 100 MB.
        """
        data, source = self.server._load_media(value, field_name)
        params[key] = source
        if len(data) > MAX_MEDIA_BYTES:
            raise BadInput(f"{field_name} is larger than 100 MB")
        return data

    def start_job(self, create: CreateInput, fault: Fault | None) -> Job:
        """Queues a job; its work starts in the background at once."""
        return self.server._new_job(self.dialect, self.label, create, fault, self.epoch)

    def state(self, job: Job) -> str:
        """What ``job`` shows now: queued, running, completed, failed or canceled."""
        return self.server._job_state(job)

    def release(self, job: Job) -> None:
        """Lets ``job`` show its terminal state without polls (a held request saw it end)."""
        with self.server._lock:
            job.released = True

    def cancel(self, job: Job, *, forget: bool = False, reason: str | None = None) -> bool:
        """Cancels ``job`` if it is still working; returns whether it did.

        Args:
            job: The job.
            forget: Cancel even a finished job and forget it (a delete).
            reason: Failure reason to show, if it has none.
        """
        with self.server._lock:
            cancels = forget or not job.done.is_set()
            if cancels:
                job.canceled = True
                job.failure_reason = job.failure_reason or reason
            if forget:
                self.server._jobs.pop(job.id, None)
        return cancels

    def render(self, video: bytes, fault: Fault | None) -> bytes:
        """Does the work in the request (a blocking API); ``fault`` may shorten the clip.

        Raises:
            RenderError: The video could not be decoded.
        """
        return self.server._render(video, fault)

    def store_upload(self, name: str, data: bytes, content_type: str) -> str:
        """Keeps an uploaded file under ``name`` (GET ``/uploads/{name}``); returns its URL."""
        self.server._store(name, _StoredFile(data, content_type))
        return f"{self.base_url}/uploads/{name}"

    def bill(self) -> float:
        """Bills this call once; returns the balance left."""
        return self.server._bill(self.dialect.service, self.epoch)

    def cost(self) -> float:
        """Cost of one call to this service."""
        return self.server.costs[self.dialect.service]

    def credits(self) -> float:
        """This service's balance."""
        return self.server.credits(self.dialect.service)

    def sleep(self, seconds: float) -> None:
        """Sleeps, waking up early when the server stops."""
        self.server._sleep(seconds)

    def result_url(self, job: Job) -> str:
        """Where ``job``'s result clip can be downloaded."""
        return f"{self.base_url}/files/{job.result_name}"

    def result_size(self, job: Job) -> int | None:
        """Size of ``job``'s result clip in bytes, if it has one."""
        stored = self.server._file(job.result_name or "")
        return len(stored.data) if stored else None


_OWN_ROUTES: tuple[tuple[str, str, str], ...] = (
    ("PUT", r"/uploads/(?P<name>.+)", "_upload_put"),
    ("GET", r"/uploads/(?P<name>.+)", "_upload_get"),
    ("GET", r"/files/(?P<name>[^/]+)", "_file_get"),
)
_NOT_FOUND = Answer.json(404, {"detail": "Not Found"})


def _route_table() -> list[tuple[str, re.Pattern, Route | str, str | None]]:
    """Every route: ``(method, pattern, dialect route or own handler, service)``."""
    table: list[tuple[str, re.Pattern, Route | str, str | None]] = [
        ("GET", re.compile(r"/health"), "_health", None)
    ]
    for name, cls in DIALECTS.items():
        table += [(route.method, route.pattern, route, name) for route in cls.routes]
    table += [(method, re.compile(path), handler, None) for method, path, handler in _OWN_ROUTES]
    return table


_ROUTES = _route_table()


class _Handler(BaseHTTPRequestHandler):
    """Checks, counts and applies faults the same way for every service; its dialect answers."""

    protocol_version = "HTTP/1.1"
    server_version = "FakeModifyServer/1.0"
    server: _HTTPServer

    # ----------------------------------------------------------------- plumbing

    @property
    def fake(self) -> FakeModifyServer:
        return self.server.fake

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        # The request line only: no headers, so no API keys, ever reach the log.
        logger.debug("fake server: " + format, *args)

    def _dispatch(self, method: str) -> None:
        self._answered = False
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        path = urlsplit(self.path).path
        known_path = False
        for route_method, pattern, target, service in _ROUTES:
            match = pattern.fullmatch(path)
            if not match:
                continue
            known_path = True
            if route_method != method:
                continue
            try:
                if isinstance(target, Route):
                    dialect = self.fake.dialects[service]
                    self._service_route(dialect, target, body, match.groupdict())
                else:
                    getattr(self, target)(body, **match.groupdict())
            except Refused as refusal:
                self._send(refusal.answer)
            except _Dropped:
                self._drop()
            except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                self.close_connection = True
            except Exception:
                logger.exception("fake server route %s %s crashed", method, pattern.pattern)
                if not self._answered:
                    self._send(Answer.json(500, {"detail": "internal error in the fake server"}))
            return
        self._send(Answer.json(405, {"detail": "Method Not Allowed"}) if known_path else _NOT_FOUND)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline(65537).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _base(self) -> str:
        host = self.headers.get("Host")
        return f"http://{host}" if host else self.fake.base_url

    def _send_head(self, answer: Answer) -> None:
        self._answered = True
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _send(self, answer: Answer) -> None:
        self._send_head(answer)
        self.wfile.write(answer.body)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # ----------------------------------------------------------------- faults

    def _fault_answer(
        self, dialect: Dialect, fault: Fault | None, not_found: Answer
    ) -> Answer | None:
        """Applies a fault that comes before the normal work; returns its answer, if any.

        Latency and timeout sleep and return ``None``; job faults and a dropped connection
        after acceptance are left to the route.

        Raises:
            _Dropped: A dropped connection before acceptance.
        """
        if fault is None:
            return None
        fake = self.fake
        kind = fault.kind
        if kind is FaultKind.LATENCY:
            fake._sleep(fault.seconds if fault.seconds is not None else 1.0)
        elif kind is FaultKind.TIMEOUT:
            fake._sleep(fault.seconds if fault.seconds is not None else fake.timeout_seconds)
        elif kind is FaultKind.SERVER_500:
            return dialect.server_error()
        elif kind is FaultKind.SERVER_502:
            return Answer.gateway(502, "Bad Gateway")
        elif kind is FaultKind.SERVER_504:
            return Answer.gateway(504, "Gateway Timeout")
        elif kind is FaultKind.RATE_LIMITED:
            reset = fault.seconds if fault.seconds is not None else fake.rate_limit_reset_seconds
            answer = dialect.rate_limited(reset)
            if fault.retry_after and not any(h.lower() == "retry-after" for h in answer.headers):
                seconds = str(max(1, math.ceil(reset)))
                headers = {**answer.headers, "Retry-After": seconds}
                answer = dataclasses.replace(answer, headers=headers)
            return answer
        elif kind is FaultKind.NO_CREDITS:
            return dialect.no_credits()
        elif kind is FaultKind.NOT_FOUND:
            return not_found
        elif kind is FaultKind.HTML_200:
            return Answer.html(200, MAINTENANCE_HTML)
        elif kind is FaultKind.DROPPED_CONNECTION and not fault.after_accept:
            raise _Dropped
        return None

    # ----------------------------------------------------------------- service routes

    def _service_route(self, dialect: Dialect, route: Route, body: bytes, groups: dict) -> None:
        """Does what every service does on a route of ``route.kind``; the dialect answers."""
        fake, service = self.fake, dialect.service
        request = ServiceRequest(
            fake, dialect, self.headers, body, self._base(), route.label or service
        )
        request.query = parse_qs(urlsplit(self.path).query)
        if route.kind is RouteKind.CREATE:
            fake._count(fake._calls, service)
        if not fake._key_ok(service, dialect.key_from(self.headers)):
            self._send(dialect.unauthorised())
            return
        if route.kind is RouteKind.CREATE:
            started = time.monotonic()
            try:
                self._create(request, route, groups)
            finally:
                with fake._lock:
                    fake._create_spans[service].append((started, time.monotonic()))
            return
        if route.kind is RouteKind.ACCOUNT:
            self._send(getattr(dialect, route.answer)(request, **groups))
            return
        job_id = groups.pop("job_id")
        job = fake._job(service, job_id)
        if route.kind in (RouteKind.STATUS, RouteKind.RESULT):
            fault = fake._next_fault(service, "poll", job)
            answer = self._fault_answer(dialect, fault, dialect.not_found(job_id))
            if answer is not None:
                self._send(answer)
                return
        if job is None:
            self._send(dialect.not_found(job_id))
            return
        if route.kind is RouteKind.STATUS:
            fake._count(fake._polls, service)
            with fake._lock:
                job.polls += 1
        self._send(getattr(dialect, route.answer)(request, job))

    def _create(self, request: ServiceRequest, route: Route, groups: dict) -> None:
        fake, dialect = self.fake, request.dialect
        service = dialect.service
        fault = fake._next_fault(service, "create")
        answer = self._fault_answer(dialect, fault, dialect.error(404, "Not Found"))
        if answer is not None:
            self._send(answer)
            return
        if not fake._can_pay(service):
            self._send(dialect.no_credits())
            return
        try:
            create = dialect.parse_create(request, **groups)
        except BadInput as problem:
            self._send(dialect.invalid_request(problem))
            return
        call = ReceivedCall(
            provider=service,
            route=request.label,
            params=create.params,
            video_bytes=len(create.video),
            first_frame_bytes=None if create.first_frame is None else len(create.first_frame),
            keyframes=tuple((hashlib.sha256(image).hexdigest(), where) for image, where in create.keyframes),
        )
        with fake._lock:
            fake._received[service].append(call)
        answer = getattr(dialect, route.answer)(request, create, fault)
        if fault is not None and fault.kind is FaultKind.DROPPED_CONNECTION:
            raise _Dropped
        self._send(answer)

    # ----------------------------------------------------------------- own routes

    def _health(self, body: bytes) -> None:
        self._send(Answer.json(200, {"ok": True}))

    def _upload_put(self, body: bytes, name: str) -> None:
        content_type = self.headers.get("Content-Type") or "application/octet-stream"
        self.fake._store(name, _StoredFile(body, content_type))
        url = f"{self._base()}/uploads/{name}"
        if self.fake.upload_answer == "text":
            self._send(Answer(200, url.encode(), "text/plain; charset=utf-8"))
        else:
            self._send(Answer.json(200, {"url": url}))

    def _upload_get(self, body: bytes, name: str) -> None:
        stored = self.fake._file(name)
        self._send(_NOT_FOUND if stored is None else Answer(200, stored.data, stored.content_type))

    def _file_get(self, body: bytes, name: str) -> None:
        """A result clip; the service's (or its job's) download faults apply."""
        fake = self.fake
        stored = fake._file(name)
        if stored is None:
            self._send(_NOT_FOUND)
            return
        answer = Answer(200, stored.data, stored.content_type)
        if stored.service is not None:
            fault = fake._next_fault(stored.service, "download", stored.job)
            refusal = self._fault_answer(fake.dialects[stored.service], fault, _NOT_FOUND)
            if refusal is not None:
                self._send(refusal)
                return
            fake._count(fake._downloads, stored.service)
            if fault is not None and fault.kind is FaultKind.DROPPED_CONNECTION:
                self._send_head(answer)
                self.wfile.write(answer.body[: len(answer.body) // 2])
                self.wfile.flush()
                raise _Dropped
        self._send(answer)


def run_fake_server(port: int, host: str = "127.0.0.1", **options: Any) -> None:
    """Serves the fake modify-video services until interrupted (for the CLI).

    Ctrl-C (SIGINT) and SIGTERM stop it, also when it was started with SIGINT ignored (a
    background job of a shell, a test runner's worker), which Python would otherwise keep.

    Args:
        port: Port to listen on (0 picks a free one).
        host: Interface to bind.
        **options: Keyword options of ``FakeModifyServer`` (``polls_to_complete``...).
    """
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, signal.default_int_handler)
    server = FakeModifyServer(host=host, port=port, **options)
    try:
        server.serve_forever(announce=True)
    except KeyboardInterrupt:
        pass
