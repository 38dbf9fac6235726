"""How long a download may take, declared once for sources and results.

Every download has two time limits: the per-read timeout of its HTTP client (no byte for that long
fails it) and a total deadline, so that a server sending a few bytes now and then (each read on
time) cannot hold a run for ever. The deadline is a grace period plus the time the largest accepted
body takes at the slowest speed worth waiting for. Where the bytes are counted as they come (source
downloads), a download slower than that speed on average past the grace period fails before its
deadline (``too_slow``): a trickle with no declared length fails in minutes, not hours.
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


def too_slow(elapsed_seconds: float, received_bytes: int) -> bool:
    """Whether a download that received ``received_bytes`` in ``elapsed_seconds`` is slower than
    ``MIN_DOWNLOAD_BYTES_PER_SECOND`` on average past the first ``DOWNLOAD_GRACE_SECONDS``.

    Example:
        >>> too_slow(60, 0), too_slow(121, 0), too_slow(200, 100 * 2**20)
        (False, True, False)
    """
    return elapsed_seconds > DOWNLOAD_GRACE_SECONDS + received_bytes / MIN_DOWNLOAD_BYTES_PER_SECOND
