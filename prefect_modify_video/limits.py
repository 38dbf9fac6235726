"""How long a download may take, declared once for sources and results.

Every download has two time limits: the per-read timeout of its HTTP client (no byte for that long
fails it) and a total deadline, so that a server sending a few bytes now and then (each read on
time) cannot hold a run for ever. The deadline is a grace period plus the time the largest accepted
body takes at the slowest speed worth waiting for.
"""

from __future__ import annotations

MIN_DOWNLOAD_BYTES_PER_SECOND = 256 * 1024
"""The slowest average speed a download is given time for: 256 KiB/s."""
DOWNLOAD_GRACE_SECONDS = 120.0
"""Time every download is given on top of its size at ``MIN_DOWNLOAD_BYTES_PER_SECOND``."""


def download_deadline_seconds(expected_bytes: int) -> float:
    """The total deadline of a download of at most ``expected_bytes`` bytes.

    Example:
        >>> download_deadline_seconds(0), round(download_deadline_seconds(50_000_000))
        (120.0, 311)
    """
    return DOWNLOAD_GRACE_SECONDS + max(expected_bytes, 0) / MIN_DOWNLOAD_BYTES_PER_SECOND
