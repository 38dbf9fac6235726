"""A fake modify-video server that speaks Segmind, Luma, fal and Replicate over real HTTP.

It is a stdlib ``ThreadingHTTPServer`` on 127.0.0.1 in a daemon thread, like httpx's
``TestServer``: clients under test point their ``base_url`` at ``server.base_url`` and talk
real HTTP to it. The clip it returns is made by ffmpeg from the uploaded one (hue turned,
channels graded warm), at 24 fps, without audio, H.264 yuv420p, the input's size and length.
With ``drift`` above 0 each answer also gets its own colour cast and brightness, as real
answers do (``drift_filter``), so joins show seams to correct.

Routes (all on one server; the same paths as the real services)::

    POST   /v1/modify-video                                    Segmind v1, blocking: 200 MP4
    POST   /v2/modify-video                                    Segmind v2: queued request
    GET    /v2/requests/{id}/status                            Segmind v2 status (= poll_url)
    GET    /v2/requests/{id}/response                          Segmind v2 result: {"output": url}
    POST   /dream-machine/v1/generations/video/modify          Luma: 201 Generation
    GET    /dream-machine/v1/generations/{id}                  Luma generation
    DELETE /dream-machine/v1/generations/{id}                  Luma delete: 204
    GET    /dream-machine/v1/credits                           Luma: {"credit_balance": cents}
    POST   /fal-ai/luma-dream-machine/ray-2/modify             fal queue submit (also ray-2-flash)
    GET    /fal-ai/luma-dream-machine/requests/{id}/status     fal status
    GET    /fal-ai/luma-dream-machine/requests/{id}            fal result: {"video": {"url"}}
    PUT    /fal-ai/luma-dream-machine/requests/{id}/cancel     fal cancel
    POST   /v1/models/luma/modify-video/predictions            Replicate: 201 prediction
    GET    /v1/predictions/{id}                                Replicate prediction
    POST   /v1/predictions/{id}/cancel                         Replicate cancel
    PUT    /uploads/{name}                                     store a file: {"url": GET url}
    GET    /uploads/{name}                                     an uploaded file (no auth)
    GET    /files/{name}                                       a result clip (no auth)
    GET    /health                                             {"ok": true}

Auth headers: Segmind ``x-api-key``, Luma ``Authorization: Bearer``, fal
``Authorization: Key``, Replicate ``Authorization: Bearer`` (or ``Token``). Any non-empty key
passes unless ``api_key`` is given; a wrong or missing one answers 401.

Queued jobs answer ``queued`` on create, ``running`` from the first poll and their terminal
state from poll number ``polls_to_complete`` (or ``seconds_to_complete`` after creation, or at
once after a Replicate ``Prefer: wait``). The ffmpeg work runs in the background from creation.

Faults are scripted per provider and consumed one per authenticated create call (``None``
behaves normally; once the queue is empty every call behaves normally)::

    with FakeModifyServer() as server:
        server.script("segmind", [Fault.SERVER_500, None, Fault.rate_limited(2.0)])
        server.script("luma", [Fault.MODERATION])           # the job fails at poll time
        server.script("fal", [Fault.SERVER_502], on="poll")  # a status poll fails once
        ...
        assert server.stats("segmind").billed == 1

Billing: ``calls`` counts every request to a create route; ``billed`` counts creates that
produced a clip (failed jobs and error answers are not billed). Each billed call subtracts
the provider's cost from its credits; a create when credits are below one call's cost gets the
provider's no-credits answer.
"""

from __future__ import annotations

import base64
import binascii
import collections
import email.parser
import email.policy
import enum
import hashlib
import json
import logging
import math
import os
import random
import re
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping
from urllib.parse import unquote_to_bytes, urlsplit

import httpx

logger = logging.getLogger(__name__)

PROVIDERS: tuple[str, ...] = ("segmind", "luma", "fal", "replicate")
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
LUMA_MODELS: tuple[str, ...] = ("ray-2", "ray-flash-2")
MAX_MEDIA_BYTES = 100_000_000

DEFAULT_COSTS: dict[str, float] = {"segmind": 0.60, "luma": 175.0, "fal": 1.75, "replicate": 1.75}
"""Cost of one billed call, in each provider's credit unit (Luma: US cents; others: USD)."""
DEFAULT_CREDITS: dict[str, float] = {
    "segmind": 100.0,
    "luma": 50_000.0,
    "fal": 100.0,
    "replicate": 100.0,
}
"""Starting balance per provider, in the same units as ``DEFAULT_COSTS``."""

VIDEO_FILTER = "hue=h=90:s=1.5,colorchannelmixer=rr=1:gg=0.8:bb=0.6"
"""The visible change the fake applies: hue turned 90°, then a warm grade (moves grey too)."""

DRIFT_CHANNEL_GAIN = 0.08
"""At ``drift=1`` each channel's gain is 1 ± 0.04..0.08 (sign and size random per answer)."""
DRIFT_BRIGHTNESS = 0.04
"""At ``drift=1`` the brightness moves by ± 0.02..0.04 of the full range (about 5-10 levels)."""

_FFMPEG = os.environ.get("PREFECT_MODIFY_VIDEO_FFMPEG", "ffmpeg")
_FFPROBE = os.environ.get("PREFECT_MODIFY_VIDEO_FFPROBE", "ffprobe")


class FaultKind(str, enum.Enum):
    """What a scripted fault does."""

    SERVER_500 = "server_500"
    """500 with the provider's JSON error body."""
    SERVER_502 = "server_502"
    """502 with a gateway's HTML page."""
    SERVER_504 = "server_504"
    """504 with a gateway's HTML page."""
    RATE_LIMITED = "rate_limited"
    """429 with the provider's reset header or body."""
    NO_CREDITS = "no_credits"
    """The provider's no-credits answer (Segmind 406, Luma 400, fal 403, Replicate 402)."""
    TIMEOUT = "timeout"
    """Sleeps (longer than a client's timeout), then handles the request normally."""
    LATENCY = "latency"
    """Sleeps, then handles the request normally."""
    DROPPED_CONNECTION = "dropped_connection"
    """Closes the socket without answering."""
    HTML_200 = "html_200"
    """200 with an HTML page instead of the expected body."""
    WRONG_LENGTH = "wrong_length"
    """The returned clip is ``factor`` times the input's length (billed)."""
    MODERATION = "moderation"
    """The content is refused (Segmind v1 400; queued jobs fail with a moderation reason)."""
    JOB_FAILED = "job_failed"
    """The job ends failed (Segmind v1: 500); not billed."""
    STUCK = "stuck"
    """The job never finishes (Segmind v1: hangs ``timeout_seconds``, then 504)."""


_JOB_KINDS = frozenset(
    {FaultKind.WRONG_LENGTH, FaultKind.MODERATION, FaultKind.JOB_FAILED, FaultKind.STUCK}
)


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour; use the constants or the constructors.

    Attributes:
        kind: What happens.
        seconds: Sleep of ``LATENCY``/``TIMEOUT`` or reset delay of ``RATE_LIMITED``;
            ``None`` takes the server's default.
        factor: Length of a ``WRONG_LENGTH`` clip relative to the input.
        after_accept: For ``DROPPED_CONNECTION``: do the work (and bill it) before dropping,
            the ambiguous case where a retry would pay twice.
    """

    kind: FaultKind
    seconds: float | None = None
    factor: float = 0.5
    after_accept: bool = False

    SERVER_500: ClassVar[Fault]
    SERVER_502: ClassVar[Fault]
    SERVER_504: ClassVar[Fault]
    RATE_LIMITED: ClassVar[Fault]
    NO_CREDITS: ClassVar[Fault]
    TIMEOUT: ClassVar[Fault]
    LATENCY: ClassVar[Fault]
    DROPPED_CONNECTION: ClassVar[Fault]
    HTML_200: ClassVar[Fault]
    WRONG_LENGTH: ClassVar[Fault]
    MODERATION: ClassVar[Fault]
    JOB_FAILED: ClassVar[Fault]
    STUCK: ClassVar[Fault]

    @classmethod
    def rate_limited(cls, reset_after: float | None = None) -> Fault:
        """A 429 whose reset time is ``reset_after`` seconds ahead."""
        return cls(FaultKind.RATE_LIMITED, seconds=reset_after)

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
        """Returns a clip ``factor`` times as long as the input."""
        return cls(FaultKind.WRONG_LENGTH, factor=factor)

    @classmethod
    def dropped_connection(cls, after_accept: bool = False) -> Fault:
        """Closes the socket unanswered; with ``after_accept`` the call is still billed."""
        return cls(FaultKind.DROPPED_CONNECTION, after_accept=after_accept)


for _kind in FaultKind:
    setattr(Fault, _kind.name, Fault(_kind, seconds=1.0 if _kind is FaultKind.LATENCY else None))
del _kind


@dataclass(frozen=True)
class ProviderStats:
    """A snapshot of one provider's counters.

    Attributes:
        calls: Requests to a create route (including refused ones).
        billed: Creates that produced a clip.
        polls: Status requests.
        downloads: Result-file downloads.
        credits: Balance left, in the provider's unit.
    """

    calls: int
    billed: int
    polls: int
    downloads: int
    credits: float


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
    """

    provider: str
    route: str
    params: dict
    video_bytes: int
    first_frame_bytes: int | None


class RenderError(RuntimeError):
    """Raised when ffmpeg cannot make a clip from the uploaded bytes."""


def drift_filter(video: bytes, drift: float, seed: int = 0) -> str | None:
    """The colour cast one answer gets: an ffmpeg filter, or ``None`` when ``drift`` is 0.

    Each channel's gain moves by ``drift * DRIFT_CHANNEL_GAIN`` times a random sign and a
    random size in 0.5..1, and the brightness by ``drift * DRIFT_BRIGHTNESS`` the same way,
    so every answer drifts visibly but each its own way. The draw depends only on ``seed``
    and the uploaded bytes: the same segment gets the same cast again, whatever the order in
    which concurrent calls arrive.

    Args:
        video: The uploaded clip.
        drift: Size of the drift; 0 gives none, 1 is a clearly visible cast.
        seed: Seed combined with the clip's content.
    """
    if drift <= 0:
        return None
    digest = hashlib.sha256(f"{seed}:".encode() + hashlib.sha256(video).digest()).digest()
    draw = random.Random(digest)

    def amount(scale: float) -> float:
        return draw.choice((-1.0, 1.0)) * draw.uniform(0.5, 1.0) * scale * drift

    red, green, blue = (1 + amount(DRIFT_CHANNEL_GAIN) for _ in range(3))
    brightness = amount(DRIFT_BRIGHTNESS)
    return f"colorchannelmixer=rr={red:.4f}:gg={green:.4f}:bb={blue:.4f},eq=brightness={brightness:.4f}"


def render_modified_clip(
    video: bytes,
    *,
    output_size: tuple[int, int] | None = None,
    length_factor: float = 1.0,
    drift: float = 0.0,
    drift_seed: int = 0,
) -> bytes:
    """Makes the fake service's answer: a colour-changed 24 fps silent H.264 MP4.

    Args:
        video: The uploaded clip.
        output_size: ``(width, height)`` of the answer; ``None`` keeps the input's size.
        length_factor: Length of the answer relative to the input (1.0: the same).
        drift: Size of this answer's own colour cast (``drift_filter``); 0 adds none.
        drift_seed: Seed of the cast.

    Returns:
        The MP4 bytes.

    Raises:
        RenderError: ffmpeg or ffprobe failed (not a video, no video stream...).
    """
    with tempfile.TemporaryDirectory(prefix="fake-modify-") as tmp:
        source = Path(tmp) / "in.mp4"
        target = Path(tmp) / "out.mp4"
        source.write_bytes(video)
        filters = ["fps=24", VIDEO_FILTER]
        cast = drift_filter(video, drift, drift_seed)
        if cast is not None:
            filters.append(cast)
        if output_size is not None:
            filters.append(f"scale={int(output_size[0])}:{int(output_size[1])},setsar=1")
        args = [_FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", str(source)]
        args += ["-vf", ",".join(filters), "-an", "-sn", "-dn"]
        args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
        args += ["-movflags", "+faststart"]
        if length_factor != 1.0:
            args += ["-t", f"{_probe_duration(source) * length_factor:.3f}"]
        args.append(str(target))
        _run(args)
        return target.read_bytes()


def _probe_duration(path: Path) -> float:
    out = _run(
        [_FFPROBE, "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)]
    )
    try:
        return float(out.strip())
    except ValueError as exc:
        raise RenderError(f"no duration in {out!r}") from exc


def _run(args: list[str]) -> str:
    try:
        done = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RenderError(f"{args[0]} failed: {exc}") from exc
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip()[-500:]
        raise RenderError(f"{args[0]} exited with {done.returncode}: {tail}")
    return done.stdout.decode(errors="replace")


class _BadInput(Exception):
    """A create request the service would refuse with its validation error."""


class _Dropped(Exception):
    """Raised inside a route to close the socket without answering."""


@dataclass
class _Job:
    id: str
    provider: str
    route: str
    model: str
    echo: dict
    fault: Fault | None
    created_wall: datetime
    epoch: int = 0
    created: float = field(default_factory=time.monotonic)
    polls: int = 0
    released: bool = False
    canceled: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    outcome: str = "running"
    failure_kind: str | None = None
    failure_reason: str | None = None
    result_name: str | None = None
    completed_wall: datetime | None = None


@dataclass
class _CreateInput:
    video: bytes
    first_frame: bytes | None
    model: str
    echo: dict
    params: dict


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
        drift_seed: Seed of the casts; with the same seed a segment gets the same cast.
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
    ):
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
        self.costs = {**DEFAULT_COSTS, **(costs or {})}
        self.initial_credits = {**DEFAULT_CREDITS, **(credits or {})}
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
        self._check_provider(provider)
        if on not in ("create", "poll", "download"):
            raise ValueError(f"on must be 'create', 'poll' or 'download', not {on!r}")
        faults = list(faults)
        for fault in faults:
            if fault is not None and not isinstance(fault, Fault):
                raise TypeError(f"expected Fault or None, got {fault!r}")
            if (
                fault is not None
                and on != "create"
                and (fault.kind in _JOB_KINDS or fault.kind is FaultKind.NO_CREDITS)
            ):
                raise ValueError(f"{fault.kind.value} can only be scripted on create calls")
        with self._lock:
            self._scripts[(provider, on)].extend(faults)

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
            )

    def received(self, provider: str) -> list[ReceivedCall]:
        """Returns what each authenticated create call to ``provider`` sent, oldest first."""
        self._check_provider(provider)
        with self._lock:
            return list(self._received[provider])

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
        self._credits = {name: float(self.initial_credits[name]) for name in PROVIDERS}
        self._scripts: dict[tuple[str, str], collections.deque] = collections.defaultdict(
            collections.deque
        )
        self._received: dict[str, list[ReceivedCall]] = {name: [] for name in PROVIDERS}
        self._jobs: dict[str, _Job] = {}
        self._files: dict[str, tuple[bytes, str, str | None]] = {}
        self._workers: list[threading.Thread] = []

    @staticmethod
    def _check_provider(provider: str) -> None:
        if provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}; expected one of {PROVIDERS}")

    def _next_fault(self, provider: str, on: str) -> Fault | None:
        with self._lock:
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

    def _store(self, name: str, data: bytes, content_type: str, provider: str | None) -> None:
        with self._lock:
            self._files[name] = (data, content_type, provider)

    def _file(self, name: str) -> tuple[bytes, str, str | None] | None:
        with self._lock:
            return self._files.get(name)

    def _load_media(self, value: Any, field_name: str) -> tuple[bytes, str]:
        """Reads a URL, data URI or bare base64 value; returns the bytes and their source."""
        if not isinstance(value, str) or not value.strip():
            raise _BadInput(f"{field_name} must be a URL or a data URI")
        value = value.strip()
        if value.startswith("data:"):
            header, sep, payload = value.partition(",")
            if not sep:
                raise _BadInput(f"{field_name} is a malformed data URI")
            try:
                if header.endswith(";base64"):
                    return base64.b64decode(payload), "data"
                return unquote_to_bytes(payload), "data"
            except (binascii.Error, ValueError) as exc:
                raise _BadInput(f"{field_name} is a malformed data URI") from exc
        if value.startswith(("http://", "https://")):
            parts = urlsplit(value)
            match = re.fullmatch(r"/(?:uploads|files)/(.+)", parts.path)
            if match and parts.port == self.port:
                stored = self._file(match.group(1))
                if stored is not None:
                    return stored[0], "url"
            try:
                response = httpx.get(value, timeout=30.0, follow_redirects=True)
                response.raise_for_status()
            except httpx.HTTPError as exc:
                raise _BadInput(f"could not download {field_name}: {exc}") from exc
            return response.content, "url"
        try:
            return base64.b64decode(value, validate=True), "base64"
        except (binascii.Error, ValueError) as exc:
            raise _BadInput(f"{field_name} must be a URL, a data URI or base64") from exc

    def _new_job(
        self, provider: str, route: str, create: _CreateInput, fault: Fault | None, epoch: int
    ) -> _Job:
        job_id = uuid.uuid4().hex[:26] if provider == "replicate" else str(uuid.uuid4())
        job = _Job(
            id=job_id,
            provider=provider,
            route=route,
            model=create.model,
            echo=create.echo,
            fault=fault,
            created_wall=datetime.now(timezone.utc),
            epoch=epoch,
        )
        worker = threading.Thread(
            target=self._work, args=(job, create.video), name=f"fake-job-{job_id}", daemon=True
        )
        with self._lock:
            self._jobs[job_id] = job
            self._workers.append(worker)
        worker.start()
        return job

    def _work(self, job: _Job, video: bytes) -> None:
        """Does a queued job's work in the background; bills it when it produced a clip."""
        fault = job.fault
        if fault is not None and fault.kind is FaultKind.STUCK:
            return
        try:
            if fault is not None and fault.kind is FaultKind.MODERATION:
                self._fail(job, "moderation", _MODERATION_REASONS[job.provider])
            elif fault is not None and fault.kind is FaultKind.JOB_FAILED:
                self._fail(job, "failed", _FAILED_REASONS[job.provider])
            else:
                factor = fault.factor if fault and fault.kind is FaultKind.WRONG_LENGTH else 1.0
                try:
                    clip = render_modified_clip(
                        video,
                        output_size=self.output_size,
                        length_factor=factor,
                        drift=self.drift,
                        drift_seed=self.drift_seed,
                    )
                except RenderError:
                    self._fail(job, "invalid", "the input video could not be decoded")
                else:
                    name = f"{job.id}.mp4"
                    self._store(name, clip, "video/mp4", job.provider)
                    with self._lock:
                        job.result_name = name
                        job.outcome = "completed"
                        job.completed_wall = datetime.now(timezone.utc)
                        canceled = job.canceled
                    if not canceled:
                        self._bill(job.provider, job.epoch)
        except Exception:  # pragma: no cover - a bug in the fake itself
            logger.exception("fake job %s crashed", job.id)
            self._fail(job, "failed", "internal error in the fake server")
        finally:
            job.done.set()

    def _fail(self, job: _Job, kind: str, reason: str) -> None:
        with self._lock:
            job.outcome = "failed"
            job.failure_kind = kind
            job.failure_reason = reason
            job.completed_wall = datetime.now(timezone.utc)

    def _job(self, provider: str, job_id: str) -> _Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
        return job if job is not None and job.provider == provider else None

    def _job_state(self, job: _Job) -> str:
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
        return job.outcome


_MODERATION_REASONS = {
    "segmind": "Content moderation failed: the input was flagged as NSFW",
    "luma": "Advanced moderation failed",
    "fal": "The content could not be processed because it was flagged by a content checker.",
    "replicate": (
        "The input or output was flagged as sensitive (NSFW). "
        "Please try again with different inputs. (E005)"
    ),
}
_FAILED_REASONS = {
    "segmind": "Generation failed",
    "luma": "Job failed: internal error during generation",
    "fal": "Internal error while processing the request",
    "replicate": "Prediction failed: internal error during generation",
}
_GATEWAY_HTML = (
    "<html>\r\n<head><title>{code} {phrase}</title></head>\r\n<body>\r\n"
    "<center><h1>{code} {phrase}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
_MAINTENANCE_HTML = (
    "<!DOCTYPE html><html><head><title>Maintenance</title></head>"
    "<body><h1>We'll be right back</h1><p>The service is under maintenance.</p></body></html>"
)

_FAL_REQUEST = r"/fal-ai/luma-dream-machine(?:/[^/]+)*?/requests/(?P<job_id>[^/]+)"
_ROUTES: list[tuple[str, re.Pattern, str]] = [
    (method, re.compile(pattern), name)
    for method, pattern, name in [
        ("GET", r"/health", "health"),
        ("POST", r"/v1/modify-video", "segmind_v1_create"),
        ("POST", r"/v2/modify-video", "segmind_v2_create"),
        ("GET", r"/v2/requests/(?P<job_id>[^/]+)/status", "segmind_v2_status"),
        ("GET", r"/v2/requests/(?P<job_id>[^/]+)(?:/response)?", "segmind_v2_response"),
        ("POST", r"/dream-machine/v1/generations/video/modify", "luma_create"),
        ("GET", r"/dream-machine/v1/credits", "luma_credits"),
        ("GET", r"/dream-machine/v1/generations/(?P<job_id>[^/]+)", "luma_get"),
        ("DELETE", r"/dream-machine/v1/generations/(?P<job_id>[^/]+)", "luma_delete"),
        ("POST", r"/fal-ai/luma-dream-machine/(?P<variant>ray-2|ray-2-flash)/modify", "fal_create"),
        ("GET", _FAL_REQUEST + "/status", "fal_status"),
        ("PUT", _FAL_REQUEST + "/cancel", "fal_cancel"),
        ("GET", _FAL_REQUEST, "fal_result"),
        ("POST", r"/v1/models/luma/modify-video/predictions", "replicate_create"),
        ("GET", r"/v1/predictions/(?P<job_id>[^/]+)", "replicate_get"),
        ("POST", r"/v1/predictions/(?P<job_id>[^/]+)/cancel", "replicate_cancel"),
        ("PUT", r"/uploads/(?P<name>.+)", "upload_put"),
        ("GET", r"/uploads/(?P<name>.+)", "upload_get"),
        ("GET", r"/files/(?P<name>[^/]+)", "file_get"),
    ]
]


def _echo(value: Any) -> Any:
    """A copy of a request body for echoing back, with data URIs shortened."""
    if isinstance(value, dict):
        return {key: _echo(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_echo(item) for item in value]
    if isinstance(value, str) and value.startswith("data:"):
        return value.partition(",")[0] + ",..."
    return value


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


class _Handler(BaseHTTPRequestHandler):
    """Routes one request to the fake service it names."""

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
        for route_method, pattern, name in _ROUTES:
            match = pattern.fullmatch(path)
            if not match:
                continue
            known_path = True
            if route_method != method:
                continue
            try:
                getattr(self, f"_route_{name}")(body, **match.groupdict())
            except _Dropped:
                self._drop()
            except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                self.close_connection = True
            except Exception:
                logger.exception("fake server route %s crashed", name)
                if not self._answered:
                    self._json(500, {"detail": "internal error in the fake server"})
            return
        if known_path:
            self._json(405, {"detail": "Method Not Allowed"})
        else:
            self._json(404, {"detail": "Not Found"})

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

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._answered = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _html(self, status: int, text: str) -> None:
        self._send(status, text.encode(), "text/html; charset=utf-8")

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _error(self, provider: str, status: int, message: Any, **extra: Any) -> None:
        """Answers an error in the provider's body shape."""
        if provider == "segmind":
            payload: dict = {"error": message}
        elif provider == "replicate":
            payload = {"title": HTTPStatus(status).phrase, "detail": message, "status": status}
        else:
            payload = {"detail": message}
        payload.update(extra)
        self._json(status, payload)

    # ----------------------------------------------------------------- auth and faults

    def _authorised(self, provider: str) -> bool:
        """Checks the provider's auth header; answers 401 and returns False when wrong."""
        if provider == "segmind":
            key = self.headers.get("x-api-key")
        else:
            scheme, _, key = self.headers.get("Authorization", "").strip().partition(" ")
            schemes = {"luma": ("bearer",), "fal": ("key",), "replicate": ("bearer", "token")}
            if scheme.lower() not in schemes[provider]:
                key = None
        if self.fake._key_ok(provider, (key or "").strip() or None):
            return True
        messages = {
            "segmind": "Unauthorized: invalid or missing API key",
            "luma": "Invalid authentication credentials",
            "fal": "Authentication is required to access this application.",
            "replicate": "You did not pass a valid authentication token",
        }
        if provider == "replicate":
            self._json(
                401, {"title": "Unauthenticated", "detail": messages[provider], "status": 401}
            )
        else:
            self._error(provider, 401, messages[provider])
        return False

    def _rate_limited(self, provider: str, reset_after: float) -> None:
        reset_at = datetime.now(timezone.utc) + timedelta(seconds=reset_after)
        if provider == "segmind":
            self._json(
                429,
                {"error": "Rate limit exceeded"},
                {"x-rate-limit-reset-at-utc": reset_at.isoformat()},
            )
        elif provider == "replicate":
            seconds = max(1, math.ceil(reset_after))
            unit = "second" if seconds == 1 else "seconds"
            detail = f"Request was throttled. Expected available in {seconds} {unit}."
            self._json(
                429,
                {"title": "Request was throttled.", "detail": detail, "status": 429},
                {"retry-after": str(seconds)},
            )
        else:
            self._error(provider, 429, "Too many requests: rate limit exceeded")

    def _no_credits(self, provider: str) -> None:
        if provider == "segmind":
            self._json(406, {"error": "Not enough credits"})
        elif provider == "luma":
            self._json(
                400, {"detail": "Insufficient credits: top up at https://lumalabs.ai/api/billing"}
            )
        elif provider == "fal":
            self._json(
                403,
                {"detail": "User is locked. Reason: Exhausted balance. "
                 "Top up your balance at fal.ai/dashboard/billing."},
            )
        else:
            self._json(
                402,
                {
                    "title": "Insufficient credit",
                    "detail": "You have insufficient credit to run this model. Go to "
                    "https://replicate.com/account/billing#billing to purchase credit.",
                    "status": 402,
                },
            )

    def _answer_fault(self, provider: str, fault: Fault | None) -> bool:
        """Applies a fault that comes before the normal work; returns True if it answered.

        Latency and timeout sleep and return False; job faults and a dropped connection
        after acceptance are left to the route.
        """
        if fault is None:
            return False
        fake = self.fake
        kind = fault.kind
        if kind is FaultKind.LATENCY:
            fake._sleep(fault.seconds if fault.seconds is not None else 1.0)
        elif kind is FaultKind.TIMEOUT:
            fake._sleep(fault.seconds if fault.seconds is not None else fake.timeout_seconds)
        elif kind is FaultKind.SERVER_500:
            self._error(provider, 500, "Internal server error")
            return True
        elif kind in (FaultKind.SERVER_502, FaultKind.SERVER_504):
            status = HTTPStatus(502 if kind is FaultKind.SERVER_502 else 504)
            self._html(status.value, _GATEWAY_HTML.format(code=status.value, phrase=status.phrase))
            return True
        elif kind is FaultKind.RATE_LIMITED:
            reset = fault.seconds if fault.seconds is not None else fake.rate_limit_reset_seconds
            self._rate_limited(provider, reset)
            return True
        elif kind is FaultKind.NO_CREDITS:
            self._no_credits(provider)
            return True
        elif kind is FaultKind.HTML_200:
            self._html(200, _MAINTENANCE_HTML)
            return True
        elif kind is FaultKind.DROPPED_CONNECTION and not fault.after_accept:
            raise _Dropped
        return False

    def _begin_create(self, provider: str) -> tuple[bool, Fault | None]:
        """Counts a create call, checks auth, credits and the scripted fault.

        Returns:
            ``(go_on, fault)``: ``go_on`` is False when an answer was already sent.
        """
        self.fake._count(self.fake._calls, provider)
        self._call_epoch = self.fake._epoch
        if not self._authorised(provider):
            return False, None
        fault = self.fake._next_fault(provider, "create")
        if self._answer_fault(provider, fault):
            return False, None
        if not self.fake._can_pay(provider):
            self._no_credits(provider)
            return False, None
        return True, fault

    def _begin_poll(
        self, provider: str, job_id: str, *, count: bool, faults: bool = True
    ) -> _Job | None:
        """Checks auth and poll faults, finds the job and counts the poll.

        Args:
            provider: Whose job it is.
            job_id: The id in the path.
            count: Count a status poll (it moves the job along).
            faults: Consume a fault scripted ``on="poll"`` (not for cancel/delete).
        """
        if not self._authorised(provider):
            return None
        if faults and self._answer_fault(provider, self.fake._next_fault(provider, "poll")):
            return None
        job = self.fake._job(provider, job_id)
        if job is None:
            self._error(provider, 404, f"Request {job_id} not found")
            return None
        if count:
            self.fake._count(self.fake._polls, provider)
            with self.fake._lock:
                job.polls += 1
        return job

    def _record(self, provider: str, route: str, create: _CreateInput) -> None:
        call = ReceivedCall(
            provider=provider,
            route=route,
            params=create.params,
            video_bytes=len(create.video),
            first_frame_bytes=None if create.first_frame is None else len(create.first_frame),
        )
        with self.fake._lock:
            self.fake._received[provider].append(call)

    def _media(self, value: Any, field_name: str, params: dict, key: str) -> bytes:
        data, source = self.fake._load_media(value, field_name)
        params[key] = source
        if len(data) > MAX_MEDIA_BYTES:
            raise _BadInput(f"{field_name} is larger than 100 MB")
        return data

    def _result_url(self, job: _Job) -> str:
        return f"{self._base()}/files/{job.result_name}"

    # ----------------------------------------------------------------- misc routes

    def _route_health(self, body: bytes) -> None:
        self._json(200, {"ok": True})

    def _route_upload_put(self, body: bytes, name: str) -> None:
        content_type = self.headers.get("Content-Type") or "application/octet-stream"
        self.fake._store(name, body, content_type, None)
        self._json(200, {"url": f"{self._base()}/uploads/{name}"})

    def _route_upload_get(self, body: bytes, name: str) -> None:
        stored = self.fake._file(name)
        if stored is None:
            self._json(404, {"detail": "Not Found"})
        else:
            self._send(200, stored[0], stored[1])

    def _route_file_get(self, body: bytes, name: str) -> None:
        stored = self.fake._file(name)
        if stored is None:
            self._json(404, {"detail": "Not Found"})
            return
        data, content_type, provider = stored
        if provider is not None:
            if self._answer_fault(provider, self.fake._next_fault(provider, "download")):
                return
            self.fake._count(self.fake._downloads, provider)
        self._send(200, data, content_type)

    # ----------------------------------------------------------------- Segmind

    def _segmind_fields(self, body: bytes) -> tuple[dict, dict[str, bytes]]:
        """Parses a Segmind JSON or multipart body into text fields and files."""
        content_type = self.headers.get("Content-Type", "")
        if content_type.lower().startswith("application/json"):
            try:
                fields = json.loads(body or b"{}")
            except ValueError as exc:
                raise _BadInput("the body is not valid JSON") from exc
            if not isinstance(fields, dict):
                raise _BadInput("the JSON body must be an object")
            return fields, {}
        if content_type.lower().startswith("multipart/form-data"):
            return _parse_multipart(content_type, body)
        raise _WrongContentType(content_type)

    def _segmind_input(self, body: bytes) -> _CreateInput:
        fields, files = self._segmind_fields(body)
        params: dict = {
            "prompt": str(fields.get("prompt") or ""),
            "mode": str(fields.get("mode") or "adhere_1"),
        }
        if params["mode"] not in MODES:
            raise _BadInput(f"mode must be one of {', '.join(MODES)}")
        if "video_url" in files:
            video, params["video_source"] = files["video_url"], "file"
        elif fields.get("video_url"):
            video = self._media(fields["video_url"], "video_url", params, "video_source")
        else:
            raise _BadInput("video_url is required")
        first_frame = None
        if "first_frame_url" in files:
            first_frame, params["first_frame_source"] = files["first_frame_url"], "file"
        elif fields.get("first_frame_url"):
            first_frame = self._media(
                fields["first_frame_url"], "first_frame_url", params, "first_frame_source"
            )
        return _CreateInput(video, first_frame, "ray-2", _echo(fields), params)

    def _segmind_parse(self, body: bytes, route: str) -> _CreateInput | None:
        try:
            create = self._segmind_input(body)
        except _WrongContentType as exc:
            self._json(406, {"error": f"Unsupported Content-Type {exc.args[0]!r}; "
                             "send application/json or multipart/form-data"})
            return None
        except _BadInput as exc:
            self._json(400, {"error": str(exc)})
            return None
        self._record("segmind", route, create)
        return create

    def _route_segmind_v1_create(self, body: bytes) -> None:
        go_on, fault = self._begin_create("segmind")
        if not go_on:
            return
        create = self._segmind_parse(body, "segmind.v1")
        if create is None:
            return
        fake = self.fake
        kind = fault.kind if fault else None
        if kind is FaultKind.MODERATION:
            self._json(400, {"error": _MODERATION_REASONS["segmind"]})
            return
        if kind is FaultKind.JOB_FAILED:
            self._json(500, {"error": _FAILED_REASONS["segmind"]})
            return
        if kind is FaultKind.STUCK:
            fake._sleep(fake.timeout_seconds)
            self._html(504, _GATEWAY_HTML.format(code=504, phrase="Gateway Timeout"))
            return
        epoch, started = self._call_epoch, time.monotonic()
        try:
            clip = render_modified_clip(
                create.video,
                output_size=fake.output_size,
                length_factor=fault.factor if kind is FaultKind.WRONG_LENGTH else 1.0,
                drift=fake.drift,
                drift_seed=fake.drift_seed,
            )
        except RenderError:
            self._json(400, {"error": "video_url could not be decoded as a video"})
            return
        remaining = fake._bill("segmind", epoch)
        if kind is FaultKind.DROPPED_CONNECTION:
            raise _Dropped
        self._send(
            200,
            clip,
            "video/mp4",
            {
                "x-remaining-credits": f"{remaining:.4f}",
                "x-cost": f"{fake.costs['segmind']:.4f}",
                "x-generation-time": f"{time.monotonic() - started:.3f}",
                "x-request-id": str(uuid.uuid4()),
            },
        )

    def _route_segmind_v2_create(self, body: bytes) -> None:
        go_on, fault = self._begin_create("segmind")
        if not go_on:
            return
        create = self._segmind_parse(body, "segmind.v2")
        if create is None:
            return
        job = self.fake._new_job("segmind", "segmind.v2", create, fault, self._call_epoch)
        if fault is not None and fault.kind is FaultKind.DROPPED_CONNECTION:
            raise _Dropped
        status_url = f"{self._base()}/v2/requests/{job.id}/status"
        self._json(
            200,
            {
                "request_id": job.id,
                "status": "QUEUED",
                "poll_url": status_url,
                "status_url": status_url,
                "response_url": f"{self._base()}/v2/requests/{job.id}/response",
            },
        )

    _SEGMIND_STATES = {
        "queued": "QUEUED",
        "running": "PROCESSING",
        "completed": "COMPLETED",
        "failed": "FAILED",
        "canceled": "FAILED",
    }

    def _route_segmind_v2_status(self, body: bytes, job_id: str) -> None:
        job = self._begin_poll("segmind", job_id, count=True)
        if job is None:
            return
        state = self.fake._job_state(job)
        payload = {"request_id": job.id, "status": self._SEGMIND_STATES[state]}
        if state == "failed":
            payload["error"] = job.failure_reason
        self._json(200, payload)

    def _route_segmind_v2_response(self, body: bytes, job_id: str) -> None:
        job = self._begin_poll("segmind", job_id, count=False)
        if job is None:
            return
        state = self.fake._job_state(job)
        if state in ("failed", "canceled"):
            self._json(422, {"request_id": job.id, "status": "FAILED",
                             "error": job.failure_reason or "canceled"})
        elif state == "completed":
            self._json(
                200,
                {"request_id": job.id, "status": "COMPLETED", "output": self._result_url(job)},
                {"x-remaining-credits": f"{self.fake.credits('segmind'):.4f}",
                 "x-cost": f"{self.fake.costs['segmind']:.4f}"},
            )
        else:
            self._json(202, {"request_id": job.id, "status": self._SEGMIND_STATES[state]})

    # ----------------------------------------------------------------- Luma

    def _json_body(self, body: bytes) -> dict:
        try:
            payload = json.loads(body or b"null")
        except ValueError as exc:
            raise _BadInput("the body is not valid JSON") from exc
        if not isinstance(payload, dict):
            raise _BadInput("the body must be a JSON object")
        return payload

    def _luma_input(self, body: bytes) -> _CreateInput:
        payload = self._json_body(body)
        if payload.get("generation_type") != "modify_video":
            raise _BadInput("generation_type: must be 'modify_video'")
        media = payload.get("media")
        if not isinstance(media, dict) or not media.get("url"):
            raise _BadInput("media.url: field required")
        mode = payload.get("mode")
        if mode not in MODES:
            raise _BadInput(f"mode: field required, one of {', '.join(MODES)}")
        model = payload.get("model")
        if model not in LUMA_MODELS:
            raise _BadInput(f"model: field required, one of {', '.join(LUMA_MODELS)}")
        params: dict = {"prompt": payload.get("prompt") or "", "mode": mode, "model": model}
        video = self._media(media["url"], "media.url", params, "video_source")
        first_frame = None
        frame = payload.get("first_frame")
        if frame is not None:
            if not isinstance(frame, dict) or not frame.get("url"):
                raise _BadInput("first_frame.url: field required")
            first_frame = self._media(frame["url"], "first_frame.url", params, "first_frame_source")
        return _CreateInput(video, first_frame, model, _echo(payload), params)

    _LUMA_STATES = {
        "queued": "queued",
        "running": "dreaming",
        "completed": "completed",
        "failed": "failed",
        "canceled": "failed",
    }

    def _luma_generation(self, job: _Job, state: str) -> dict:
        return {
            "id": job.id,
            "generation_type": "modify_video",
            "state": self._LUMA_STATES[state],
            "failure_reason": job.failure_reason if state in ("failed", "canceled") else None,
            "created_at": _iso(job.created_wall),
            "assets": {"video": self._result_url(job)} if state == "completed" else None,
            "model": job.model,
            "request": job.echo,
        }

    def _route_luma_create(self, body: bytes) -> None:
        go_on, fault = self._begin_create("luma")
        if not go_on:
            return
        try:
            create = self._luma_input(body)
        except _BadInput as exc:
            self._json(400, {"detail": f"Invalid request: {exc}"})
            return
        self._record("luma", "luma", create)
        job = self.fake._new_job("luma", "luma", create, fault, self._call_epoch)
        if fault is not None and fault.kind is FaultKind.DROPPED_CONNECTION:
            raise _Dropped
        self._json(201, self._luma_generation(job, "queued"))

    def _route_luma_get(self, body: bytes, job_id: str) -> None:
        job = self._begin_poll("luma", job_id, count=True)
        if job is not None:
            self._json(200, self._luma_generation(job, self.fake._job_state(job)))

    def _route_luma_delete(self, body: bytes, job_id: str) -> None:
        job = self._begin_poll("luma", job_id, count=False, faults=False)
        if job is None:
            return
        with self.fake._lock:
            job.canceled = True
            job.failure_reason = job.failure_reason or "deleted"
            self.fake._jobs.pop(job.id, None)
        self._send(204, b"", "application/json")

    def _route_luma_credits(self, body: bytes) -> None:
        if self._authorised("luma"):
            self._json(200, {"credit_balance": self.fake.credits("luma")})

    # ----------------------------------------------------------------- fal

    def _fal_input(self, body: bytes, variant: str) -> _CreateInput:
        payload = self._json_body(body)
        mode = payload.get("mode") or "flex_1"
        if mode not in MODES:
            raise _FalValidation("mode", f"not a valid mode; permitted: {', '.join(MODES)}")
        if not payload.get("video_url"):
            raise _FalValidation("video_url", "field required")
        params: dict = {"prompt": payload.get("prompt") or "", "mode": mode, "model": variant}
        try:
            video = self._media(payload["video_url"], "video_url", params, "video_source")
            first_frame = None
            if payload.get("image_url"):
                first_frame = self._media(
                    payload["image_url"], "image_url", params, "first_frame_source"
                )
        except _BadInput as exc:
            raise _FalValidation("video_url", str(exc)) from exc
        return _CreateInput(video, first_frame, variant, _echo(payload), params)

    def _fal_urls(self, job: _Job) -> dict:
        root = f"{self._base()}/fal-ai/luma-dream-machine/requests/{job.id}"
        return {
            "request_id": job.id,
            "status_url": f"{root}/status",
            "response_url": root,
            "cancel_url": f"{root}/cancel",
        }

    def _route_fal_create(self, body: bytes, variant: str) -> None:
        go_on, fault = self._begin_create("fal")
        if not go_on:
            return
        try:
            create = self._fal_input(body, variant)
        except _FalValidation as exc:
            loc, msg = exc.args
            self._json(422, {"detail": [{"loc": ["body", loc], "msg": msg, "type": "value_error"}]})
            return
        self._record("fal", "fal", create)
        job = self.fake._new_job("fal", "fal", create, fault, self._call_epoch)
        if fault is not None and fault.kind is FaultKind.DROPPED_CONNECTION:
            raise _Dropped
        self._json(200, {**self._fal_urls(job), "queue_position": 0})

    def _route_fal_status(self, body: bytes, job_id: str) -> None:
        job = self._begin_poll("fal", job_id, count=True)
        if job is None:
            return
        state = self.fake._job_state(job)
        status = {"queued": "IN_QUEUE", "running": "IN_PROGRESS"}.get(state, "COMPLETED")
        payload: dict = {"status": status, **self._fal_urls(job), "logs": None, "metrics": {}}
        if status == "IN_QUEUE":
            payload["queue_position"] = 0
        if state in ("failed", "canceled"):
            payload["error"] = job.failure_reason or "canceled"
            payload["error_type"] = (
                "content_policy_violation" if job.failure_kind == "moderation" else "internal_error"
            )
        self._json(200, payload)

    def _route_fal_result(self, body: bytes, job_id: str) -> None:
        job = self._begin_poll("fal", job_id, count=False)
        if job is None:
            return
        state = self.fake._job_state(job)
        if state == "completed":
            data = self.fake._file(job.result_name or "")
            self._json(
                200,
                {
                    "video": {
                        "url": self._result_url(job),
                        "content_type": "video/mp4",
                        "file_name": job.result_name,
                        "file_size": len(data[0]) if data else None,
                    }
                },
            )
        elif state == "canceled":
            self._json(400, {"detail": "Request was cancelled"})
        elif state == "failed" and job.failure_kind == "moderation":
            self._json(
                422,
                {"detail": [{"loc": ["body", "video_url"], "msg": job.failure_reason,
                             "type": "content_policy_violation"}]},
            )
        elif state == "failed":
            self._json(500, {"detail": job.failure_reason})
        else:
            self._json(400, {"detail": "Request is still in progress"})

    def _route_fal_cancel(self, body: bytes, job_id: str) -> None:
        job = self._begin_poll("fal", job_id, count=False, faults=False)
        if job is None:
            return
        with self.fake._lock:
            already = job.done.is_set()
            if not already:
                job.canceled = True
        if already:
            self._json(400, {"status": "ALREADY_COMPLETED"})
        else:
            self._json(202, {"status": "CANCELLATION_REQUESTED"})

    # ----------------------------------------------------------------- Replicate

    def _replicate_input(self, body: bytes) -> _CreateInput:
        payload = self._json_body(body)
        given = payload.get("input")
        if not isinstance(given, dict):
            raise _BadInput("- input: input is required")
        video_value = given.get("video") or given.get("video_url")
        if not video_value:
            raise _BadInput("- input: video is required")
        mode = given.get("mode") or "flex_1"
        if mode not in MODES:
            raise _BadInput(f"- input.mode: must be one of {', '.join(MODES)}")
        params: dict = {"prompt": given.get("prompt") or "", "mode": mode}
        video = self._media(video_value, "video", params, "video_source")
        first_frame = None
        frame_value = given.get("first_frame") or given.get("first_frame_url")
        if frame_value:
            first_frame = self._media(frame_value, "first_frame", params, "first_frame_source")
        return _CreateInput(video, first_frame, "luma/modify-video", _echo(given), params)

    _REPLICATE_STATES = {
        "queued": "starting",
        "running": "processing",
        "completed": "succeeded",
        "failed": "failed",
        "canceled": "canceled",
    }

    def _prediction(self, job: _Job, state: str) -> dict:
        base = f"{self._base()}/v1/predictions/{job.id}"
        status = self._REPLICATE_STATES[state]
        terminal = state in ("completed", "failed", "canceled")
        return {
            "id": job.id,
            "model": "luma/modify-video",
            "version": "fake",
            "input": job.echo,
            "logs": "",
            "output": self._result_url(job) if state == "completed" else None,
            "data_removed": False,
            "error": job.failure_reason if state == "failed" else None,
            "status": status,
            "created_at": _iso(job.created_wall),
            "completed_at": _iso(job.completed_wall) if terminal else None,
            "urls": {"get": base, "cancel": f"{base}/cancel"},
        }

    def _route_replicate_create(self, body: bytes) -> None:
        go_on, fault = self._begin_create("replicate")
        if not go_on:
            return
        try:
            create = self._replicate_input(body)
        except _BadInput as exc:
            self._json(
                422, {"title": "Input validation failed", "detail": str(exc), "status": 422}
            )
            return
        self._record("replicate", "replicate", create)
        fake = self.fake
        job = fake._new_job("replicate", "replicate", create, fault, self._call_epoch)
        prefer = re.search(r"\bwait(?:\s*=\s*(\d+(?:\.\d+)?))?", self.headers.get("Prefer", ""))
        state = "queued"
        if prefer:
            hold = min(float(prefer.group(1) or fake.replicate_max_wait_seconds),
                       fake.replicate_max_wait_seconds)
            if fault is not None and fault.kind is FaultKind.STUCK:
                fake._sleep(hold)
            elif job.done.wait(hold):
                with fake._lock:
                    job.released = True
            state = fake._job_state(job)
        if fault is not None and fault.kind is FaultKind.DROPPED_CONNECTION:
            raise _Dropped
        self._json(201, self._prediction(job, state))

    def _route_replicate_get(self, body: bytes, job_id: str) -> None:
        job = self._begin_poll("replicate", job_id, count=True)
        if job is not None:
            self._json(200, self._prediction(job, self.fake._job_state(job)))

    def _route_replicate_cancel(self, body: bytes, job_id: str) -> None:
        job = self._begin_poll("replicate", job_id, count=False, faults=False)
        if job is None:
            return
        with self.fake._lock:
            if not job.done.is_set():
                job.canceled = True
        self._json(200, self._prediction(job, self.fake._job_state(job)))


class _WrongContentType(Exception):
    """A Segmind body that is neither JSON nor multipart (Segmind answers 406)."""


class _FalValidation(Exception):
    """A fal body that fails validation: ``(field, message)``."""


def _parse_multipart(content_type: str, body: bytes) -> tuple[dict, dict[str, bytes]]:
    """Splits a ``multipart/form-data`` body into text fields and files with ``email``."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise _BadInput("the multipart body could not be parsed")
    fields: dict = {}
    files: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = part.get_payload(decode=True) or b""
        if part.get_filename() is not None:
            files[name] = payload
        else:
            fields[name] = payload.decode("utf-8", errors="replace")
    return fields, files


def run_fake_server(port: int, host: str = "127.0.0.1", **options: Any) -> None:
    """Serves the fake modify-video services until interrupted (for the CLI).

    Args:
        port: Port to listen on (0 picks a free one).
        host: Interface to bind.
        **options: Keyword options of ``FakeModifyServer`` (``polls_to_complete``...).
    """
    server = FakeModifyServer(host=host, port=port, **options)
    try:
        server.serve_forever(announce=True)
    except KeyboardInterrupt:
        pass
