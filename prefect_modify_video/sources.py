"""Where videos and first-frame images come from and where outputs go: local paths, URLs, storage blocks.

Three kinds of location are understood, each one plain string (so a deployment parameter, a CLI
argument or a Prefect event can carry it):

- a **local path**: ``film.mp4``, ``~/videos/film.mp4``, ``/data/in/film.mp4`` (``file://`` URLs too);
- an **http(s) URL**: ``https://example.com/film.mp4``, downloaded (streamed, size-capped, checked to
  be media and not an HTML or JSON page);
- a **storage-block reference**::

      block://<block-type-slug>/<block-name>/<path inside the block>

  e.g. ``block://local-file-system/my-videos/in/film.mp4`` or
  ``block://remote-file-system/s3-videos/in/film.mp4``. ``<block-type-slug>`` and ``<block-name>``
  are the two halves of Prefect's own block slug (``Block.load("local-file-system/my-videos")``);
  both are lowercase letters, digits and dashes, so the first two ``/`` split them unambiguously.
  The rest is the path inside the block, relative to its ``basepath``, taken literally (no
  percent-decoding); ``..`` is refused. A reference ending in ``/`` (or with no path) names a
  folder: ``block://remote-file-system/s3-videos/in/``.

Storage blocks are anything with ``read_path``/``write_path`` (``WritableFileSystem``):
``LocalFileSystem`` and ``RemoteFileSystem`` (any fsspec protocol: ``s3://``, ``gcs://``,
``az://``, ``sftp://``... with the fsspec package for it installed) are read and written by
streaming; other blocks (e.g. ``S3Bucket`` of prefect-aws) through ``read_path``/``write_path``
with the whole file in memory.

Nothing here runs a flow or a task; Prefect is used only to load blocks (and to emit an event).
"""

from __future__ import annotations

import hashlib
import inspect
import os
import re
import shutil
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import httpx

from prefect_modify_video.errors import InvalidInputError

BLOCK_SCHEME = "block://"
DEFAULT_MAX_BYTES = 10 * 2**30
"""10 GiB: the largest source fetched unless told otherwise."""
DEFAULT_TIMEOUT_SECONDS = 60.0
CHUNK_BYTES = 1 << 20

VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".wmv", ".flv", ".3gp",
    ".ogv",
})
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
# Names the pipeline itself writes beside sources; a folder listing skips them.
OUTPUT_NAME_MARKERS = (".modified.", ".preview.")

MediaKind = Literal["video", "image", "any"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
# Bodies that are pages or API answers, never media.
_REFUSED_CONTENT_TYPES = {"application/json", "application/xml", "application/xhtml+xml", "application/problem+json"}


# --------------------------------------------------------------------------------------------
# References


@dataclass(frozen=True)
class BlockReference:
    """A parsed ``block://<block-type-slug>/<block-name>/<path>`` reference."""

    block_type_slug: str
    block_name: str
    path: str = ""
    """Path inside the block, relative to its basepath, without a leading ``/``; ``""`` is its root."""

    @property
    def block_slug(self) -> str:
        """``<block-type-slug>/<block-name>``, as ``Block.load`` takes it."""
        return f"{self.block_type_slug}/{self.block_name}"

    @property
    def is_folder(self) -> bool:
        """Whether the reference names a folder (no path, or a path ending in ``/``)."""
        return not self.path or self.path.endswith("/")

    @property
    def name(self) -> str:
        """The last part of the path (the file name), ``""`` for a folder."""
        return "" if self.is_folder else PurePosixPath(self.path).name

    def joined(self, name: str) -> "BlockReference":
        """The reference of ``name`` inside this folder."""
        folder = self.path.rstrip("/")
        return BlockReference(self.block_type_slug, self.block_name, f"{folder}/{name}" if folder else name)

    def sibling(self, name: str) -> "BlockReference":
        """The reference of ``name`` in the same folder as this file."""
        parent = str(PurePosixPath(self.path).parent) if "/" in self.path.rstrip("/") else ""
        return BlockReference(self.block_type_slug, self.block_name, f"{parent}/{name}" if parent else name)

    def __str__(self) -> str:
        return f"{BLOCK_SCHEME}{self.block_slug}/{self.path}"


def is_block_reference(reference: str) -> bool:
    """Whether ``reference`` is a ``block://`` reference."""
    return reference.strip().lower().startswith(BLOCK_SCHEME)


def is_url(reference: str) -> bool:
    """Whether ``reference`` is an http(s) URL."""
    return reference.strip().lower().startswith(("http://", "https://"))


def is_remote(reference: str) -> bool:
    """Whether ``reference`` is fetched (an http(s) URL or a ``block://`` reference), not a local path."""
    return is_url(reference) or is_block_reference(reference)


def parse_block_reference(reference: str) -> BlockReference:
    """Parses ``block://<block-type-slug>/<block-name>/<path>``.

    Raises:
        InvalidInputError: the reference is malformed, naming it and the expected form.
    """
    text = reference.strip()
    if not is_block_reference(text):
        raise InvalidInputError(f"{reference}: not a block reference; use block://<block-type-slug>/<block-name>/<path>")
    rest = text[len(BLOCK_SCHEME):]
    block_type_slug, _, rest = rest.partition("/")
    block_name, _, path = rest.partition("/")
    if not _NAME.match(block_type_slug) or not _NAME.match(block_name):
        raise InvalidInputError(
            f"{reference}: expected block://<block-type-slug>/<block-name>/<path>, e.g. "
            "block://local-file-system/my-videos/in/film.mp4 (slug and name: lowercase letters, digits, dashes)"
        )
    path = path.lstrip("/")
    if any(part == ".." for part in path.split("/")):
        raise InvalidInputError(f"{reference}: '..' is not allowed in a block path; name the file from the block's root")
    return BlockReference(block_type_slug, block_name, path)


def location_name(reference: str) -> str:
    """The file name a location ends in (path, URL path or block path); ``""`` when it names none."""
    text = reference.strip()
    if is_block_reference(text):
        return parse_block_reference(text).name
    if is_url(text) or text.lower().startswith("file://"):
        return PurePosixPath(urllib.parse.unquote(urllib.parse.urlsplit(text).path)).name
    return Path(os.path.expanduser(text)).name


def join_location(folder: str, name: str) -> str:
    """``name`` inside ``folder``: a local folder or a ``block://`` folder reference.

    Raises:
        InvalidInputError: ``folder`` is a URL (nothing can be written to one).
    """
    if is_block_reference(folder):
        return str(parse_block_reference(folder).joined(name))
    if is_url(folder):
        raise InvalidInputError(f"{_shown(folder)}: cannot write to a URL; use a local folder or a block:// folder")
    return str(Path(os.path.expanduser(folder)) / name)


def sibling_location(reference: str, name: str) -> str:
    """``name`` beside the file ``reference`` (local path or ``block://``).

    Raises:
        InvalidInputError: ``reference`` is a URL (there is no writable place beside it).
    """
    if is_block_reference(reference):
        return str(parse_block_reference(reference).sibling(name))
    if is_url(reference):
        raise InvalidInputError(
            f"{_shown(reference)}: nothing can be written beside a URL source; give an output folder "
            "(local or block://...)"
        )
    return str(Path(os.path.expanduser(reference)).with_name(name))


def _shown(url: str) -> str:
    """A URL fit for messages and logs: the query (often a signature or token) replaced by ``?…``."""
    parts = urllib.parse.urlsplit(url.strip())
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "…" if parts.query else "", ""))


# --------------------------------------------------------------------------------------------
# Sniffing


def sniff_media(head: bytes) -> str | None:
    """The container or image format the first bytes of a file announce, or ``None``.

    Returns one of ``mp4`` (also MOV/3GP), ``matroska`` (also WebM), ``avi``, ``mpegts``,
    ``mpegps``, ``flv``, ``ogg``, ``asf``, ``png``, ``jpeg``, ``webp``, ``gif``, ``bmp``, ``tiff``.
    """
    if len(head) >= 8 and head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid"):
        return "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if head[:1] == b"\x47" and (len(head) < 189 or head[188:189] == b"\x47"):
        return "mpegts"
    if head.startswith(b"\x00\x00\x01\xba"):
        return "mpegps"
    if head.startswith(b"FLV"):
        return "flv"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return "asf"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"BM"):
        return "bmp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    return None


_VIDEO_FORMATS = {"mp4": ".mp4", "matroska": ".mkv", "avi": ".avi", "mpegts": ".ts", "mpegps": ".mpg",
                  "flv": ".flv", "ogg": ".ogv", "asf": ".wmv"}
_IMAGE_FORMATS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "gif": ".gif", "bmp": ".bmp", "tiff": ".tif"}


def _accepts(kind: MediaKind, media_format: str | None) -> bool:
    if media_format is None:
        return False
    if kind == "video":
        return media_format in _VIDEO_FORMATS
    if kind == "image":
        return media_format in _IMAGE_FORMATS
    return True


# --------------------------------------------------------------------------------------------
# Blocks


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


def load_storage_block(reference: str | BlockReference):
    """Loads the block a ``block://`` reference names.

    Raises:
        InvalidInputError: no such block on the Prefect server, or it cannot store files.
    """
    import prefect.filesystems  # noqa: F401  (registers LocalFileSystem and RemoteFileSystem)
    from prefect.blocks.core import Block

    ref = reference if isinstance(reference, BlockReference) else parse_block_reference(reference)
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


def _block_local_path(block, ref: BlockReference) -> Path:
    try:
        return block._resolve_path(ref.path or ".")
    except ValueError as error:
        raise InvalidInputError(f"{ref}: {error}") from error


def _block_fsspec_path(block, ref: BlockReference) -> str:
    try:
        return block._resolve_path(ref.path)
    except ValueError as error:
        raise InvalidInputError(f"{ref}: {error}") from error


def _kind_of_block(block) -> str:
    from prefect.filesystems import LocalFileSystem, RemoteFileSystem

    if isinstance(block, LocalFileSystem):
        return "local"
    if isinstance(block, RemoteFileSystem):
        return "fsspec"
    return "generic"


# --------------------------------------------------------------------------------------------
# Fetching


def fetch_source(
    source: str,
    work_dir: Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    kind: MediaKind = "video",
) -> Path:
    """Makes a source (video or first-frame image) available as a local file.

    - A local path is returned as it is (``~`` expanded; ``file://`` URLs turned into paths); its
      existence and content are checked later, by the probe.
    - An http(s) URL is streamed into ``work_dir`` (redirects followed), keeping its file name.
      A 4xx/5xx answer, an HTML/JSON/text body, a body whose first bytes are no known
      ``kind`` format, a body over ``max_bytes`` and a connection error are each refused.
    - A ``block://`` reference is read through its block: a ``LocalFileSystem`` file is already on
      this machine and is returned in place (not copied); a ``RemoteFileSystem`` file is streamed
      into ``work_dir``; other blocks are read with ``read_path``.

    Args:
        source: Local path, URL or ``block://<block-type-slug>/<block-name>/<path>``.
        work_dir: Folder for downloaded files (created when needed).
        max_bytes: Largest file accepted (10 GiB by default).
        timeout: Seconds to wait for a connection or for the next bytes of an answer.
        kind: ``video``, ``image`` or ``any``: what the first bytes of a download must be.

    Returns:
        The local file.

    Raises:
        InvalidInputError: one line naming the source and what to do.
    """
    text = source.strip()
    if not text:
        raise InvalidInputError("the source is empty; give a local path, an http(s) URL or a block:// reference")
    if is_url(text):
        return _download_url(text, Path(work_dir), max_bytes=max_bytes, timeout=timeout, kind=kind)
    if is_block_reference(text):
        return _fetch_from_block(text, Path(work_dir), max_bytes=max_bytes, kind=kind)
    if text.lower().startswith("file://"):
        return Path(urllib.parse.unquote(urllib.parse.urlsplit(text).path))
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", text):
        raise InvalidInputError(
            f"{_shown(text)}: unsupported scheme; use a local path, an http(s) URL, or save a storage block "
            "for it and use block://<block-type-slug>/<block-name>/<path>"
        )
    return Path(os.path.expanduser(text))


def _safe_file_name(name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return name[:150]


def _name_from_response(response: httpx.Response, url: str) -> str:
    disposition = response.headers.get("content-disposition", "")
    match = re.search(r"filename\*\s*=\s*(?:UTF-8'')?\"?([^\";]+)\"?", disposition, re.I) or re.search(
        r"filename\s*=\s*\"?([^\";]+)\"?", disposition, re.I
    )
    if match:
        name = _safe_file_name(PurePosixPath(urllib.parse.unquote(match.group(1))).name)
        if name:
            return name
    return _safe_file_name(PurePosixPath(urllib.parse.unquote(urllib.parse.urlsplit(str(response.url)).path)).name)


def _with_extension(name: str, media_format: str | None) -> str:
    suffix = Path(name).suffix.lower()
    if suffix in VIDEO_EXTENSIONS or suffix in IMAGE_EXTENSIONS:
        return name
    extension = _VIDEO_FORMATS.get(media_format or "") or _IMAGE_FORMATS.get(media_format or "") or ".bin"
    return f"{name or 'source'}{extension}"


def _download_url(url: str, work_dir: Path, *, max_bytes: int, timeout: float, kind: MediaKind) -> Path:
    shown = _shown(url)
    folder = work_dir / f"url-{hashlib.sha256(url.encode()).hexdigest()[:12]}"
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".download-{uuid.uuid4().hex[:8]}.partial"
    try:
        with httpx.Client(follow_redirects=True, timeout=httpx.Timeout(timeout)) as client:
            with client.stream("GET", url) as response:
                if response.status_code >= 400:
                    raise InvalidInputError(
                        f"{shown}: the server answered {response.status_code} {response.reason_phrase}; check the "
                        "address, and that it can be read without logging in (a direct or signed download link)"
                    )
                content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if content_type.startswith("text/") or content_type in _REFUSED_CONTENT_TYPES:
                    raise InvalidInputError(
                        f"{shown}: the server sent {content_type}, not a {kind} file; give the address of the file "
                        "itself (a direct download link), not of a web page"
                    )
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > max_bytes:
                    raise InvalidInputError(
                        f"{shown}: the file is {int(declared):,} bytes, over the {max_bytes:,}-byte limit; "
                        "raise the limit or give a smaller file"
                    )
                received = 0
                head = b""
                with open(partial, "wb") as handle:
                    for chunk in response.iter_bytes(CHUNK_BYTES):
                        received += len(chunk)
                        if received > max_bytes:
                            raise InvalidInputError(
                                f"{shown}: the download passed the {max_bytes:,}-byte limit; raise the limit or "
                                "give a smaller file"
                            )
                        if len(head) < 512:
                            head += chunk[: 512 - len(head)]
                        handle.write(chunk)
                media_format = sniff_media(head)
                if not _accepts(kind, media_format):
                    found = f"a {media_format} file" if media_format else "no known media format"
                    raise InvalidInputError(
                        f"{shown}: the body ({received:,} bytes, {content_type or 'no content type'}) is {found}, "
                        f"not a {kind}; give the address of the {kind} file itself"
                    )
                destination = folder / _with_extension(_name_from_response(response, url), media_format)
        os.replace(partial, destination)
        return destination
    except httpx.TimeoutException as error:
        raise InvalidInputError(
            f"{shown}: no answer within {timeout:g} s ({type(error).__name__}); check the address or raise the timeout"
        ) from error
    except httpx.HTTPError as error:
        raise InvalidInputError(
            f"{shown}: could not be downloaded ({type(error).__name__}: {error}); check the address and the network"
        ) from error
    finally:
        partial.unlink(missing_ok=True)


def _fetch_from_block(reference: str, work_dir: Path, *, max_bytes: int, kind: MediaKind) -> Path:
    ref = parse_block_reference(reference)
    if ref.is_folder:
        raise InvalidInputError(f"{ref}: names a folder, not a file; add the file's path inside the block")
    block = load_storage_block(ref)
    how = _kind_of_block(block)
    if how == "local":
        path = _block_local_path(block, ref)
        if not path.is_file():
            raise InvalidInputError(f"{ref}: no such file ({path}); check the path inside the block")
        return path

    folder = work_dir / f"block-{hashlib.sha256(str(ref).encode()).hexdigest()[:12]}"
    folder.mkdir(parents=True, exist_ok=True)
    destination = folder / (_safe_file_name(ref.name) or "source")
    partial = folder / f".{destination.name}.{uuid.uuid4().hex[:8]}.partial"
    try:
        if how == "fsspec":
            filesystem = block.filesystem
            remote = _block_fsspec_path(block, ref)
            try:
                info = filesystem.info(remote)
            except FileNotFoundError as error:
                raise InvalidInputError(f"{ref}: no such file ({remote}); check the path inside the block") from error
            if info.get("type") == "directory":
                raise InvalidInputError(f"{ref}: is a folder ({remote}), not a file")
            size = info.get("size")
            if size is not None and size > max_bytes:
                raise InvalidInputError(f"{ref}: the file is {size:,} bytes, over the {max_bytes:,}-byte limit")
            received = 0
            with filesystem.open(remote, "rb") as source, open(partial, "wb") as handle:
                while chunk := source.read(CHUNK_BYTES):
                    received += len(chunk)
                    if received > max_bytes:
                        raise InvalidInputError(f"{ref}: the file passed the {max_bytes:,}-byte limit")
                    handle.write(chunk)
        else:
            try:
                content = _call_block_method(block.read_path, ref.path)
            except (ValueError, FileNotFoundError, OSError) as error:
                raise InvalidInputError(f"{ref}: could not be read ({error}); check the path inside the block") from error
            if len(content) > max_bytes:
                raise InvalidInputError(f"{ref}: the file is {len(content):,} bytes, over the {max_bytes:,}-byte limit")
            partial.write_bytes(content)
        os.replace(partial, destination)
    finally:
        partial.unlink(missing_ok=True)
    return destination


# --------------------------------------------------------------------------------------------
# Delivering

# Object stores write an object whole or not at all: a direct upload is already atomic there.
_OBJECT_STORE_PROTOCOLS = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "r2"}


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
        raise InvalidInputError(f"{_shown(destination)}: cannot write to a URL; use a local path or a block:// reference")
    if not is_block_reference(destination):
        return destination
    ref = parse_block_reference(destination)
    if ref.is_folder:
        ref = ref.joined(local_file.name)
    block = load_storage_block(ref)
    how = _kind_of_block(block)
    if how == "local":
        target = _block_local_path(block, ref)
        if target.is_dir():
            raise InvalidInputError(f"{ref}: is a folder ({target}); give a file name")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
        try:
            shutil.copyfile(local_file, partial)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return f"{ref} ({target})"
    if how == "fsspec":
        filesystem = block.filesystem
        remote = _block_fsspec_path(block, ref)
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
        return f"{ref} ({remote})"
    try:
        written = _call_block_method(block.write_path, ref.path, local_file.read_bytes())
    except (ValueError, OSError) as error:
        raise InvalidInputError(f"{ref}: could not be written ({error})") from error
    return f"{ref} ({written})" if written else str(ref)


# --------------------------------------------------------------------------------------------
# Files kept in a block (the result store's)


def download_block_file(reference: str | BlockReference, destination: Path) -> bool:
    """Copies a file out of a storage block to a local path, atomically.

    Returns:
        ``True`` when copied, ``False`` when the block has no such file.

    Raises:
        InvalidInputError: the block cannot be loaded or read (other than the file missing).
    """
    ref = reference if isinstance(reference, BlockReference) else parse_block_reference(reference)
    block = load_storage_block(ref)
    how = _kind_of_block(block)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        if how == "local":
            path = _block_local_path(block, ref)
            if not path.is_file():
                return False
            shutil.copyfile(path, partial)
        elif how == "fsspec":
            try:
                block.filesystem.get_file(_block_fsspec_path(block, ref), str(partial))
            except FileNotFoundError:
                return False
        else:
            try:
                content = _call_block_method(block.read_path, ref.path)
            except (FileNotFoundError, ValueError):
                return False
            partial.write_bytes(content)
        os.replace(partial, destination)
        return True
    except OSError as error:
        raise InvalidInputError(f"{ref}: could not be read ({error})") from error
    finally:
        partial.unlink(missing_ok=True)


def signed_block_url(reference: str | BlockReference, expires_seconds: int = 24 * 3600) -> str:
    """A URL anyone holding it can GET the block's file at for ``expires_seconds`` (a presigned URL).

    Raises:
        InvalidInputError: the block's storage cannot sign URLs (only object stores such as S3 or
            GCS through a ``RemoteFileSystem`` can).
    """
    ref = reference if isinstance(reference, BlockReference) else parse_block_reference(reference)
    block = load_storage_block(ref)
    if _kind_of_block(block) == "fsspec":
        try:
            return block.filesystem.sign(_block_fsspec_path(block, ref), expiration=expires_seconds)
        except NotImplementedError:
            pass
        except OSError as error:
            raise InvalidInputError(f"{ref}: could not make a URL for it ({error})") from error
    raise InvalidInputError(
        f"{ref}: this storage cannot make URLs a service can read; use a RemoteFileSystem block on an "
        "object store (s3://, gs://) or an HTTP upload store (upload_url)"
    )


def delete_block_file(reference: str | BlockReference) -> None:
    """Deletes a file from a storage block if it is there (a block with only ``write_path`` gets it emptied).

    Raises:
        InvalidInputError: the block cannot be loaded or written.
    """
    ref = reference if isinstance(reference, BlockReference) else parse_block_reference(reference)
    block = load_storage_block(ref)
    how = _kind_of_block(block)
    try:
        if how == "local":
            _block_local_path(block, ref).unlink(missing_ok=True)
        elif how == "fsspec":
            remote = _block_fsspec_path(block, ref)
            if block.filesystem.exists(remote):
                block.filesystem.rm(remote)
        else:
            _call_block_method(block.write_path, ref.path, b"")
    except (OSError, ValueError) as error:
        raise InvalidInputError(f"{ref}: could not be deleted ({error})") from error


# --------------------------------------------------------------------------------------------
# Listing


def _is_listed_video(name: str, extensions: frozenset[str]) -> bool:
    return (
        not name.startswith(".")
        and Path(name).suffix.lower() in extensions
        and not any(marker in name for marker in OUTPUT_NAME_MARKERS)
    )


def list_videos(folder: str, *, recursive: bool = False, extensions: frozenset[str] = VIDEO_EXTENSIONS) -> list[str]:
    """The video files in a local folder or a ``block://`` folder, sorted, as locations.

    Files are chosen by extension; hidden files (``.name``) and the pipeline's own outputs
    (``*.modified.*``, ``*.preview.*``) are skipped.

    Args:
        folder: A local folder or ``block://<block-type-slug>/<block-name>/<folder>/``.
        recursive: Whether to look into sub-folders.
        extensions: Lowercase extensions with the dot.

    Returns:
        Local paths, or ``block://`` references for a block folder.

    Raises:
        InvalidInputError: the folder does not exist, or its block cannot list files.
    """
    if is_url(folder):
        raise InvalidInputError(f"{_shown(folder)}: a URL cannot be listed; give the video URLs as sources")
    if not is_block_reference(folder):
        root = Path(os.path.expanduser(folder))
        if not root.is_dir():
            raise InvalidInputError(f"{folder}: no such folder; check the path")
        files = root.rglob("*") if recursive else root.iterdir()
        return sorted(
            str(p) for p in files
            if p.is_file() and _is_listed_video(p.name, extensions)
            and not any(part.startswith(".") for part in p.relative_to(root).parts[:-1])
        )

    ref = parse_block_reference(folder)
    block = load_storage_block(ref)
    how = _kind_of_block(block)
    prefix = ref.path.rstrip("/")
    found: list[str] = []
    if how == "local":
        root = _block_local_path(block, ref)
        if not root.is_dir():
            raise InvalidInputError(f"{ref}: no such folder ({root}); check the path inside the block")
        files = root.rglob("*") if recursive else root.iterdir()
        for path in files:
            relative = path.relative_to(root)
            if path.is_file() and _is_listed_video(path.name, extensions) and not any(
                part.startswith(".") for part in relative.parts[:-1]
            ):
                found.append(relative.as_posix())
    elif how == "fsspec":
        filesystem = block.filesystem
        remote = _block_fsspec_path(block, BlockReference(ref.block_type_slug, ref.block_name, prefix))
        root = filesystem._strip_protocol(remote).rstrip("/")
        try:
            entries = filesystem.find(root, maxdepth=None if recursive else 1, detail=False)
        except FileNotFoundError as error:
            raise InvalidInputError(f"{ref}: no such folder ({remote})") from error
        for entry in entries:
            entry = filesystem._strip_protocol(entry)
            if not entry.startswith(root + "/"):
                continue
            relative = entry[len(root) + 1:]
            if _is_listed_video(PurePosixPath(relative).name, extensions) and not any(
                part.startswith(".") for part in relative.split("/")[:-1]
            ):
                found.append(relative)
    else:
        raise InvalidInputError(
            f"{ref}: a {ref.block_type_slug} block cannot list its files here; use a local-file-system or "
            "remote-file-system block, or give the videos as sources"
        )
    base = BlockReference(ref.block_type_slug, ref.block_name, prefix)
    return sorted(str(base.joined(relative)) for relative in found)


# --------------------------------------------------------------------------------------------
# Events

NEW_VIDEO_EVENT = "modify-video.source.created"


def emit_new_video_event(reference: str, *, event: str = NEW_VIDEO_EVENT, **payload: Any):
    """Announces a new video to Prefect, for a deployment trigger to start a run on it.

    The event's resource id is the video's location (a ``block://`` reference, a URL or a path),
    so a trigger can match a folder with a trailing ``*`` (``block://remote-file-system/s3-videos/in/*``)
    and pass ``{{ event.resource.id }}`` as the run's source.

    Returns:
        The emitted ``Event`` (``None`` when events are not configured).
    """
    from prefect.events import emit_event

    return emit_event(
        event=event,
        resource={"prefect.resource.id": reference, "prefect.resource.name": location_name(reference) or reference},
        payload={"source": reference, **payload},
    )
