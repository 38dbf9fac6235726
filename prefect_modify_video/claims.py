"""Claims and shared budgets in the store: conditional writes that let many machines share one account.

A segment is paid for only by the run holding its claim, and a budget is one object every run
reserves from. Both rest on two operations of the storage itself, so they need no lock server:

- **create if absent**: a local folder's hard link (``os.link`` fails if the name exists), S3's
  ``If-None-Match: *`` (s3fs ``pipe_file(mode="create")``);
- **compare and swap**: replace a file only if it is still the version read (a local folder: the
  content's hash checked under ``fcntl.flock``; S3: ``If-Match: <etag>``).

A storage that has neither (an SMB or SFTP share, a generic block) cannot be shared safely across
machines, and is refused as a store with a message saying so.

The claim of segment ``K`` is ``claims/K.json``::

    {"holder": "<uuid>", "host": "...", "pid": 123, "flow_run": "...", "state": "claimed", "beat": 7,
     "marker": {...}, "job_id": null}

Its states: ``claimed`` (nothing sent) → ``sending`` (the fencing point, written just before the create
request, with what identifies the request at the service) → ``submitted`` (the job id is saved in
``jobs/K.json``); ``unknown`` when a create got no answer. The holder rewrites it every third of the
lease (its heartbeat). An observer that sees a claim unchanged for two leases by its own clock (no
clock skew between machines matters), or whose holder is proven dead (a process of this host that is
gone: ``storage.scratch.owner_is_dead``), takes it over with one compare and swap: exactly one
successor wins. What the successor then does depends on the state it took over: ``claimed`` → it pays;
``submitted`` → it follows the saved job; ``sending``/``unknown`` → it asks the service's list of jobs
for the request (where the service has one) and otherwise stops with ``SubmitOutcomeUnknownError``:
never paid blind; ``--refresh`` is the user's decision to pay again.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Iterator

from prefect_modify_video.errors import BudgetExceededError, ClaimLostError, InvalidInputError
from prefect_modify_video.storage.locations import BlockReference
from prefect_modify_video.storage.scratch import Owner, current_owner, owner_is_dead

logger = logging.getLogger(__name__)

CLAIM_LEASE_SECONDS = float(os.environ.get("PREFECT_MODIFY_VIDEO_CLAIM_LEASE_SECONDS", "30"))
"""How long a claim lives without a heartbeat; a claim unchanged for two leases is stale.

Set ``PREFECT_MODIFY_VIDEO_CLAIM_LEASE_SECONDS`` the same on every machine sharing a store (tests use 2).
"""


class ConditionalFiles(ABC):
    """Small files under one folder, written only if absent or only if unchanged since read.

    A version token names what was read (a hash, an ETag); every method is atomic at the storage.
    """

    where: str
    """The folder, for messages."""

    @abstractmethod
    def create(self, name: str, data: bytes) -> str | None:
        """Writes ``name`` if it does not exist; its new token, or ``None`` when it exists."""

    @abstractmethod
    def read(self, name: str) -> tuple[bytes, str] | None:
        """The content of ``name`` and its token, or ``None`` when it does not exist."""

    @abstractmethod
    def replace(self, name: str, data: bytes, token: str) -> str | None:
        """Replaces ``name`` if its token is still ``token``; the new token, or ``None`` when it changed or went."""

    @abstractmethod
    def delete(self, name: str, token: str) -> bool:
        """Deletes ``name`` if its token is still ``token``; whether it did."""

    def remove_if_empty(self) -> None:
        """Removes the folder once nothing is left in it (object stores have no folders to remove)."""


class LocalConditionalFiles(ConditionalFiles):
    """A local (or NFS-mounted) folder: creates by hard link, compares and swaps under ``flock``.

    Example:
        >>> import tempfile
        >>> files = LocalConditionalFiles(tempfile.mkdtemp())
        >>> token = files.create("a.json", b"1")
        >>> files.create("a.json", b"2") is None, files.replace("a.json", b"3", "stale") is None
        (True, True)
        >>> files.read("a.json")[0], files.replace("a.json", b"3", token) is not None
        (b'1', True)
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.where = str(self.root)

    @staticmethod
    def _token(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def _write_temp(self, name: str, data: bytes) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        temp = self.root / f".{name}.{uuid.uuid4().hex[:8]}.partial"
        try:
            with open(temp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:  # a full disk: no half-written file is left
            temp.unlink(missing_ok=True)
            raise
        return temp

    @contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f".{name}.cas", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def create(self, name: str, data: bytes) -> str | None:
        temp = self._write_temp(name, data)
        try:
            with self._locked(name):
                os.link(temp, self.root / name)
        except FileExistsError:
            return None
        finally:
            temp.unlink(missing_ok=True)
        return self._token(data)

    def read(self, name: str) -> tuple[bytes, str] | None:
        try:
            data = (self.root / name).read_bytes()
        except FileNotFoundError:
            return None
        return data, self._token(data)

    def replace(self, name: str, data: bytes, token: str) -> str | None:
        temp = self._write_temp(name, data)
        try:
            with self._locked(name):
                current = self.read(name)
                if current is None or current[1] != token:
                    return None
                os.replace(temp, self.root / name)
        finally:
            temp.unlink(missing_ok=True)
        return self._token(data)

    def delete(self, name: str, token: str) -> bool:
        with self._locked(name):
            current = self.read(name)
            if current is None or current[1] != token:
                return False
            (self.root / name).unlink()
        (self.root / f".{name}.cas").unlink(missing_ok=True)
        return True

    def remove_if_empty(self) -> None:
        with contextlib.suppress(OSError):  # not empty, or already gone
            self.root.rmdir()


def _precondition_failed(error: OSError) -> bool:
    """Whether an s3fs error is S3 refusing a conditional write (412, or 409 for a concurrent one)."""
    cause = error.__cause__
    response = getattr(cause, "response", None) or {}
    code = (response.get("Error") or {}).get("Code", "")
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412)


class S3ConditionalFiles(ConditionalFiles):
    """A folder in S3 (or an S3-compatible store that honours ``If-None-Match``/``If-Match``), via s3fs."""

    def __init__(self, filesystem: Any, root: str):
        self.fs = filesystem
        self.root = root.rstrip("/")
        self.where = f"s3://{self.root}"

    def _bucket_key(self, name: str) -> tuple[str, str]:
        bucket, key, _ = self.fs.split_path(f"{self.root}/{name}")
        return bucket, key

    def create(self, name: str, data: bytes) -> str | None:
        try:
            answer = self.fs.pipe_file(f"{self.root}/{name}", data, mode="create")
        except FileExistsError:
            return None
        except OSError as error:
            if _precondition_failed(error):
                return None
            raise
        return answer["ETag"]

    def read(self, name: str) -> tuple[bytes, str] | None:
        bucket, key = self._bucket_key(name)

        async def get() -> tuple[bytes, str]:
            answer = await self.fs._call_s3("get_object", Bucket=bucket, Key=key)
            async with answer["Body"] as body:
                return await body.read(), answer["ETag"]

        from fsspec.asyn import sync

        try:
            return sync(self.fs.loop, get)
        except FileNotFoundError:
            return None

    def replace(self, name: str, data: bytes, token: str) -> str | None:
        try:
            answer = self.fs.pipe_file(f"{self.root}/{name}", data, IfMatch=token)
        except FileNotFoundError:
            return None
        except OSError as error:
            if _precondition_failed(error):
                return None
            raise
        return answer["ETag"]

    def delete(self, name: str, token: str) -> bool:
        bucket, key = self._bucket_key(name)
        try:
            self.fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=token)
        except FileNotFoundError:
            return False
        except OSError as error:
            if _precondition_failed(error):
                return False
            raise
        self.fs.invalidate_cache(f"{self.root}/{name}")
        return True


def conditional_files_for(block: Any, folder: BlockReference) -> ConditionalFiles:
    """The conditional files of a folder in a storage block.

    Raises:
        InvalidInputError: the block's storage cannot create-if-absent and compare-and-swap, so two
            machines sharing it could pay twice for one segment.
    """
    from prefect.filesystems import LocalFileSystem, RemoteFileSystem

    if isinstance(block, LocalFileSystem):
        return LocalConditionalFiles(block._resolve_path(folder.path or "."))
    if isinstance(block, RemoteFileSystem):
        filesystem = block.filesystem
        protocols = filesystem.protocol if isinstance(filesystem.protocol, (tuple, list)) else (filesystem.protocol,)
        if set(protocols) & {"s3", "s3a"}:
            return S3ConditionalFiles(filesystem, filesystem._strip_protocol(block._resolve_path(folder.path)))
        kind = f"a {'/'.join(protocols)}:// file system"
    else:
        kind = f"a {folder.block_type_slug} block"
    raise InvalidInputError(
        f"store {folder}: {kind} cannot write a file only if it is absent or unchanged, so runs on two machines "
        "sharing it could pay twice for one segment; use a local folder, a local-file-system block or a "
        "remote-file-system block on s3://"
    )


def _encode(data: dict) -> bytes:
    return json.dumps(data, sort_keys=True).encode()


@dataclass
class Claim:
    """A held claim on one segment; its heartbeat runs until ``release``.

    Attributes:
        taken_over: The state of a stale claim this one replaced (``None``: created fresh), which
            tells the payer what may already have happened (``sending``: a create may have been billed).
        previous: The stale claim's content.
    """

    files: ConditionalFiles
    name: str
    data: dict
    token: str
    lease_seconds: float
    taken_over: str | None = None
    previous: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _last_write: float = field(default_factory=time.monotonic)
    _lost: str | None = None
    _released: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)
    _beat: threading.Thread | None = None

    def start_heartbeat(self) -> None:
        """Rewrites the claim every third of the lease, so observers see it alive."""

        def beat() -> None:
            while not self._stop.wait(self.lease_seconds / 3):
                try:
                    self.update()
                except ClaimLostError:
                    return
                except Exception as error:  # a passing storage failure: the next beat tries again
                    logger.warning("claim %s: heartbeat failed (%s)", self.name, error)

        self._beat = threading.Thread(target=beat, name=f"claim-{self.name[:12]}", daemon=True)
        self._beat.start()

    def update(self, **changes: Any) -> None:
        """Compare-and-swaps the claim with ``changes`` (and the next beat).

        Raises:
            ClaimLostError: another run took it over; this one must send nothing.
        """
        with self._lock:
            if self._lost:
                raise ClaimLostError(self._lost)
            data = {**self.data, **changes, "beat": self.data.get("beat", 0) + 1}
            token = self.files.replace(self.name, _encode(data), self.token)
            if token is None:
                self._lost = (
                    f"the claim {self.files.where}/{self.name} was taken over by another run (this one stalled "
                    f"past its {self.lease_seconds:g} s lease); nothing more is sent for it here"
                )
                raise ClaimLostError(self._lost)
            self.data, self.token, self._last_write = data, token, time.monotonic()

    def fence(self, marker: dict) -> None:
        """The fencing point, just before a create request: the claim must be fresh, then ``sending``.

        Raises:
            ClaimLostError: the claim is lost or too old to be sure it is not (then nothing is sent).
        """
        if time.monotonic() - self._last_write > self.lease_seconds * 0.8:
            self.update()  # refreshed first: a stalled holder learns here that it lost the claim
        self.update(state="sending", marker=marker, sending_at=time.time())

    def release(self, *, keep_as: str | None = None, **changes: Any) -> None:
        """Stops the heartbeat and deletes the claim (or leaves it in state ``keep_as`` for the next run)."""
        self._stop.set()
        if self._beat is not None and self._beat is not threading.current_thread():
            self._beat.join(timeout=5)
        with self._lock:
            if self._lost or self._released:
                return
            self._released = True
            if keep_as is not None:
                data = {**self.data, **changes, "state": keep_as, "holder": None}
                if self.files.replace(self.name, _encode(data), self.token) is None:
                    logger.warning("claim %s was taken over before it could be kept as %s", self.name, keep_as)
                return
            if not self.files.delete(self.name, self.token):
                logger.warning("claim %s was taken over before it could be released", self.name)


async def acquire_claim(
    files: ConditionalFiles,
    key: str,
    *,
    is_done: Callable[[], bool],
    holder: dict,
    lease_seconds: float = CLAIM_LEASE_SECONDS,
    on_wait: Callable[[dict], Awaitable[None] | None] | None = None,
    check_seconds: float | None = None,
) -> Claim | None:
    """Claims segment ``key``, waiting while another live run holds it.

    Args:
        files: The store's claims folder.
        key: The segment's key.
        is_done: Whether the segment's result is in the store (then no claim is needed).
        holder: Who claims (host, pid, flow run): written into the claim for people.
        lease_seconds: The claim's lease (the same on every machine).
        on_wait: Called once when this run starts waiting for another holder (with its claim).
        check_seconds: How often a held claim is looked at (default a quarter of the lease).

    Returns:
        The held claim, or ``None`` when the result is in the store (looked at again once the claim
        is held: a holder stores its result, then releases its claim, possibly just before ours).
    """
    name = f"{key}.json"
    check_seconds = check_seconds or lease_seconds / 4
    me = current_owner()
    mine = {"holder": uuid.uuid4().hex, "host": me.host, "pid": me.pid, "owner": asdict(me), **holder,
            "state": "claimed", "beat": 0, "since": time.time()}
    seen_token, seen_at, waited = None, 0.0, False

    def held(claim: Claim) -> Claim | None:
        # The result may have been stored (and its claim released) between the look and the claim.
        if is_done():
            claim.release()
            return None
        claim.start_heartbeat()
        return claim

    while True:
        if is_done():
            return None
        token = files.create(name, _encode(mine))
        if token is not None:
            return held(Claim(files, name, mine, token, lease_seconds))
        current = files.read(name)
        if current is None:
            continue  # released between the two calls
        content, token = current
        try:
            other = json.loads(content)
        except ValueError:
            other = {"state": "claimed"}  # an unreadable claim is treated as a stale one once it stays
        if other.get("state") == "unknown" or other.get("holder") is None or _holder_is_dead(other, me):
            stale = True  # left by its holder, or its holder is proven gone (this host, pid gone)
        elif token != seen_token:
            stale, seen_token, seen_at = False, token, time.monotonic()
        else:
            stale = time.monotonic() - seen_at > 2 * lease_seconds  # not rewritten for two leases, by our clock
        if stale:
            taken = files.replace(name, _encode(mine), token)
            if taken is not None:
                claim = held(Claim(files, name, mine, taken, lease_seconds, taken_over=other.get("state", "claimed"),
                                   previous=other))
                if claim is not None:
                    logger.warning("took over the stale claim %s/%s (it was %s)", files.where, name, claim.taken_over)
                return claim
            continue
        if not waited and on_wait is not None:
            waited = True
            result = on_wait(other)
            if asyncio.iscoroutine(result):
                await result
        await asyncio.sleep(check_seconds)


def _holder_is_dead(claim: dict, me: Owner) -> bool:
    """Whether the claim's holder is proven gone (on this host); anything unsure counts as alive."""
    try:
        return owner_is_dead(Owner(**claim["owner"]), me)
    except (KeyError, TypeError):
        return False


def drop_unknown_claim(files: ConditionalFiles, key: str) -> bool:
    """Deletes the claim of ``key`` if it is left ``unknown`` (``--refresh``: the user decides to pay again).

    A claim a live run holds is never dropped: that run is paying for the segment.
    """
    current = files.read(f"{key}.json")
    if current is None:
        return False
    try:
        state = json.loads(current[0]).get("state")
    except ValueError:
        return False
    return state == "unknown" and files.delete(f"{key}.json", current[1])


class SharedBudget:
    """One spending cap several runs (a batch's videos, several batches) reserve from, kept in the store.

    ``budgets/<name>.json`` holds the cap and each call's amount (reserved, then settled to what it
    cost); every change is a compare and swap, so runs on many machines never pass the cap together.

    Example:
        >>> import tempfile
        >>> budget = SharedBudget(LocalConditionalFiles(tempfile.mkdtemp()), "team", cap_usd=1.0)
        >>> budget.reserve("a", 0.6); budget.settle("a", 0.5); budget.spent_usd()
        0.5
        >>> budget.reserve("b", 0.6)
        Traceback (most recent call last):
        ...
        prefect_modify_video.errors.BudgetExceededError: not sent: $0.50 of the budget 'team' ($1.00) is committed and this segment's $0.60 would pass it; raise the budget and re-run (segments already paid for are reused)
    """

    def __init__(self, files: ConditionalFiles, name: str, cap_usd: float | None):
        self.files = files
        self.name = name
        self.file = f"{name}.json"
        self.cap_usd = cap_usd

    def _change(self, change: Callable[[dict], dict | None]) -> None:
        while True:
            current = self.files.read(self.file)
            if current is None:
                data = {"name": self.name, "cap_usd": self.cap_usd, "calls": {}}
                updated = change(data)
                if updated is None or self.files.create(self.file, _encode(updated)) is not None:
                    return
                continue
            data = json.loads(current[0])
            if self.cap_usd is not None:
                data["cap_usd"] = self.cap_usd  # the latest run's cap is the budget's cap
            updated = change(data)
            if updated is None or self.files.replace(self.file, _encode(updated), current[1]) is not None:
                return

    def reserve(self, call_key: str, amount: float) -> None:
        """Commits ``amount`` for a call about to be sent (once per call key).

        Raises:
            BudgetExceededError: the call would take the budget past its cap.
        """

        def change(data: dict) -> dict | None:
            calls = data["calls"]
            if call_key in calls:
                return None
            committed = sum(calls.values())
            cap = data.get("cap_usd")
            if cap is not None and committed + amount > cap + 1e-9:
                raise BudgetExceededError(
                    f"not sent: ${committed:.2f} of the budget {self.name!r} (${cap:.2f}) is committed and this "
                    f"segment's ${amount:.2f} would pass it; raise the budget and re-run (segments already paid "
                    "for are reused)"
                )
            return {**data, "calls": {**calls, call_key: amount}}

        self._change(change)

    def settle(self, call_key: str, actual: float) -> None:
        """Replaces a call's commitment by what it cost."""
        self._change(lambda data: {**data, "calls": {**data["calls"], call_key: actual}})

    def release(self, call_key: str) -> None:
        """Drops a call's commitment: it was not billed."""
        self._change(lambda data: None if call_key not in data["calls"] else
                     {**data, "calls": {k: v for k, v in data["calls"].items() if k != call_key}})

    def spent_usd(self) -> float:
        """What is committed or spent now."""
        current = self.files.read(self.file)
        return round(sum(json.loads(current[0])["calls"].values()), 6) if current else 0.0


class RunBilling:
    """What each segment of one run was billed, kept in the store so that every process of the run adds to it.

    ``billing/<run>/<segment>.json`` maps each billed call's id to its cost; a call is added once
    (compare and swap), so a segment task re-run on another process or machine (a Dask worker that
    died, a retry) books nothing twice, and the run's report adds up what all its processes booked.

    Example:
        >>> import tempfile
        >>> billing = RunBilling(LocalConditionalFiles(tempfile.mkdtemp()))
        >>> billing.book(0, "job-1", 0.5); billing.book(0, "job-1", 0.5); billing.book(2, "job-2", 0.25)
        >>> billing.billed([0, 1, 2])
        [(0, 'job-1', 0.5), (2, 'job-2', 0.25)]
        >>> billing.clear([0, 1, 2]); billing.billed([0, 1, 2])
        []
    """

    def __init__(self, files: ConditionalFiles):
        self.files = files

    def book(self, segment: int, call_id: str, cost_usd: float) -> None:
        """Adds a billed call of ``segment`` (again: nothing changes)."""
        name = f"{segment:05d}.json"
        while True:
            current = self.files.read(name)
            calls = json.loads(current[0]) if current else {}
            if call_id in calls:
                return
            data = _encode({**calls, call_id: cost_usd})
            if (self.files.create(name, data) if current is None else self.files.replace(name, data, current[1])):
                return

    def clear(self, segments: Iterable[int]) -> None:
        """Removes the records of ``segments`` (the run has added them up) and the run's folder once empty."""
        for segment in segments:
            name = f"{segment:05d}.json"
            while (current := self.files.read(name)) is not None and not self.files.delete(name, current[1]):
                pass  # booked again meanwhile: read it again
        self.files.remove_if_empty()

    def billed(self, segments: Iterable[int]) -> list[tuple[int, str, float]]:
        """``(segment, call id, cost)`` of every call booked for ``segments``, by segment."""
        found = []
        for segment in segments:
            current = self.files.read(f"{segment:05d}.json")
            found.extend((segment, call, cost) for call, cost in (json.loads(current[0]) if current else {}).items())
        return found
