"""Files written whole or not at all, the media format a file's first bytes announce, and content hashes."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from prefect_modify_video.errors import InvalidInputError

VIDEO_FORMATS = {
    "mp4": ".mp4", "matroska": ".mkv", "avi": ".avi", "mpegts": ".ts", "mpegps": ".mpg",
    "flv": ".flv", "ogg": ".ogv", "asf": ".wmv",
}  # fmt: skip
"""Video container formats ``sniff_media`` names, each with the file extension it is written under."""
IMAGE_FORMATS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "gif": ".gif", "bmp": ".bmp", "tiff": ".tif"}
"""Image formats ``sniff_media`` names, each with its file extension."""

# Top-level boxes an MP4/QuickTime/3GP file may start with (``uuid``: a vendor box some cameras write first).
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid")
# The form a RIFF file names at offset 8.
_RIFF_FORMS = {b"AVI ": "avi", b"WEBP": "webp"}
# The first bytes of every other format sniffed.
_PREFIXES = (
    (b"\x1a\x45\xdf\xa3", "matroska"),
    (b"\x00\x00\x01\xba", "mpegps"),
    (b"FLV", "flv"),
    (b"OggS", "ogg"),
    (b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "asf"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)


def _partial_path(destination: str | Path) -> Path:
    """A unique hidden temporary path beside ``destination`` (same folder, same extension).

    Prefer ``atomic_write``, which also renames it onto ``destination`` and cleans up.
    """
    destination = Path(destination)
    return destination.with_name(f".{destination.stem}.{uuid.uuid4().hex[:8]}.partial{destination.suffix}")


@contextmanager
def atomic_write(destination: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside ``destination`` that replaces it when the block succeeds.

    The temporary file is hidden, in the same folder (so the final ``os.replace`` is a rename on one
    file system) and keeps ``destination``'s extension (so ffmpeg picks the same muxer). When the
    block raises, the temporary file is removed and ``destination`` is left as it was: a crash or an
    error never leaves a half-written file under the final name. The folder is created when needed.

    Args:
        destination: The file to write.

    Yields:
        The path to write to.

    Example:
        ```python
        with atomic_write(Path("out/result.json")) as partial:
            partial.write_text("{}")
        ```
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial_path(destination)
    try:
        yield partial
        os.replace(partial, destination)
    finally:
        partial.unlink(missing_ok=True)


def atomic_copy(source: str | Path, destination: str | Path) -> Path:
    """Copies a file's content to ``destination`` through ``atomic_write``.

    Returns:
        ``destination``.
    """
    destination = Path(destination)
    with atomic_write(destination) as partial:
        shutil.copyfile(source, partial)
    return destination


def sniff_media(head: bytes) -> str | None:
    """The container or image format the first bytes of a file announce, or ``None``.

    Args:
        head: The file's first bytes (512 are plenty; 189 tell an MPEG-TS apart).

    Returns:
        One of ``mp4`` (also MOV/3GP), ``matroska`` (also WebM), ``avi``, ``mpegts``, ``mpegps``,
        ``flv``, ``ogg``, ``asf`` (the keys of ``VIDEO_FORMATS``), ``png``, ``jpeg``, ``webp``,
        ``gif``, ``bmp``, ``tiff`` (the keys of ``IMAGE_FORMATS``).
    """
    if len(head) >= 8 and head[4:8] in _MP4_BOXES:
        return "mp4"
    if head.startswith(b"RIFF"):
        return _RIFF_FORMS.get(head[8:12])
    # MPEG-TS: a sync byte every 188 bytes. Tested before the prefixes: a GIF also starts with 0x47 ("G").
    if head[:1] == b"\x47" and (len(head) < 189 or head[188:189] == b"\x47"):
        return "mpegts"
    return next((media_format for prefix, media_format in _PREFIXES if head.startswith(prefix)), None)


def sha256_of_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """The hex sha256 of a file's content, read in chunks of ``chunk_bytes``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def _size(amount: int) -> str:
    """``amount`` bytes in GB, or MB under a GB (``0.00 GB`` says nothing about a small disk)."""
    return f"{amount / 1e9:.2f} GB" if amount >= 1e9 else f"{amount / 1e6:.2f} MB"


def check_free_space(needs: dict[Path, int]) -> None:
    """Refuses, before any work, folders without room for what a run will write there.

    Folders on the same file system have their needs added up.

    Args:
        needs: Bytes the run will write under each folder (folders that do not exist yet are
            measured at their nearest existing parent).

    Raises:
        InvalidInputError: naming the folder, what is needed and what is free.

    Example:
        >>> check_free_space({Path("."): 1})
    """
    by_device: dict[int, tuple[Path, int]] = {}
    for folder, amount in needs.items():
        existing = Path(folder).expanduser().absolute()
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        device = os.stat(existing).st_dev
        _, total = by_device.get(device, (existing, 0))
        by_device[device] = (existing, total + amount)
    for existing, amount in by_device.values():
        free = shutil.disk_usage(existing).free
        if free < amount:
            raise InvalidInputError(
                f"{existing}: the run needs about {_size(amount)} here (work files, answers, the output) "
                f"and {_size(free)} are free; free some space or choose another output or store folder "
                "(nothing was sent: nothing is lost)"
            )
