"""Whether two locations name the same file, however each is spelled: no output may overwrite its source.

A file can be named in many ways: ``film.mp4``, ``./x/../film.mp4``, a symbolic link to it, a
``file://`` URL, ``block://local-file-system/<block>/film.mp4`` on a block whose basepath holds it,
``FILM.MP4`` on a case-insensitive file system, ``block://remote-file-system/<block>/in/film.mp4``
and the http(s) address of the same object. The strings differ; what they resolve to does not.
``location_identities`` gives what a location resolves to (a file's device and inode, its real
path, an object store's bucket and key, an address's host and path), and two locations are the
same file when they share one.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from pathlib import Path

from prefect_modify_video.errors import InvalidInputError
from prefect_modify_video.storage.blocks import FsspecStorage, open_storage
from prefect_modify_video.storage.locations import is_block_reference, is_url, parse_block_reference, redacted_url

Identity = tuple
"""One thing a location resolves to, e.g. ``("inode", device, inode)`` or ``("object", "s3", "bucket/key")``."""

# Object stores' own addresses: virtual-hosted (bucket in the host) and path-style (bucket first in the path).
_S3_VIRTUAL_HOST = re.compile(r"^(?P<bucket>.+)\.s3(?:[.-][a-z0-9-]+)*\.amazonaws\.com$")
_S3_PATH_HOST = re.compile(r"^s3(?:[.-][a-z0-9-]+)*\.amazonaws\.com$")
_GCS_HOSTS = {"storage.googleapis.com", "storage.cloud.google.com"}
# fsspec protocols by the name their objects are compared under.
_PROTOCOL_FAMILY = {"s3a": "s3", "gcs": "gs", "abfs": "az", "abfss": "az", "adl": "az"}


def _path_identities(path: Path) -> set[Identity]:
    """A local file's real path (case-folded where the system folds case) and, when it exists, its inode.

    The inode catches every other spelling of an existing file: a hard link, or another case
    on a case-insensitive file system.
    """
    identities: set[Identity] = {("path", os.path.normcase(os.path.realpath(path)))}
    try:
        status = os.stat(path)
    except (OSError, ValueError):
        return identities
    identities.add(("inode", status.st_dev, status.st_ino))
    return identities


def _url_identities(url: str) -> set[Identity]:
    """An http(s) address's host and path (query, user and scheme aside), and the object it names on S3 or GCS."""
    parts = urllib.parse.urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    port = parts.port
    default_port = {"http": 80, "https": 443}.get(parts.scheme.lower())
    authority = host if port in (None, default_port) else f"{host}:{port}"
    path = urllib.parse.unquote(parts.path)
    identities: set[Identity] = {("url", authority, path)}
    key = path.lstrip("/")
    virtual = _S3_VIRTUAL_HOST.match(host)
    if virtual:
        identities.add(("object", "s3", f"{virtual.group('bucket')}/{key}"))
    elif _S3_PATH_HOST.match(host) or host in _GCS_HOSTS:
        identities.add(("object", "s3" if host.endswith("amazonaws.com") else "gs", key))
    return identities


def _remote_identities(storage: FsspecStorage, ref) -> set[Identity]:
    """An fsspec file's protocol and path, and the address a presigned URL of it points at (when it can sign)."""
    filesystem = storage.block.filesystem
    remote = storage._path(ref)
    protocols = filesystem.protocol if isinstance(filesystem.protocol, (tuple, list)) else (filesystem.protocol,)
    family = _PROTOCOL_FAMILY.get(protocols[0], protocols[0])
    identities: set[Identity] = {("object", family, filesystem._strip_protocol(remote).lstrip("/"))}
    if family == "file":
        identities |= _path_identities(Path(filesystem._strip_protocol(remote)))
    try:
        identities |= _url_identities(filesystem.sign(remote, expiration=60))
    except Exception:  # noqa: BLE001 - a file system that cannot sign offline has no address to compare
        pass
    return identities


def location_identities(reference: str) -> set[Identity]:
    """What a location resolves to, for comparing it with another.

    Args:
        reference: A local path (``~`` and ``file://`` too), an http(s) URL or a ``block://`` reference.

    Returns:
        The identities of the file it names; two locations sharing one are the same file.

    Raises:
        InvalidInputError: a ``block://`` reference is malformed or its block cannot be loaded.

    Example:
        >>> location_identities("./a/../film.mp4") & location_identities("film.mp4") != set()
        True
    """
    text = reference.strip()
    if is_url(text):
        return _url_identities(text)
    if is_block_reference(text):
        ref = parse_block_reference(text)
        if ref.is_folder:
            return set()
        ref, storage = open_storage(ref)
        local = storage.local_path(ref)
        if local is not None:
            return _path_identities(Path(local))
        if isinstance(storage, FsspecStorage):
            return _remote_identities(storage, ref)
        return {("block", ref.block_slug, ref.path)}
    if text.lower().startswith("file://"):
        return _path_identities(Path(urllib.parse.unquote(urllib.parse.urlsplit(text).path)))
    return _path_identities(Path(os.path.expanduser(text)))


def _shown(reference: str) -> str:
    return redacted_url(reference) if is_url(reference) else reference


def check_output_is_not_source(source: str, output: str) -> None:
    """Refuses an output that names the source's own file, however either is spelled.

    Called before any work (download, probe or payment): writing the output would replace the
    source with its restyled copy.

    Args:
        source: The source as given (path, URL or ``block://`` reference).
        output: The output as given (path or ``block://`` reference).

    Raises:
        InvalidInputError: the output is the source itself, naming both.
    """
    if location_identities(source) & location_identities(output):
        same = "" if source.strip() == output.strip() else f" ({_shown(source)})"
        raise InvalidInputError(
            f"{_shown(output)}: the output path is the source itself{same}; writing it would replace the source, "
            "choose another output path"
        )


__all__ = ["Identity", "check_output_is_not_source", "location_identities"]
