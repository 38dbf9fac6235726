"""Files in Prefect storage blocks: one interface, three adapters, chosen once per block.

Storage blocks are anything with ``read_path``/``write_path`` (``WritableFileSystem``). Each kind is
read and written its own way, behind one interface (``BlockStorage``):

- ``LocalFsStorage`` for ``LocalFileSystem``: files on this machine, copied and renamed in place;
- ``FsspecStorage`` for ``RemoteFileSystem`` (any fsspec protocol: ``s3://``, ``gcs://``, ``az://``,
  ``sftp://``... with the fsspec package for it installed): streamed, listed, signed;
- ``GenericStorage`` for any other block (e.g. ``S3Bucket`` of prefect-aws): ``read_path`` and
  ``write_path`` with the whole file in memory; it cannot list or sign.

``storage_for(block)`` picks the adapter. The functions below it (``deliver_output``,
``download_block_file``, ``delete_block_file``, ``signed_block_url``) take a ``block://`` reference,
load its block and call the adapter.
"""

from __future__ import annotations

import inspect
import uuid
from pathlib import Path
from typing import Any

from prefect_modify_video.errors import InvalidInputError
from prefect_modify_video.media.files import atomic_copy, atomic_write
from prefect_modify_video.storage.locations import (
    BlockReference,
    is_block_reference,
    is_url,
    parse_block_reference,
    redacted_url,
)

CHUNK_BYTES = 1 << 20
"""Bytes read and written at a time when streaming a file."""

# Object stores write an object whole or not at all: a direct upload is already atomic there.
_OBJECT_STORE_PROTOCOLS = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "r2"}


def _call_block_method(method, *args: Any) -> Any:
    """Calls a block method synchronously, whether it is sync, async, or dispatches on context."""
    if hasattr(method, "aio"):  # async_dispatch / sync_compatible: force the sync path
        result = method(*args, _sync=True)
    else:
        result = method(*args)
    if inspect.isawaitable(result):
        from prefect.utilities.asyncutils import run_coro_as_sync

        result = run_coro_as_sync(result)
    return result


def _over_limit(ref: BlockReference, size: int, max_bytes: int) -> InvalidInputError:
    return InvalidInputError(f"{ref}: the file is {size:,} bytes, over the {max_bytes:,}-byte limit")


class BlockStorage:
    """The files of one storage block, addressed by ``BlockReference`` (the path inside the block).

    Every method raises ``InvalidInputError`` naming the reference when the storage fails.
    """

    def __init__(self, block: Any):
        self.block = block

    def local_path(self, ref: BlockReference) -> Path | None:
        """The file's path on this machine when the storage keeps files here, else ``None``."""
        return None

    def read(self, ref: BlockReference, destination: Path, *, max_bytes: int | None = None) -> bool:
        """Copies the file to a local path, atomically.

        Args:
            ref: The file.
            destination: The local copy.
            max_bytes: Largest file accepted (``None``: no limit).

        Returns:
            ``True`` when copied, ``False`` when the block has no such file.

        Raises:
            InvalidInputError: the file is over ``max_bytes``, is a folder, or cannot be read.
        """
        raise NotImplementedError

    def write(self, ref: BlockReference, local_file: Path) -> str:
        """Writes a local file to ``ref``, atomically where the storage allows.

        Returns:
            Where it was written, for people (a path, a remote path, or ``""``).
        """
        raise NotImplementedError

    def delete(self, ref: BlockReference) -> None:
        """Deletes the file if it is there."""
        raise NotImplementedError

    def list_files(self, ref: BlockReference, *, recursive: bool) -> list[str]:
        """Paths of the files under the folder ``ref``, relative to it, with ``/`` separators."""
        raise InvalidInputError(
            f"{ref}: a {ref.block_type_slug} block cannot list its files here; use a local-file-system or "
            "remote-file-system block, or give the videos as sources"
        )

    def sign(self, ref: BlockReference, expires_seconds: int) -> str:
        """A URL anyone holding it can GET the file at for ``expires_seconds`` (a presigned URL)."""
        raise InvalidInputError(
            f"{ref}: this storage cannot make URLs a service can read; use a RemoteFileSystem block on an "
            "object store (s3://, gs://) or an HTTP upload store (upload_url)"
        )


class LocalFsStorage(BlockStorage):
    """A ``LocalFileSystem`` block: files under its basepath on this machine."""

    def _path(self, ref: BlockReference) -> Path:
        try:
            return self.block._resolve_path(ref.path or ".")
        except ValueError as error:
            raise InvalidInputError(f"{ref}: {error}") from error

    def local_path(self, ref: BlockReference) -> Path:
        return self._path(ref)

    def read(self, ref: BlockReference, destination: Path, *, max_bytes: int | None = None) -> bool:
        path = self._path(ref)
        if not path.is_file():
            return False
        if max_bytes is not None and path.stat().st_size > max_bytes:
            raise _over_limit(ref, path.stat().st_size, max_bytes)
        try:
            atomic_copy(path, destination)
        except OSError as error:
            raise InvalidInputError(f"{ref}: could not be read ({error})") from error
        return True

    def write(self, ref: BlockReference, local_file: Path) -> str:
        target = self._path(ref)
        if target.is_dir():
            raise InvalidInputError(f"{ref}: is a folder ({target}); give a file name")
        try:
            atomic_copy(local_file, target)
        except OSError as error:
            raise InvalidInputError(f"{ref}: could not be written ({error})") from error
        return str(target)

    def delete(self, ref: BlockReference) -> None:
        try:
            self._path(ref).unlink(missing_ok=True)
        except OSError as error:
            raise InvalidInputError(f"{ref}: could not be deleted ({error})") from error

    def list_files(self, ref: BlockReference, *, recursive: bool) -> list[str]:
        root = self._path(ref)
        if not root.is_dir():
            raise InvalidInputError(f"{ref}: no such folder ({root}); check the path inside the block")
        files = root.rglob("*") if recursive else root.iterdir()
        return [path.relative_to(root).as_posix() for path in files if path.is_file()]


class FsspecStorage(BlockStorage):
    """A ``RemoteFileSystem`` block: an fsspec file system, streamed."""

    def _path(self, ref: BlockReference) -> str:
        try:
            return self.block._resolve_path(ref.path)
        except ValueError as error:
            raise InvalidInputError(f"{ref}: {error}") from error

    def read(self, ref: BlockReference, destination: Path, *, max_bytes: int | None = None) -> bool:
        filesystem = self.block.filesystem
        remote = self._path(ref)
        try:
            info = filesystem.info(remote)
        except FileNotFoundError:
            return False
        except OSError as error:
            raise InvalidInputError(f"{ref}: could not be read ({error})") from error
        if info.get("type") == "directory":
            raise InvalidInputError(f"{ref}: is a folder ({remote}), not a file")
        size = info.get("size")
        if max_bytes is not None and size is not None and size > max_bytes:
            raise _over_limit(ref, size, max_bytes)
        received = 0
        try:
            with atomic_write(destination) as partial, filesystem.open(remote, "rb") as source, open(
                partial, "wb"
            ) as handle:
                while chunk := source.read(CHUNK_BYTES):
                    received += len(chunk)
                    if max_bytes is not None and received > max_bytes:
                        raise InvalidInputError(f"{ref}: the file passed the {max_bytes:,}-byte limit")
                    handle.write(chunk)
        except FileNotFoundError:
            return False
        except OSError as error:
            raise InvalidInputError(f"{ref}: could not be read ({error})") from error
        return True

    def write(self, ref: BlockReference, local_file: Path) -> str:
        filesystem = self.block.filesystem
        remote = self._path(ref)
        protocols = filesystem.protocol if isinstance(filesystem.protocol, (tuple, list)) else (filesystem.protocol,)
        parent = remote.rsplit("/", 1)[0]
        try:
            filesystem.makedirs(parent, exist_ok=True)
            if set(protocols) & _OBJECT_STORE_PROTOCOLS:
                filesystem.put_file(str(local_file), remote)
            else:
                partial = f"{parent}/.{ref.name}.{uuid.uuid4().hex[:8]}.partial"
                try:
                    filesystem.put_file(str(local_file), partial)
                    filesystem.mv(partial, remote)
                finally:
                    if filesystem.exists(partial):
                        filesystem.rm(partial)
        except OSError as error:
            raise InvalidInputError(f"{ref}: could not be written ({error})") from error
        return remote

    def delete(self, ref: BlockReference) -> None:
        remote = self._path(ref)
        try:
            if self.block.filesystem.exists(remote):
                self.block.filesystem.rm(remote)
        except OSError as error:
            raise InvalidInputError(f"{ref}: could not be deleted ({error})") from error

    def list_files(self, ref: BlockReference, *, recursive: bool) -> list[str]:
        filesystem = self.block.filesystem
        remote = self._path(BlockReference(ref.block_type_slug, ref.block_name, ref.path.rstrip("/")))
        root = filesystem._strip_protocol(remote).rstrip("/")
        try:
            entries = filesystem.find(root, maxdepth=None if recursive else 1, detail=False)
        except FileNotFoundError as error:
            raise InvalidInputError(f"{ref}: no such folder ({remote})") from error
        found = []
        for entry in entries:
            entry = filesystem._strip_protocol(entry)
            if entry.startswith(root + "/"):
                found.append(entry[len(root) + 1 :])
        return found

    def sign(self, ref: BlockReference, expires_seconds: int) -> str:
        try:
            return self.block.filesystem.sign(self._path(ref), expiration=expires_seconds)
        except NotImplementedError:
            return super().sign(ref, expires_seconds)
        except OSError as error:
            raise InvalidInputError(f"{ref}: could not make a URL for it ({error})") from error


class GenericStorage(BlockStorage):
    """Any other block with ``read_path``/``write_path``: whole files in memory, no listing, no signing."""

    def read(self, ref: BlockReference, destination: Path, *, max_bytes: int | None = None) -> bool:
        try:
            content = _call_block_method(self.block.read_path, ref.path)
        except (FileNotFoundError, ValueError):
            return False
        except OSError as error:
            raise InvalidInputError(f"{ref}: could not be read ({error}); check the path inside the block") from error
        if max_bytes is not None and len(content) > max_bytes:
            raise _over_limit(ref, len(content), max_bytes)
        with atomic_write(destination) as partial:
            partial.write_bytes(content)
        return True

    def write(self, ref: BlockReference, local_file: Path) -> str:
        try:
            written = _call_block_method(self.block.write_path, ref.path, local_file.read_bytes())
        except (ValueError, OSError) as error:
            raise InvalidInputError(f"{ref}: could not be written ({error})") from error
        return str(written) if written else ""

    def delete(self, ref: BlockReference) -> None:
        # A block with only write_path cannot delete: the file is emptied instead.
        try:
            _call_block_method(self.block.write_path, ref.path, b"")
        except (OSError, ValueError) as error:
            raise InvalidInputError(f"{ref}: could not be deleted ({error})") from error


def storage_for(block: Any) -> BlockStorage:
    """The adapter that reads and writes ``block``'s files.

    Args:
        block: A loaded storage block (with ``read_path``).

    Returns:
        ``LocalFsStorage`` for a ``LocalFileSystem``, ``FsspecStorage`` for a ``RemoteFileSystem``,
        ``GenericStorage`` for any other block.
    """
    from prefect.filesystems import LocalFileSystem, RemoteFileSystem

    if isinstance(block, LocalFileSystem):
        return LocalFsStorage(block)
    if isinstance(block, RemoteFileSystem):
        return FsspecStorage(block)
    return GenericStorage(block)


def load_storage_block(reference: str | BlockReference):
    """Loads the block a ``block://`` reference names.

    Raises:
        InvalidInputError: no such block on the Prefect server, or it cannot store files.
    """
    import prefect.filesystems  # noqa: F401  (registers LocalFileSystem and RemoteFileSystem)
    from prefect.blocks.core import Block

    ref = parse_block_reference(reference)
    try:
        block = Block.load(ref.block_slug, _sync=True)
    except (ValueError, KeyError) as error:
        raise InvalidInputError(
            f"{ref}: no block {ref.block_name!r} of type {ref.block_type_slug!r} could be loaded ({error}); "
            f"save one first, e.g. LocalFileSystem(basepath='/data/videos').save({ref.block_name!r})"
        ) from error
    if not hasattr(block, "read_path"):
        raise InvalidInputError(f"{ref}: block type {ref.block_type_slug!r} stores no files (it has no read_path)")
    return block


def open_storage(reference: str | BlockReference) -> tuple[BlockReference, BlockStorage]:
    """Parses a ``block://`` reference, loads its block and picks its adapter.

    Raises:
        InvalidInputError: the reference is malformed, or its block cannot be loaded.
    """
    ref = parse_block_reference(reference)
    return ref, storage_for(load_storage_block(ref))


def deliver_output(local_file: Path, destination: str) -> str:
    """Puts a finished local file at its destination.

    A ``block://`` destination is written through the block, atomically where the storage allows:
    a ``LocalFileSystem`` gets a temporary file beside the target then a rename; a
    ``RemoteFileSystem`` on an object store (S3, GCS, Azure) gets one upload (an object appears
    whole or not at all), elsewhere an upload under a temporary name then a move; other blocks
    get ``write_path``. A destination ending in ``/`` is a folder: the file keeps its name.
    A local path is the caller's business: it is returned unchanged.

    Args:
        local_file: The finished file.
        destination: A local path or ``block://<block-type-slug>/<block-name>/<path>``.

    Returns:
        Where the file now is, for people: the reference and, for blocks, the resolved path.

    Raises:
        InvalidInputError: the destination is a URL, or the block cannot be loaded or written.
    """
    local_file = Path(local_file)
    if is_url(destination):
        raise InvalidInputError(
            f"{redacted_url(destination)}: cannot write to a URL; use a local path or a block:// reference"
        )
    if not is_block_reference(destination):
        return destination
    ref = parse_block_reference(destination)
    if ref.is_folder:
        ref = ref.joined(local_file.name)
    written = storage_for(load_storage_block(ref)).write(ref, local_file)
    return f"{ref} ({written})" if written else str(ref)


def download_block_file(reference: str | BlockReference, destination: Path) -> bool:
    """Copies a file out of a storage block to a local path, atomically.

    Returns:
        ``True`` when copied, ``False`` when the block has no such file.

    Raises:
        InvalidInputError: the block cannot be loaded or read (other than the file missing).
    """
    ref, storage = open_storage(reference)
    return storage.read(ref, Path(destination))


def signed_block_url(reference: str | BlockReference, expires_seconds: int = 24 * 3600) -> str:
    """A URL anyone holding it can GET the block's file at for ``expires_seconds`` (a presigned URL).

    Raises:
        InvalidInputError: the block's storage cannot sign URLs (only object stores such as S3 or
            GCS through a ``RemoteFileSystem`` can).
    """
    ref, storage = open_storage(reference)
    return storage.sign(ref, expires_seconds)


def delete_block_file(reference: str | BlockReference) -> None:
    """Deletes a file from a storage block if it is there (a block with only ``write_path`` gets it emptied).

    Raises:
        InvalidInputError: the block cannot be loaded or written.
    """
    ref, storage = open_storage(reference)
    storage.delete(ref)

