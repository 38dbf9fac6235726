"""A run's work files that segment tasks on other machines read: shared through the store's storage block.

When the segment tasks run on a cluster (``tasks.runners.runs_elsewhere``) and the store is a
``block://`` folder, the source, the extracted clips, the first-frame images and the conformed clips
go through ``<store>/work/<run>/`` in that block instead of one machine's paths: a task uploads what
it makes and returns its ``block://`` reference, and a task (or the flow) given a reference
downloads it into its own work folder first. Otherwise everything stays a local path, as before.
"""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path

from prefect_modify_video.media.probe import VideoInfo
from prefect_modify_video.storage.blocks import deliver_output, download_block_file, load_storage_block
from prefect_modify_video.storage.locations import is_block_reference, parse_block_reference
from prefect_modify_video.tasks.runners import runs_elsewhere

logger = logging.getLogger(__name__)
_downloading = threading.Lock()


def shared_work_location(store_dir: str, run_key: str) -> str | None:
    """``<store>/work/<run>`` when segment tasks run elsewhere and the store is a block, else ``None``."""
    if runs_elsewhere() and is_block_reference(store_dir):
        return f"{store_dir.rstrip('/')}/work/{run_key}"
    return None


def share_file(path: Path | str, shared: str | None, name: str, *, move: bool = False) -> str:
    """``path`` put at ``<shared>/<name>`` (its reference), or ``path`` itself when nothing is shared.

    Args:
        move: Delete the local file once it is shared (a task's own output: the worker keeps no clip).
    """
    if shared is None:
        return str(path)
    reference = f"{shared}/{name}"
    deliver_output(Path(path), reference)  # (it returns a location for people, not the reference)
    if move:
        Path(path).unlink(missing_ok=True)
    return reference


def local_file(reference: Path | str, work_dir: str) -> Path:
    """A local copy of a shared file (downloaded once per machine into ``work_dir``), or the local path given."""
    reference = str(reference)
    if not is_block_reference(reference):
        return Path(reference)
    local = Path(work_dir) / "shared" / reference.split("/work/", 1)[-1]
    with _downloading:  # the tasks of one worker process share their copies
        if not local.is_file() and not download_block_file(reference, local):
            raise FileNotFoundError(f"{reference}: a work file of the run is missing from the store")
    return local


def shared_source(info: VideoInfo, shared: str | None) -> VideoInfo:
    """The probed source as the segment tasks see it: uploaded once to the shared folder when there is one."""
    if shared is None:
        return info
    return info.model_copy(update={"path": share_file(info.path, shared, "source" + Path(info.path).suffix)})


def local_info(info: VideoInfo, work_dir: str) -> VideoInfo:
    """The probed source with a local path (downloaded when it is shared)."""
    path = local_file(info.path, work_dir)
    return info if str(path) == info.path else info.model_copy(update={"path": str(path)})


def remove_shared_folder(shared: str) -> None:
    """Deletes the run's shared work folder (once the flow has its own copies of what it needs)."""
    from prefect.filesystems import LocalFileSystem, RemoteFileSystem

    reference = parse_block_reference(shared.rstrip("/") + "/")
    block = load_storage_block(reference)
    try:
        if isinstance(block, RemoteFileSystem):
            block.filesystem.rm(block._resolve_path(reference.path.rstrip("/")), recursive=True)
        elif isinstance(block, LocalFileSystem):
            shutil.rmtree(block._resolve_path(reference.path.rstrip("/")), ignore_errors=True)
        else:
            logger.warning("%s: the run's shared work files are left there (delete the folder)", shared)
    except FileNotFoundError:
        pass
