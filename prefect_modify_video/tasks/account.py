"""Account-wide limits: Prefect global concurrency limits every run and machine on one account shares.

A service's documented account limits (Luma: 10 generations at once, 20 creates a minute) are kept
across all runs, workers and machines by two global concurrency limits on the Prefect server:

- ``modify-video:<service>:<account>:generations`` (limit = the concurrency; a slot is held from
  before the create until the job ends, whatever try or run follows it);
- ``modify-video:<service>:<account>:creates`` (a leaky bucket with slot decay: at most the
  documented creates in any minute; a slot is taken just before each create).

``<account>`` is the label the user gives (``backend.account``, default ``default``): never a key or
a hash of one. The limits are created on first use if missing (two runs creating them at once is
fine) and acquired strictly: without a Prefect server, or with a limit deleted, nothing is sent. A
server that does not answer is waited for (nothing is sent meanwhile), up to ``SERVER_WAIT_SECONDS``.

A generation that ends hands its slot to the oldest segment of its process that waits for one (the
slot stays taken on the server: no release, no ask); with none waiting, it gives the slot back and
Prefect's ``prefect.concurrency-limit.released`` event wakes the oldest waiter of every other process,
which asks at once (``_Waiting``, following the events websocket while someone waits). Otherwise only
the oldest waiter of a process asks again, when the server's ``Retry-After`` says (at most
``PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS``, 30 s by default); without the
events stream every waiter does. So a run keeps the slots it holds while it has segments waiting: a
run's own ``concurrency`` below the account's limit leaves room for other runs.

Leases: a held slot is leased and renewed by Prefect; a machine that dies frees its slots when the
lease expires. Keep leases across a server restart with
``PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE=prefect.server.concurrency.lease_storage.filesystem``
(the default memory storage loses them: a slot held during a restart stays taken for good).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import threading
import time
from collections import deque
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Callable, Iterator, TypeVar
from uuid import UUID

import httpx
from prefect.client.schemas.responses import ConcurrencyLimitWithLeaseResponse
from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError

from prefect_modify_video.errors import InvalidInputError
from prefect_modify_video.parameters import BackendSpec
from prefect_modify_video.providers.base import ModifyBackend

logger = logging.getLogger(__name__)

GENERATION_LEASE_SECONDS = max(60.0, float(os.environ.get("PREFECT_MODIFY_VIDEO_GENERATION_LEASE_SECONDS", "300")))
"""Lease of a generation slot, renewed while held; a dead machine's slots free this long after it died
(about the time its generations keep running at the service). At least 60 s (Prefect's minimum);
``PREFECT_MODIFY_VIDEO_GENERATION_LEASE_SECONDS`` changes it."""
SERVER_WAIT_SECONDS = 600.0
"""How long a slot is waited for while the Prefect server does not answer, before the try fails."""
SERVER_RETRY_SECONDS = 5.0
"""Pause between two tries to reach a Prefect server that does not answer."""
T = TypeVar("T")
_ensured: set[tuple[str, int, float | None]] = set()


@dataclass(frozen=True)
class _HeldSlot:
    """A generation slot held on the server: its lease, and its acquisition's events (which its release follows)."""

    granted: ConcurrencyLimitWithLeaseResponse
    events: dict


class _Waiter:
    """A coroutine waiting for a slot: the limit (``source``: the Prefect API's address, the limit's name),
    its event loop, the event that wakes it, whether it was woken, whether its ask is at the server, and
    the slot a finished generation of this process handed it."""

    def __init__(self, source: tuple[str | None, str]) -> None:
        self.source = source
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()
        self.woken = False
        self.asking = False
        self.handed: _HeldSlot | None = None

    async def sleep(self, seconds: float | None) -> None:
        """Sleeps ``seconds`` (``None``: for good), or until woken."""
        with suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.event.wait(), seconds)
        self.event.clear()

    def wake(self) -> None:
        """Wakes it from any thread (its loop closed: it waits no more)."""
        with suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.event.set)


class _Waiting:
    """The coroutines of this process waiting for a slot of each limit, oldest first: a slot freed here is
    handed to the oldest one not asking (``hand_over``); one given back by any process wakes the oldest
    one not woken yet, which asks for it at once.

    The server tells a refused waiter when to ask again (``Retry-After``, up to the server's maximum
    slot wait), whatever frees a slot; without this, a freed slot stood idle until a waiter somewhere
    asked again (1 s on average at a 2 s maximum). A slot given back elsewhere is heard through Prefect's
    ``prefect.concurrency-limit.released`` events, which a thread of this process follows on the events
    websocket while someone here waits (``_follow_releases``); meanwhile only the oldest waiter here asks on
    the server's schedule (``polls``). Without events (a server that does not stream them), every waiter does.
    """

    RETRY_LISTENING_SECONDS = 60.0
    """After the events stream failed, how long before a new waiter tries to follow it again."""
    LINGER_SECONDS = 30.0
    """How long the events stream is followed after the last waiter here got its slot (the next comes soon)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, deque[_Waiter]] = {}
        self._following: set[tuple[str | None, str]] = set()  # (the Prefect API's address, the limit's name)
        self._failed_at: dict[tuple[str | None, str], float] = {}

    @contextmanager
    def waiter(self, name: str) -> Iterator[_Waiter]:
        """Queues the calling coroutine for ``name``'s slots while in the block."""
        from prefect.settings import PREFECT_API_URL

        source = (PREFECT_API_URL.value(), name)
        waiter = _Waiter(source)
        with self._lock:
            self._waiting.setdefault(name, deque()).append(waiter)
            if source not in self._following and time.monotonic() - self._failed_at.get(source, -1e9) > self.RETRY_LISTENING_SECONDS:
                self._following.add(source)
                threading.Thread(
                    target=contextvars.copy_context().run,  # with the settings (the API's address) of the run
                    args=(self._follow_releases, source),
                    name=f"releases of {name}",
                    daemon=True,
                ).start()
        try:
            yield waiter
        finally:
            with self._lock:
                queue = self._waiting[name]
                was_first = queue[0] is waiter
                queue.remove(waiter)
                if was_first and queue:
                    queue[0].wake()  # the next one asks on the server's schedule from now on

    def polls(self, waiter: _Waiter) -> bool:
        """Whether a refused ``waiter`` asks again when the server says: the oldest waiter of this process
        does; the others only when woken, while releases are heard from the events stream (else all do).
        One waiter asking for the process, not all, keeps the server answering quickly."""
        with self._lock:
            queue = self._waiting.get(waiter.source[1])
            return bool(queue) and queue[0] is waiter or waiter.source not in self._following

    def start_asking(self, waiter: _Waiter) -> _HeldSlot | None:
        """The slot handed to ``waiter``, if one was; else marks it as asking the server (a slot freed from
        now on wakes another, and none is handed to it while it asks)."""
        with self._lock:
            if waiter.handed is None:
                waiter.asking, waiter.woken = True, False
            return waiter.handed

    def stop_asking(self, waiter: _Waiter) -> None:
        """Marks ``waiter`` as refused and waiting again."""
        with self._lock:
            waiter.asking = False

    def hand_over(self, name: str, slot: _HeldSlot) -> bool:
        """Hands a held slot of ``name`` to the oldest waiter here not asking the server, and wakes it; False
        if none (the slot then goes back to the server). The slot stays taken on the server all along."""
        with self._lock:
            for waiter in self._waiting.get(name, ()):
                if not waiter.asking and waiter.handed is None:
                    waiter.handed = slot
                    waiter.wake()
                    return True
            return False

    def wake_one(self, name: str) -> None:
        """Wakes the oldest waiter for ``name`` not woken yet (called when a slot is given back)."""
        with self._lock:
            for waiter in self._waiting.get(name, ()):
                if not waiter.woken:
                    waiter.woken = True
                    waiter.wake()
                    return

    def _follow_releases(self, source: tuple[str | None, str]) -> None:
        """(Its own thread.) Wakes a waiter here each time any process gives back a slot of the limit
        (``source``: the API's address, the limit's name), until no one here has waited for one for
        ``LINGER_SECONDS``."""
        try:
            asyncio.run(self._releases(source))
        except Exception as error:  # noqa: BLE001 - a speed-up only: Retry-After still holds
            logger.debug("not following the releases of %s (%s: %s)", source[1], type(error).__name__, error)
            with self._lock:
                self._failed_at[source] = time.monotonic()
                self._following.discard(source)
                for waiter in self._waiting.get(source[1], ()):
                    waiter.wake()  # they all ask on the server's schedule again

    async def _releases(self, source: tuple[str | None, str]) -> None:
        """Follows the release events of a limit (``source``: the API's address, the limit's name) on the
        Prefect server's events websocket while someone here waits (and ``LINGER_SECONDS`` after)."""
        from prefect.events.clients import PrefectCloudEventSubscriber, PrefectEventSubscriber
        from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
        from prefect.events.schemas.events import ResourceSpecification
        from prefect.settings import PREFECT_CLOUD_API_URL
        from prefect.types._datetime import now

        api_url, name = source
        if not api_url:
            raise RuntimeError("no PREFECT_API_URL: no events to follow")
        subscriber = PrefectCloudEventSubscriber if api_url.startswith(PREFECT_CLOUD_API_URL.value()) else PrefectEventSubscriber
        releases = EventFilter(  # type: ignore[call-arg]
            event=EventNameFilter(name=["prefect.concurrency-limit.released"]),  # type: ignore[call-arg]
            resource=EventResourceFilter(labels=ResourceSpecification({"prefect.resource.name": name})),  # type: ignore[call-arg]
        )
        since = now("UTC")
        async with subscriber(filter=releases, reconnection_attempts=2) as events:
            next_event: asyncio.Future | None = None
            waited_at = time.monotonic()
            try:
                while True:
                    with self._lock:
                        if self._waiting.get(name):
                            waited_at = time.monotonic()
                        elif time.monotonic() - waited_at > self.LINGER_SECONDS:
                            self._following.discard(source)  # under the lock: a waiter coming now starts a new thread
                            return
                    next_event = next_event or asyncio.ensure_future(events.__anext__())
                    done, _ = await asyncio.wait({next_event}, timeout=1.0)
                    if done:
                        event = next_event.result()  # the stream's end raises: Retry-After holds from then on
                        next_event = None
                        if event.occurred >= since:  # not one of the last minute's, which the stream sends first
                            self.wake_one(name)
            finally:
                if next_event is not None:
                    next_event.cancel()


_waiting = _Waiting()


@dataclass(frozen=True)
class AccountLimits:
    """The global concurrency limits of one service account.

    Example:
        >>> from prefect_modify_video.providers.luma import LumaBackend
        >>> limits = AccountLimits.for_backend(LumaBackend, BackendSpec(name="luma", account="team-a"))
        >>> limits.generations, limits.generation_limit, limits.creates, limits.creates_limit
        ('modify-video:luma:team-a:generations', 10, 'modify-video:luma:team-a:creates', 5)
    """

    generations: str
    generation_limit: int
    creates: str | None
    creates_limit: int = 0
    creates_decay_per_second: float = 0.0

    @classmethod
    def for_backend(cls, backend: type[ModifyBackend] | ModifyBackend, spec: BackendSpec) -> AccountLimits | None:
        """The account's limits, or ``None`` for a free backend or one with no documented or given limit."""
        concurrency = spec.account_concurrency or backend.account_concurrency
        if backend.is_free or not concurrency:
            return None
        prefix = f"modify-video:{backend.service}:{spec.account}"
        per_minute = backend.account_creates_per_minute
        if not per_minute:
            return cls(f"{prefix}:generations", concurrency, None)
        # A bucket of size C refilled at r a second admits at most C + 60 r in a minute: C + 60 r = per_minute.
        bucket = max(1, per_minute // 4)
        return cls(f"{prefix}:generations", concurrency, f"{prefix}:creates", bucket, (per_minute - bucket) / 60)

    async def ensure(self) -> None:
        """Creates the limits on the Prefect server if they are missing (once per process)."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
        from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

        wanted = [(self.generations, self.generation_limit, None)]
        if self.creates:
            wanted.append((self.creates, self.creates_limit, self.creates_decay_per_second))
        async with get_client() as client:
            for name, limit, decay in wanted:
                if (name, limit, decay) in _ensured:
                    continue
                try:
                    existing = await client.read_global_concurrency_limit_by_name(name)
                except ObjectNotFound:
                    try:
                        await client.create_global_concurrency_limit(
                            GlobalConcurrencyLimitCreate(name=name, limit=limit, slot_decay_per_second=decay or 0.0)
                        )
                        logger.info("created the global concurrency limit %s (%d)", name, limit)
                    except ObjectAlreadyExists:
                        pass  # another run created it first
                else:
                    if decay and not existing.slot_decay_per_second:
                        raise InvalidInputError(
                            f"the global concurrency limit {name} has no slot decay, so it cannot limit creates a "
                            f"minute; delete it (prefect gcl delete {name}) and the next run creates it right"
                        )
                _ensured.add((name, limit, decay))

    @asynccontextmanager
    async def generation(self) -> AsyncIterator[None]:
        """Holds one of the account's generation slots for the block (create, then wait for the job).

        Asked for on Prefect's client (leased, renewed by Prefect while held): refused, the ask waits for
        the server's ``Retry-After`` or until a slot is freed (``_Waiting``). At the block's end the slot
        goes to the next segment of this process that waits for one, if any, else back to the server.
        """
        from prefect.client.orchestration import get_client
        from prefect.concurrency._events import emit_concurrency_acquisition_events
        from prefect.concurrency._leases import amaintain_concurrency_lease

        async def lease(waiter: _Waiter) -> _HeldSlot:
            async with get_client() as client:
                while (handed := _waiting.start_asking(waiter)) is None:
                    ask = asyncio.ensure_future(client.increment_concurrency_slots_with_lease(
                        names=[self.generations], slots=1, mode="concurrency", lease_duration=GENERATION_LEASE_SECONDS,
                    ))
                    try:
                        response = await asyncio.shield(ask)
                    except asyncio.CancelledError:
                        # Stopped while asking: a slot the server grants now is given back, not leaked for a lease.
                        with suppress(Exception):
                            granted = (await ask).json()
                            if granted.get("limits"):
                                await client.release_concurrency_slots_with_lease(UUID(granted["lease_id"]))
                        raise
                    except httpx.HTTPStatusError as error:
                        if error.response.status_code != 423:
                            raise
                        _waiting.stop_asking(waiter)
                        retry_after = float(error.response.headers.get("Retry-After") or 1.0)
                        await waiter.sleep(retry_after if _waiting.polls(waiter) else None)
                        continue
                    granted = ConcurrencyLimitWithLeaseResponse.model_validate(response.json())
                    if not granted.limits:
                        raise ConcurrencySlotAcquisitionError(
                            f"Concurrency limits {[self.generations]!r} must be created before acquiring slots"
                        )
                    # As Prefect's own concurrency() does; a slot handed on keeps its acquisition's events.
                    return _HeldSlot(granted, emit_concurrency_acquisition_events(granted.limits, 1))
                return handed

        with _waiting.waiter(self.generations) as waiter:
            try:
                slot = await _retrying(self.generations, self.ensure, lambda: lease(waiter))
            except BaseException:
                if waiter.handed is not None:  # handed a slot, then stopped before holding it: it goes on
                    await asyncio.shield(self._give_back(waiter.handed))
                raise
        try:
            async with amaintain_concurrency_lease(slot.granted.lease_id, GENERATION_LEASE_SECONDS):
                yield
        finally:
            await self._give_back(slot)

    async def _give_back(self, slot: _HeldSlot) -> None:
        """Hands ``slot`` to the next segment of this process that waits for one, else gives it back to the
        server and tells the other processes (the release event) and a waiter here that may be asking."""
        from prefect.client.orchestration import get_client
        from prefect.concurrency._events import emit_concurrency_release_events

        if _waiting.hand_over(self.generations, slot):
            return
        try:
            async with get_client() as client:
                await client.release_concurrency_slots_with_lease(slot.granted.lease_id)
        except Exception as error:  # noqa: BLE001 - the job is over: its answer matters more than the slot
            # Its renewal has stopped, so the server frees the slot when the lease ends.
            _run_logger().warning(
                "could not give back a slot of %s (%s: %s): the Prefect server frees it within %.0f s",
                self.generations, type(error).__name__, error, GENERATION_LEASE_SECONDS,
            )
        # After the slot is back: the event wakes waiters of other processes (``_Waiting``), who ask at once.
        emit_concurrency_release_events(slot.granted.limits, 1, slot.events)
        _waiting.wake_one(self.generations)

    async def before_create(self) -> None:
        """Takes a slot of the account's create rate (returns when a create may be sent)."""
        if self.creates is None:
            return
        from prefect.concurrency.asyncio import rate_limit

        await _retrying(self.creates, self.ensure, lambda: rate_limit(self.creates, occupy=1, strict=True))


async def _retrying(name: str, ensure: Callable[[], Awaitable[None]], acquire: Callable[[], Awaitable[T]]) -> T:
    """``ensure()`` then ``acquire()``, tried again while the Prefect server does not answer (nothing is sent
    meanwhile), for up to ``SERVER_WAIT_SECONDS``; a missing limit or another refusal raises at once."""
    deadline = None  # counted from the first try the server did not answer (waiting for a free slot is not)
    warned_at = None
    while True:
        try:
            await ensure()
            return await acquire()
        except (ConcurrencySlotAcquisitionError, httpx.TransportError, httpx.HTTPStatusError) as error:
            unanswered = (
                isinstance(error, httpx.TransportError)
                or (isinstance(error, httpx.HTTPStatusError) and error.response.status_code >= 500)
                or (isinstance(error, ConcurrencySlotAcquisitionError) and "must be created" not in str(error))
            )
            deadline = deadline or time.monotonic() + SERVER_WAIT_SECONDS
            if not unanswered or time.monotonic() > deadline:
                raise
            if warned_at is None or time.monotonic() - warned_at >= 60:  # said once a minute, not every try
                warned_at = time.monotonic()
                _run_logger().warning(
                    "the Prefect server does not answer for the limit %s: nothing is sent; waiting up to %.0f s (%s: %s)",
                    name, deadline - time.monotonic(), type(error).__name__, error,
                )
            await asyncio.sleep(SERVER_RETRY_SECONDS)


def _run_logger() -> logging.Logger | logging.LoggerAdapter:
    """The run's logger (seen in the UI and the worker's output), else this module's."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logger
