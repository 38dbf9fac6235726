"""Stopping a run on request: the first SIGINT or SIGTERM stops the waiting, a second one exits at once.

A process-wide "stop requested" flag, set by the command line's signal handling (``stop_on_signals``)
and read by the code that waits: ``providers.base.wait_for_job`` sleeps through ``sleep`` (which
raises ``StopRequested`` within a fraction of a second of the request) and the HTTP client sends
no new paid create once a stop is requested. A job already accepted by the service stays saved in
the result store (the paid step saves it as soon as it is created), so a re-run follows it instead
of paying for it again.

The signals are read in a helper thread from ``signal.set_wakeup_fd``, not only in a Python
handler: a Prefect flow run replaces the SIGTERM handler with its own for its whole length (it
raises ``TerminationSignal`` in the main thread, whose task runner then waits for its tasks), and
the wake-up byte is written whoever's handler runs.

This module imports nothing of the package but its errors, so every layer may import it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from prefect_modify_video.errors import ModifyVideoError

__all__ = [
    "StopRequested",
    "check_stop",
    "clear_stop",
    "request_stop",
    "sleep",
    "stop_on_signals",
    "stop_reason",
    "stop_requested",
]

PROGRAM = "prefect-modify-video"
SLICE_SECONDS = 0.25
"""Longest a waiting loop sleeps before it looks at the flag again."""

_stop = threading.Event()
_reason: str | None = None


class StopRequested(ModifyVideoError):
    """Raised by waiting code once a stop is requested (the first SIGINT or SIGTERM of a CLI run).

    It is neither retryable nor fatal to a job: the job a segment waited on stays saved, and a
    re-run follows it without paying again.
    """


def request_stop(reason: str) -> None:
    """Asks every waiting loop of this process to stop; the first reason given is kept."""
    global _reason
    if not _stop.is_set():
        _reason = reason
    _stop.set()


def stop_requested() -> bool:
    """Whether a stop was requested in this process."""
    return _stop.is_set()


def stop_reason() -> str | None:
    """Why the stop was requested (e.g. ``"SIGINT"``), or ``None``."""
    return _reason if _stop.is_set() else None


def clear_stop() -> None:
    """Forgets a requested stop (for a process that runs again, and for tests)."""
    global _reason
    _stop.clear()
    _reason = None


def check_stop(what: str) -> None:
    """Raises ``StopRequested`` when a stop was requested.

    Args:
        what: What is being stopped and what is kept, for the message.
    """
    if _stop.is_set():
        raise StopRequested(f"stopped on request ({_reason}): {what}")


async def sleep(seconds: float, what: str) -> None:
    """``asyncio.sleep`` in slices of ``SLICE_SECONDS``, raising ``StopRequested`` when a stop is requested.

    Args:
        seconds: How long to sleep.
        what: What is stopped and what is kept, for the message of ``StopRequested``.
    """
    end = time.monotonic() + max(seconds, 0.0)
    check_stop(what)
    while (left := end - time.monotonic()) > 0:
        await asyncio.sleep(min(left, SLICE_SECONDS))
        check_stop(what)


def _quiet_console_logging() -> None:
    """Silences log handlers writing to the terminal (Prefect's tracebacks of the stopped tasks) and
    warnings; handlers sending logs elsewhere (Prefect's API) are kept."""
    warnings.simplefilter("ignore")
    loggers = [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) in (
                sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__,
            ):
                handler.setLevel(logging.CRITICAL + 1)


def _say(out: TextIO, line: str) -> None:
    try:
        out.write(f"{PROGRAM}: {line}\n")
        out.flush()
    except (OSError, ValueError):
        pass


@contextmanager
def stop_on_signals(
    signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM), *, out: TextIO | None = None
) -> Iterator[None]:
    """Turns the first of ``signals`` into a stop request and a second one into an immediate exit.

    On the first signal one line is written to ``out`` (stderr), the terminal's log handlers are
    silenced and ``request_stop`` is called: waiting loops end within seconds, no new paid job is
    sent, every saved job is kept. If the body then ends with an exception, one line says so and
    ``SystemExit(128 + signal)`` is raised (130 for SIGINT, 143 for SIGTERM). A second signal writes
    one line and ends the process at once with that code (``os._exit``: no cleanup, no traceback).

    Outside the main thread (where signals cannot be handled) the body just runs.

    Args:
        signals: The signals that stop the run.
        out: Where the lines go; ``sys.stderr`` when not given.

    Raises:
        SystemExit: the body failed after a stop was requested.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    out = out or sys.stderr
    handled = {int(s) for s in signals}
    received: list[int] = []
    exiting: list[bool] = []
    lock = threading.Lock()
    clear_stop()
    # A flow run stopped by SIGTERM (Prefect raises in the main thread) drops its queued tasks, whose
    # coroutines were never started: not worth a warning on the terminal.
    warnings.filterwarnings("ignore", message="coroutine .* was never awaited", category=RuntimeWarning)

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        with lock:
            if exiting:
                return  # already ending, with its line (Prefect sends SIGTERM again as its flow run ends)
            received.append(signum)
            first = len(received) == 1
        if first:
            _quiet_console_logging()
            _say(out, f"{name}: stopping: no new job is sent and waiting ends within seconds; every saved job is "
                      f"kept and followed by a re-run (send {name} again to quit at once)")
            request_stop(name)
        else:
            _say(out, f"stopped by {name}, exiting now; the jobs saved in the result store are followed by a "
                      "re-run of the same command")
            os._exit(128 + signum)

    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)

    def python_handler(signum: int, frame: object) -> None:
        # The wake-up byte reaches the watcher; handle the signal here only when something else took
        # the wake-up fd (then the byte went there).
        current = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        if current != write_fd:
            on_signal(signum)

    def watch() -> None:
        while True:
            try:
                data = os.read(read_fd, 64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum in handled:
                    on_signal(signum)

    previous_handlers = {s: signal.signal(s, python_handler) for s in handled}
    watcher = threading.Thread(target=watch, name="stop-on-signals", daemon=True)
    watcher.start()
    try:
        yield
    except BaseException as error:
        with lock:
            if not received or isinstance(error, SystemExit):
                raise
            exiting.append(True)
        signum = received[0]
        _say(out, f"stopped by {signal.Signals(signum).name} before the run finished; the segments stored and the "
                  "jobs saved are reused by a re-run of the same command (no new payment for them)")
        raise SystemExit(128 + signum) from None
    finally:
        for s, handler in previous_handlers.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        signal.set_wakeup_fd(previous_fd)
        os.close(write_fd)
        watcher.join(timeout=2)
        os.close(read_fd)
