"""Scratch folders that say who made them, and the removal of those a dead run left.

A run makes two scratch folders: the hidden work folder beside the output (``.<stem>.work-XXXX``,
extracted and conformed clips) and the fetch folder in the system temp folder
(``modify-video-fetch-XXXX``, a downloaded source). A run that ends removes its own; a run killed
with SIGKILL, or by a power cut, cannot, and a film leaves gigabytes. So each folder is made with a
marker file naming its owner (host, boot, pid namespace, pid and the process's start time), and a
run removes the sibling folders whose owner it can prove dead: on this host, and its pid gone, or
reused by a process started at another time, or started before this host last booted. A folder
without a readable marker, of another host or pid namespace, or of a live process is never touched.

No Prefect in here: the flow calls ``make_scratch_dir`` and ``remove_dead_scratch_dirs``.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

MARKER = ".modify-video-owner.json"
"""The file in each scratch folder that names its owner."""


@dataclass(frozen=True)
class Owner:
    """The process that made a scratch folder, as it can be recognised later on the same host."""

    host: str
    pid: int
    started: str | None = None
    """The process's start time (Linux: clock ticks after boot, from /proc), or None where unknown."""
    boot: str | None = None
    """The kernel's boot id (Linux), so that a pid from before a reboot is known dead."""
    pid_namespace: str | None = None
    """The pid namespace (Linux), so that a container's pids are never read as this one's."""


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def process_start_time(pid: int) -> str | None:
    """When process ``pid`` started (Linux: field 22 of /proc/<pid>/stat), or None if unknown or gone."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    # The command name (field 2) is in parentheses and may hold spaces and parentheses itself.
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


def current_owner() -> Owner:
    """This process as the owner of the folders it makes."""
    pid = os.getpid()
    return Owner(
        host=socket.gethostname(),
        pid=pid,
        started=process_start_time(pid),
        boot=_read("/proc/sys/kernel/random/boot_id"),
        pid_namespace=_pid_namespace(),
    )


def _pid_exists(pid: int) -> bool | None:
    """Whether a process ``pid`` exists; None where that cannot be asked safely (Windows)."""
    if sys.platform == "win32":  # os.kill there terminates the process
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    except OSError:
        return None
    return True


def owner_is_dead(owner: Owner, me: Owner | None = None) -> bool:
    """Whether ``owner`` is proven gone, seen from ``me`` (this process by default).

    Proven only on the same host and pid namespace: its boot is over, its pid is gone, or its pid
    now belongs to a process started at another time. Anything unsure counts as alive.
    """
    me = me or current_owner()
    if owner.host != me.host or owner.pid <= 0:
        return False
    if owner.boot and me.boot and owner.boot != me.boot:
        return True  # this host has rebooted since: every process of the folder's boot is gone
    if owner.pid_namespace != me.pid_namespace:
        return False
    if owner.pid == me.pid:
        return owner.started is not None and me.started is not None and owner.started != me.started
    exists = _pid_exists(owner.pid)
    if exists is None:
        return False
    if not exists:
        return True
    started = process_start_time(owner.pid)
    return owner.started is not None and started is not None and started != owner.started


def read_owner(folder: Path) -> Owner | None:
    """The owner written in ``folder``'s marker, or None when there is none or it cannot be read."""
    try:
        data = json.loads((folder / MARKER).read_text())
        return Owner(
            host=str(data["host"]),
            pid=int(data["pid"]),
            started=None if data.get("started") is None else str(data["started"]),
            boot=data.get("boot"),
            pid_namespace=data.get("pid_namespace"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def make_scratch_dir(prefix: str, parent: Path | str | None = None) -> Path:
    """Makes a new folder ``<parent>/<prefix>XXXX`` (``tempfile.mkdtemp``) holding its owner's marker.

    Args:
        prefix: The start of the folder's name, e.g. ``.film.work-``.
        parent: Where the folder is made; the system temp folder by default.

    Returns:
        The new folder.
    """
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=None if parent is None else str(parent)))
    try:
        (folder / MARKER).write_text(json.dumps(asdict(current_owner())))
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def remove_dead_scratch_dirs(pattern: str, parent: Path | str | None = None) -> list[Path]:
    """Removes the folders of ``parent`` named like ``pattern`` whose marker names an owner proven dead.

    A folder without a marker (made by an older version, or by another program), of another user or
    host, or whose owner may be alive, is kept; so is one that cannot be removed (a warning says so).

    Args:
        pattern: The folders' names, as a shell pattern (``fnmatch``), e.g. ``modify-video-fetch-*``.
        parent: Where they are; the system temp folder by default.

    Returns:
        The folders removed.
    """
    parent = Path(tempfile.gettempdir() if parent is None else parent)
    try:
        candidates = [p for p in parent.iterdir() if fnmatch.fnmatchcase(p.name, pattern)]
    except OSError:
        return []
    me = current_owner()
    uid = os.getuid() if hasattr(os, "getuid") else None
    removed = []
    for folder in sorted(candidates):
        try:
            if folder.is_symlink() or not folder.is_dir() or (uid is not None and folder.stat().st_uid != uid):
                continue
        except OSError:
            continue
        owner = read_owner(folder)
        if owner is None or not owner_is_dead(owner, me):
            continue
        try:
            shutil.rmtree(folder)
        except FileNotFoundError:
            continue  # another run removed it first
        except OSError as error:
            logger.warning("%s: left by a run that died (pid %d) but cannot be removed: %s", folder, owner.pid, error)
            continue
        removed.append(folder)
    return removed
