"""Progress of a run, in one place: the flow logs it and updates its artifact, the CLI draws it."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

# Log records carrying a progress snapshot have it under this ``extra`` key.
PROGRESS_RECORD_KEY = "modify_video_progress"
# The log record of a run's plan carries this ``extra`` key: its inputs are checked, the work starts.
INPUTS_CHECKED_RECORD_KEY = "modify_video_inputs_checked"


@dataclass
class SegmentProgress:
    """Segments done of total, how many were paid (restyled, on a free backend), reused from the store or failed."""

    total: int
    free: bool = False
    """The backend costs nothing: its calls are counted as restyled, not paid."""
    done: int = 0
    paid: int = 0
    reused: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)

    def record(self, *, paid: bool | None) -> None:
        """Counts one finished segment: paid, reused (``False``) or failed (``None``)."""
        self.done += 1
        if paid is None:
            self.failed += 1
        elif paid:
            self.paid += 1
        else:
            self.reused += 1

    @property
    def percent(self) -> float:
        """Share of segments done, 0 to 100."""
        return 100.0 * self.done / self.total if self.total else 100.0

    @property
    def elapsed_seconds(self) -> float:
        """Seconds since the segments started."""
        return time.monotonic() - self.started

    def describe(self) -> str:
        """One line: ``3/10 segments (2 paid, 1 reused, 0 failed), 12.3 s`` (``2 restyled`` when free)."""
        return (
            f"{self.done}/{self.total} segments ({self.paid} {'restyled' if self.free else 'paid'}, {self.reused} reused, "
            f"{self.failed} failed), {self.elapsed_seconds:.1f} s"
        )


class ProgressHandler(logging.Handler):
    """Draws the progress records of a run as a bar on a terminal.

    Elsewhere it draws nothing: the flow's own log line (``progress: 3/10 segments ...``)
    is the plain line a log file or CI shows.
    """

    def __init__(self, stream: TextIO | None = None, *, width: int = 30):
        super().__init__(level=logging.INFO)
        self.stream = stream or sys.stderr
        self.width = width
        self.is_terminal = bool(getattr(self.stream, "isatty", lambda: False)())

    def emit(self, record: logging.LogRecord) -> None:
        progress: SegmentProgress | None = getattr(record, PROGRESS_RECORD_KEY, None)
        if progress is None:
            return
        if not self.is_terminal:
            return
        filled = round(self.width * progress.done / max(progress.total, 1))
        bar = "█" * filled + "░" * (self.width - filled)
        end = "\n" if progress.done >= progress.total else ""
        self.stream.write(f"\r[{bar}] {progress.describe()}{end}")
        self.stream.flush()
