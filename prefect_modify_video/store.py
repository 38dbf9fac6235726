"""Durable store of paid results, named by content, so a re-run never pays for a clip twice.

Layout under the root folder::

    clips/<key>.mp4      a clip the service returned (or the pieces of a short answer, joined)
    clips/<key>.json     what the call was: service, job id, cost, frames covered, the hashes of
                         the answer and of the clip that was sent (for checking)
    incoming/<key>.mp4   a paid answer just downloaded, before it is checked (kept if the run dies)
    jobs/<key>.json      a submitted job (its id; ``billed`` once the service finished it), so a
                         resumed try or run polls or downloads it instead of paying again
    claims/<key>.json    held by the one run paying for the key, on whatever machine (``claims``)
    budgets/<name>.json  a budget several runs share (``claims.SharedBudget``)
    billing/<run>/<segment>.json  the calls billed for a segment in one run, by whichever process or
                         machine paid (``claims.RunBilling``): the run's report adds them up

The key is logical (``tasks.modify.segment_key``): the source's content hash, the sent frame
range and the normalised settings, never the bytes of an encode; it holds no path, run id or
secret, so a new run after a crash, or a run on another machine, finds it.

The store is a local folder, or a folder in a Prefect storage block
(``block://<block-type-slug>/<block-name>/<folder>``, e.g. S3 through ``RemoteFileSystem``) so
that results outlive the machine: then the same layout is kept in the block and mirrored in a
local folder under PREFECT_HOME. A clip and its record are uploaded as soon as they are stored
(the record last: it marks the clip complete), a saved job at once; a lookup that misses locally
asks the block. Claims and budgets are written straight to the block with conditional writes
(``claims``), so two runs on two machines never pay for one segment; a block that cannot write
conditionally is refused as a store.
"""

from __future__ import annotations

import hashlib
import json
import os
import logging
import time
from pathlib import Path

from prefect_modify_video.claims import ConditionalFiles, LocalConditionalFiles, conditional_files_for
from prefect_modify_video.errors import DamagedStoreError
from prefect_modify_video.media.files import atomic_copy, atomic_write, sha256_of_file
from prefect_modify_video.storage.blocks import (
    delete_block_file,
    deliver_output,
    download_block_file,
    load_storage_block,
)
from prefect_modify_video.storage.locations import BlockReference, is_block_reference, parse_block_reference


logger = logging.getLogger(__name__)


def default_store_root() -> Path:
    """``$PREFECT_HOME/modify-video`` (``~/.prefect/modify-video`` by default)."""
    home = os.environ.get("PREFECT_HOME") or str(Path.home() / ".prefect")
    return Path(home).expanduser() / "modify-video"


def cache_key(**parts: object) -> str:
    """The hex sha256 of the given parts, normalised (sorted keys, stripped strings)."""
    normalised = {k: (v.strip() if isinstance(v, str) else v) for k, v in sorted(parts.items())}
    return hashlib.sha256(json.dumps(normalised, sort_keys=True).encode()).hexdigest()


def _write_json_atomic(path: Path, data: dict) -> None:
    with atomic_write(path) as partial:
        partial.write_text(json.dumps(data, indent=2, sort_keys=True))


class ResultStore:
    """Paid results keyed by content, in a local folder or a storage block's folder.

    Args:
        location: A local folder, or ``block://<block-type-slug>/<block-name>/<folder>``;
            ``default_store_root()`` when empty. Created on first write.

    Raises:
        InvalidInputError: a malformed block reference (the block itself is loaded on first use).
    """

    def __init__(self, location: str | Path | None = None):
        self.location = str(location) if location else str(default_store_root())
        self.remote: BlockReference | None = None
        if is_block_reference(self.location):
            self.remote = parse_block_reference(self.location.rstrip("/") + "/")
            mirror = hashlib.sha256(str(self.remote).encode()).hexdigest()[:16]
            self.root = default_store_root() / "mirrors" / mirror
        else:
            self.root = Path(os.path.expanduser(self.location))

    def _remote_file(self, local: Path) -> BlockReference | None:
        """The block file mirrored by ``local`` (a path under ``root``), or ``None`` for a local store."""
        if self.remote is None:
            return None
        return self.remote.joined(local.relative_to(self.root).as_posix())

    def _upload(self, local: Path) -> None:
        if (remote := self._remote_file(local)) is not None:
            deliver_output(local, str(remote))

    def _fetch(self, local: Path) -> bool:
        """Whether ``local`` is there, fetching it from the block when it is not yet mirrored."""
        if local.is_file():
            return True
        remote = self._remote_file(local)
        return remote is not None and download_block_file(remote, local)

    def clip_path(self, key: str) -> Path:
        """Where the clip of ``key`` is kept (locally)."""
        return self.root / "clips" / f"{key}.mp4"

    def get(self, key: str) -> Path | None:
        """The stored clip for ``key``, or ``None``.

        A clip whose bytes no longer match the checksum in its record (a damaged disk or object)
        is set aside (renamed ``<name>.damaged-<time>``, reported) and counts as missing; a store in
        a block is then asked again for its copy.

        Raises:
            InvalidInputError: the store's block cannot be read (a miss would mean paying again).
        """
        path = self.clip_path(key)
        if not (self._fetch(path.with_suffix(".json")) and self._fetch(path)):
            return None
        record = self.record(key)
        if not record:
            return None  # the record marks a clip complete: a damaged one was just set aside
        expected = record.get("answer_sha256")
        if not expected or sha256_of_file(path) == expected:
            return path
        self._set_aside(path, "does not match the checksum in its record")
        if self._fetch(path) and sha256_of_file(path) == expected:
            return path
        return None

    def record(self, key: str) -> dict:
        """What was recorded with the clip of ``key`` (empty when none, or when it is damaged: then set aside)."""
        meta = self.clip_path(key).with_suffix(".json")
        if not self._fetch(meta):
            return {}
        try:
            return json.loads(meta.read_text())
        except (ValueError, UnicodeDecodeError):
            self._set_aside(meta, "is not a readable record")
            return {}

    def _set_aside(self, path: Path, problem: str) -> Path:
        """Renames a damaged store file out of the way (kept, for inspection) and reports it."""
        damaged = path.with_name(f"{path.name}.damaged-{time.time_ns()}")
        os.replace(path, damaged)
        logger.warning("the store file %s %s; set aside as %s and treated as missing", path, problem, damaged)
        return damaged

    def incoming_path(self, key: str) -> Path:
        """Where a paid answer for ``key`` is downloaded: in the store, before it is checked and put."""
        return self.root / "incoming" / f"{key}.mp4"

    def put(self, key: str, clip: Path, record: dict) -> Path:
        """Moves (from ``incoming``) or copies a checked clip into the store, then writes its record
        (the record marks it complete)."""
        if Path(clip).parent == self.incoming_path(key).parent:
            destination = self.clip_path(key)
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(clip, destination)
        else:
            destination = atomic_copy(clip, self.clip_path(key))
        _write_json_atomic(destination.with_suffix(".json"), {**record, "stored_at": time.time()})
        self._upload(destination)
        self._upload(destination.with_suffix(".json"))
        self.forget_job(key)
        return destination

    def save_job(self, key: str, job: dict) -> None:
        """Saves a submitted job so a resumed run can poll it instead of paying again."""
        path = self.root / "jobs" / f"{key}.json"
        _write_json_atomic(path, job)
        self._upload(path)

    def load_job(self, key: str) -> dict | None:
        """The saved job of ``key``, or ``None``.

        Raises:
            DamagedStoreError: the job file cannot be read; it is set aside (the job it named may
                have been paid for, so nothing is sent blindly in its place).
        """
        path = self.root / "jobs" / f"{key}.json"
        if not self._fetch(path):
            return None
        try:
            job = json.loads(path.read_text())
            if not isinstance(job, dict):
                raise ValueError("not an object")
            return job
        except (ValueError, UnicodeDecodeError) as error:
            damaged = self._set_aside(path, "is not a readable job record")
            raise DamagedStoreError(
                f"the saved job record {path} was damaged ({error}) and is set aside as {damaged}; the job it named "
                "may have been accepted and billed. Check the service's dashboard, then re-run: the segment is sent again"
            ) from error

    def has_saved_job(self, key: str) -> bool:
        """Whether a job of ``key`` is saved here (in this machine's copy of the store)."""
        return (self.root / "jobs" / f"{key}.json").is_file()

    def forget_job(self, key: str) -> None:
        """Drops the saved job of ``key``."""
        path = self.root / "jobs" / f"{key}.json"
        path.unlink(missing_ok=True)
        if (remote := self._remote_file(path)) is not None:
            delete_block_file(remote)

    def conditional_files(self, folder: str) -> ConditionalFiles:
        """The store's ``folder`` (``claims``, ``budgets``) written straight to the storage, never a mirror.

        Raises:
            InvalidInputError: the store's storage cannot write conditionally (see ``claims``).
        """
        if self.remote is None:
            return LocalConditionalFiles(self.root / folder)
        return conditional_files_for(load_storage_block(self.remote), self.remote.joined(folder))
