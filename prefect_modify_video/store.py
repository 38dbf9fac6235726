"""Durable store of paid results, named by content, so a re-run never pays for a clip twice.

Layout under the root folder::

    clips/<key>.mp4      a validated clip the service returned
    clips/<key>.json     what the call was: provider, job id, cost, when
    jobs/<key>.json      a submitted, unfinished job (its id), so a resumed run polls it
    locks/<key>.lock     held while one process works on the key

The key is the sha256 of the extracted segment file plus the normalised parameters; it holds
no path, run id or secret, so a new run after a crash finds it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from prefect_modify_video.media.ffmpeg import atomic_destination


def default_store_root() -> Path:
    """``$PREFECT_HOME/modify-video`` (``~/.prefect/modify-video`` by default)."""
    home = os.environ.get("PREFECT_HOME") or str(Path.home() / ".prefect")
    return Path(home).expanduser() / "modify-video"


def cache_key(**parts: object) -> str:
    """The hex sha256 of the given parts, normalised (sorted keys, stripped strings)."""
    normalised = {k: (v.strip() if isinstance(v, str) else v) for k, v in sorted(parts.items())}
    return hashlib.sha256(json.dumps(normalised, sort_keys=True).encode()).hexdigest()


def _write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = atomic_destination(path)
    partial.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(partial, path)


class ResultStore:
    """Paid results on local disk, keyed by content.

    Args:
        root: The folder; created on first write.
    """

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else default_store_root()

    def clip_path(self, key: str) -> Path:
        """Where the clip of ``key`` is kept."""
        return self.root / "clips" / f"{key}.mp4"

    def get(self, key: str) -> Path | None:
        """The stored clip for ``key``, or ``None``."""
        path = self.clip_path(key)
        return path if path.is_file() and path.with_suffix(".json").is_file() else None

    def record(self, key: str) -> dict:
        """What was recorded with the clip of ``key`` (empty when none)."""
        meta = self.clip_path(key).with_suffix(".json")
        return json.loads(meta.read_text()) if meta.is_file() else {}

    def put(self, key: str, clip: Path, record: dict) -> Path:
        """Copies a validated clip into the store, then its record (the record marks it complete)."""
        destination = self.clip_path(key)
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = atomic_destination(destination)
        shutil.copyfile(clip, partial)
        os.replace(partial, destination)
        _write_json_atomic(destination.with_suffix(".json"), {**record, "stored_at": time.time()})
        self.forget_job(key)
        return destination

    def save_job(self, key: str, job: dict) -> None:
        """Saves a submitted job so a resumed run can poll it instead of paying again."""
        _write_json_atomic(self.root / "jobs" / f"{key}.json", job)

    def load_job(self, key: str) -> dict | None:
        """The saved unfinished job of ``key``, or ``None``."""
        path = self.root / "jobs" / f"{key}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def forget_job(self, key: str) -> None:
        """Drops the saved job of ``key``."""
        (self.root / "jobs" / f"{key}.json").unlink(missing_ok=True)

    @contextmanager
    def lock(self, key: str, *, stale_after_seconds: float = 3600.0, poll_seconds: float = 0.5) -> Iterator[None]:
        """Holds an exclusive lock on ``key`` across processes (a lock file created with O_EXCL).

        A lock whose holder process is gone, or older than ``stale_after_seconds``, is taken over.
        """
        path = self.root / "locks" / f"{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if self._is_stale(path, stale_after_seconds):
                    path.unlink(missing_ok=True)
                    continue
                time.sleep(poll_seconds)
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(str(os.getpid()))
            break
        try:
            yield
        finally:
            path.unlink(missing_ok=True)

    @staticmethod
    def _is_stale(path: Path, stale_after_seconds: float) -> bool:
        try:
            pid = int(path.read_text() or 0)
            age = time.time() - path.stat().st_mtime
        except (OSError, ValueError):
            return False
        if age > stale_after_seconds:
            return True
        if pid <= 0:
            return age > 5
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
