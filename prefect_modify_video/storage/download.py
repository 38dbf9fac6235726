"""Fetching sources (videos and first-frame images) to local files, and finding the videos in a folder.

A source is a location (``storage.locations``): a local path, an http(s) URL (streamed, size-capped,
checked to be media and not an HTML or JSON page) or a ``block://`` reference (read through its
block, ``storage.blocks``). A new video can be announced to Prefect as an event, for a deployment
trigger to start a run on it.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import shutil
import time
import urllib.parse
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Literal

import httpx

from prefect_modify_video.errors import InvalidInputError
from prefect_modify_video.limits import download_deadline_seconds, too_slow
from prefect_modify_video.media.files import IMAGE_FORMATS, VIDEO_FORMATS, atomic_write, sniff_media
from prefect_modify_video.storage.blocks import open_storage
from prefect_modify_video.storage.locations import (
    BlockReference,
    is_block_reference,
    is_url,
    location_name,
    parse_block_reference,
    redacted_url,
)

DEFAULT_MAX_BYTES = 10 * 2**30
"""10 GiB: the largest source fetched unless told otherwise (or half the free space, if less)."""
DEFAULT_TIMEOUT_SECONDS = 60.0
"""The per-read timeout: no byte for that long fails a download."""


def default_max_source_bytes(folder: str | Path) -> int:
    """The largest source downloaded into ``folder`` when no limit is given: 10 GiB or half the free space of
    the folder (its nearest existing parent), whichever is less, computed when called.

    Example:
        >>> 0 < default_max_source_bytes(".") <= DEFAULT_MAX_BYTES
        True
    """
    path = Path(folder).absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return DEFAULT_MAX_BYTES
    return max(1, min(DEFAULT_MAX_BYTES, free // 2))

VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".wmv", ".flv", ".3gp",
    ".ogv",
})
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
# Names the pipeline itself writes beside sources; a folder listing skips them.
OUTPUT_NAME_MARKERS = (".modified.", ".preview.")

MediaKind = Literal["video", "image", "any"]

# Bodies that are pages or API answers, never media.
_REFUSED_CONTENT_TYPES = {"application/json", "application/xml", "application/xhtml+xml", "application/problem+json"}
# Bytes of a download's start that decide its format.
_HEAD_BYTES = 512


def _accepts(kind: MediaKind, media_format: str | None) -> bool:
    if media_format is None:
        return False
    if kind == "video":
        return media_format in VIDEO_FORMATS
    if kind == "image":
        return media_format in IMAGE_FORMATS
    return True


def fetch_source(
    source: str,
    work_dir: Path,
    *,
    max_bytes: int | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    kind: MediaKind = "video",
    deadline_seconds: float | None = None,
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
        max_bytes: Largest file accepted; ``default_max_source_bytes(work_dir)`` when ``None`` (10 GiB or
            half the free space, whichever is less).
        timeout: Seconds to wait for a connection or for the next bytes of an answer.
        kind: ``video``, ``image`` or ``any``: what the first bytes of a download must be.
        deadline_seconds: Total time a URL download may take; when ``None``,
            ``limits.download_deadline_seconds`` of its declared length (else of ``max_bytes``).

    Returns:
        The local file.

    Raises:
        InvalidInputError: one line naming the source and what to do.
    """
    text = source.strip()
    if not text:
        raise InvalidInputError("the source is empty; give a local path, an http(s) URL or a block:// reference")
    if is_url(text) or is_block_reference(text):
        max_bytes = default_max_source_bytes(work_dir) if max_bytes is None else max_bytes
    if is_url(text):
        return _download_url(
            text, Path(work_dir), max_bytes=max_bytes, timeout=timeout, kind=kind, deadline_seconds=deadline_seconds
        )
    if is_block_reference(text):
        return _fetch_from_block(text, Path(work_dir), max_bytes=max_bytes)
    if text.lower().startswith("file://"):
        return Path(urllib.parse.unquote(urllib.parse.urlsplit(text).path))
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", text):
        raise InvalidInputError(
            f"{redacted_url(text)}: unsupported scheme; use a local path, an http(s) URL, or save a storage block "
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
    extension = VIDEO_FORMATS.get(media_format or "") or IMAGE_FORMATS.get(media_format or "") or ".bin"
    return f"{name or 'source'}{extension}"


def _refuse_answer(response: httpx.Response, shown: str, *, max_bytes: int, kind: MediaKind) -> None:
    """Raises when an answer's status, content type or declared length already rule it out."""
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


def _until_deadline(chunks: Iterator[bytes], shown: str, started: float, seconds: float) -> Iterator[bytes]:
    """The chunks of a download, failing it once ``seconds`` have passed since ``started`` or it is
    ``limits.too_slow`` (checked at each network read, so a server sending a few bytes at a time
    cannot hold it past its deadline)."""
    received = 0
    for chunk in chunks:
        received += len(chunk)
        elapsed = time.monotonic() - started
        if elapsed > seconds or too_slow(elapsed, received):
            raise InvalidInputError(
                f"{shown}: the download did not finish within its {seconds:g} s deadline ({received:,} bytes in "
                f"{elapsed:.0f} s, too slow); try again later or download the file yourself and give its path"
            )
        yield chunk


def _download_url(
    url: str, work_dir: Path, *, max_bytes: int, timeout: float, kind: MediaKind, deadline_seconds: float | None = None
) -> Path:
    """Streams a URL into its own folder under ``work_dir``, named after the answer, checked to be ``kind``."""
    shown = redacted_url(url)
    folder = work_dir / f"url-{hashlib.sha256(url.encode()).hexdigest()[:12]}"
    started = time.monotonic()
    try:
        with httpx.Client(follow_redirects=True, timeout=httpx.Timeout(timeout)) as client:
            with client.stream("GET", url) as response:
                _refuse_answer(response, shown, max_bytes=max_bytes, kind=kind)
                declared = response.headers.get("content-length", "")
                seconds = deadline_seconds if deadline_seconds is not None else download_deadline_seconds(
                    int(declared) if declared.isdigit() else max_bytes
                )
                # Each network read as it comes (no re-chunking), so the deadline is checked at every one.
                chunks = _until_deadline(response.iter_bytes(), shown, started, seconds)
                # The first bytes decide the format, hence the file's extension, before anything is written.
                head_chunks: list[bytes] = []
                head = b""
                for chunk in chunks:
                    head_chunks.append(chunk)
                    head += chunk[: _HEAD_BYTES - len(head)]
                    if len(head) >= _HEAD_BYTES:
                        break
                media_format = sniff_media(head)
                if not _accepts(kind, media_format):
                    found = f"a {media_format} file" if media_format else "no known media format"
                    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
                    raise InvalidInputError(
                        f"{shown}: the body ({content_type or 'no content type'}) is {found}, "
                        f"not a {kind}; give the address of the {kind} file itself"
                    )
                destination = folder / _with_extension(_name_from_response(response, url), media_format)
                received = 0
                with atomic_write(destination) as partial, open(partial, "wb") as handle:
                    for chunk in itertools.chain(head_chunks, chunks):
                        received += len(chunk)
                        if received > max_bytes:
                            raise InvalidInputError(
                                f"{shown}: the download passed the {max_bytes:,}-byte limit; raise the limit or "
                                "give a smaller file"
                            )
                        handle.write(chunk)
        return destination
    except httpx.TimeoutException as error:
        raise InvalidInputError(
            f"{shown}: no answer within {timeout:g} s ({type(error).__name__}); check the address or raise the timeout"
        ) from error
    except (httpx.HTTPError, httpx.InvalidURL) as error:
        # InvalidURL: a redirect to an address httpx cannot follow (data:, a malformed Location).
        raise InvalidInputError(
            f"{shown}: could not be downloaded ({type(error).__name__}: {redacted_error(error)}); check the address "
            "and the network"
        ) from error


def redacted_error(error: Exception) -> str:
    """An HTTP error's text with the addresses in it redacted (no query, user or password)."""
    return re.sub(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+", lambda m: redacted_url(m.group(0)), str(error))


def _fetch_from_block(reference: str, work_dir: Path, *, max_bytes: int) -> Path:
    """A block's file on this machine: in place for a local block, else copied under ``work_dir``."""
    ref = parse_block_reference(reference)
    if ref.is_folder:
        raise InvalidInputError(f"{ref}: names a folder, not a file; add the file's path inside the block")
    ref, storage = open_storage(ref)
    path = storage.local_path(ref)
    if path is not None:
        if not path.is_file():
            raise InvalidInputError(f"{ref}: no such file ({path}); check the path inside the block")
        return path
    folder = work_dir / f"block-{hashlib.sha256(str(ref).encode()).hexdigest()[:12]}"
    destination = folder / (_safe_file_name(ref.name) or "source")
    if not storage.read(ref, destination, max_bytes=max_bytes):
        raise InvalidInputError(f"{ref}: no such file; check the path inside the block")
    return destination


def _is_listed(relative: str, extensions: frozenset[str]) -> bool:
    """Whether a file (its path below the listed folder) is a video a listing returns."""
    parts = relative.split("/")
    name = parts[-1]
    return (
        not name.startswith(".")
        and Path(name).suffix.lower() in extensions
        and not any(marker in name for marker in OUTPUT_NAME_MARKERS)
        and not any(part.startswith(".") for part in parts[:-1])
    )


def list_videos(folder: str, *, recursive: bool = False, extensions: frozenset[str] = VIDEO_EXTENSIONS) -> list[str]:
    """The video files in a local folder or a ``block://`` folder, sorted, as locations.

    Files are chosen by extension; hidden files (``.name``), files in hidden folders and the
    pipeline's own outputs (``*.modified.*``, ``*.preview.*``) are skipped.

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
        raise InvalidInputError(f"{redacted_url(folder)}: a URL cannot be listed; give the video URLs as sources")
    if not is_block_reference(folder):
        root = Path(os.path.expanduser(folder))
        if not root.is_dir():
            raise InvalidInputError(f"{folder}: no such folder; check the path")
        files = root.rglob("*") if recursive else root.iterdir()
        return sorted(str(p) for p in files if p.is_file() and _is_listed(p.relative_to(root).as_posix(), extensions))
    ref, storage = open_storage(folder)
    base = BlockReference(ref.block_type_slug, ref.block_name, ref.path.rstrip("/"))
    found = storage.list_files(ref, recursive=recursive)
    return sorted(str(base.joined(relative)) for relative in found if _is_listed(relative, extensions))


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
