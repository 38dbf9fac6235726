"""Locations: the strings that name where videos and images come from and where outputs go.

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

This module only parses and composes those strings; ``storage.blocks`` reads and writes through
blocks, ``storage.download`` fetches sources.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

from prefect_modify_video.errors import InvalidInputError

BLOCK_SCHEME = "block://"

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


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


def parse_block_reference(reference: str | BlockReference) -> BlockReference:
    """Parses ``block://<block-type-slug>/<block-name>/<path>`` (a parsed reference is returned as it is).

    Raises:
        InvalidInputError: the reference is malformed, naming it and the expected form.
    """
    if isinstance(reference, BlockReference):
        return reference
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
    if is_url(text) or is_file_url(text):
        return PurePosixPath(urllib.parse.unquote(urllib.parse.urlsplit(text).path)).name
    return Path(os.path.expanduser(text)).name


def is_file_url(reference: str) -> bool:
    """Whether ``reference`` is a ``file://`` URL (a local path spelled as a URL)."""
    return reference.strip().lower().startswith("file://")


def local_path(reference: str) -> Path:
    """The local path a location names: ``~`` expanded, a ``file://`` URL turned into its path.

    Example:
        >>> str(local_path("file:///videos/my%20film.mp4")), str(local_path("/videos/film.mp4"))
        ('/videos/my film.mp4', '/videos/film.mp4')
    """
    text = reference.strip()
    if is_file_url(text):
        return Path(urllib.parse.unquote(urllib.parse.urlsplit(text).path))
    return Path(os.path.expanduser(reference))


def shown_location(reference: str) -> str:
    """A location fit for messages: a URL without its query and credentials (``redacted_url``), else as given."""
    return redacted_url(reference) if is_url(reference) else reference


@contextmanager
def errors_named_as(fetched: str | Path, given: str) -> Iterator[None]:
    """Names the location as the user gave it in the input errors raised about its fetched copy.

    A downloaded source is a file in a temporary folder that is gone when the run ends: a
    message naming it would send the user looking for a file that no longer exists. The URL
    (credentials and query left out) or block reference is named instead.

    Args:
        fetched: The local file the location was fetched to.
        given: The location as given.

    Raises:
        InvalidInputError: the error raised inside, its message naming ``given``.
    """
    try:
        yield
    except InvalidInputError as error:
        fetched_text, message = str(fetched), str(error)
        if fetched_text == given or fetched_text not in message:
            raise
        raise InvalidInputError(message.replace(fetched_text, shown_location(given))) from error


def join_location(folder: str, name: str) -> str:
    """``name`` inside ``folder``: a local folder or a ``block://`` folder reference.

    Raises:
        InvalidInputError: ``folder`` is a URL (nothing can be written to one).
    """
    if is_block_reference(folder):
        return str(parse_block_reference(folder).joined(name))
    if is_url(folder):
        raise InvalidInputError(f"{redacted_url(folder)}: cannot write to a URL; use a local folder or a block:// folder")
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
            f"{redacted_url(reference)}: nothing can be written beside a URL source; give an output folder "
            "(local or block://...)"
        )
    if is_file_url(reference):
        return str(local_path(reference).with_name(name))
    return str(Path(os.path.expanduser(reference)).with_name(name))


def redacted_url(url: str) -> str:
    """A URL fit for messages and logs: the query (often a signature or token) replaced by ``?…``.

    Args:
        url: An http(s) URL, or any text with a scheme.

    Returns:
        The URL without its query, user and password.
    """
    parts = urllib.parse.urlsplit(url.strip())
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "…" if parts.query else "", ""))
