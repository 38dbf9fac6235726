"""Every program the media code runs: ffmpeg and ffprobe (isolated stdin, logged command, typed errors), fc-match.

``run_ffmpeg`` runs a command to its end and returns its output; ``write_with_ffmpeg`` writes a file
atomically; ``iter_raw_frames`` and ``encode_raw_frames`` stream raw frames out of and into ffmpeg
through pipes, so a long video never sits in memory.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import tempfile
from contextlib import suppress
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from prefect_modify_video.errors import FfmpegError, InvalidInputError
from prefect_modify_video.media.files import atomic_write
from prefect_modify_video.stopping import SLICE_SECONDS, check_stop, stop_requested

logger = logging.getLogger(__name__)

FFMPEG = os.environ.get("PREFECT_MODIFY_VIDEO_FFMPEG", "ffmpeg")
FFPROBE = os.environ.get("PREFECT_MODIFY_VIDEO_FFPROBE", "ffprobe")
QUIET = ("-hide_banner", "-nostdin", "-loglevel", "error")
"""What every ffmpeg command starts with: no banner, never read the terminal, log errors only."""


def ffmpeg_command(args: list[str]) -> list[str]:
    """The full ffmpeg command for ``args``: the program, ``QUIET``, then ``args``."""
    return [FFMPEG, *QUIET, *args]


def encoder_threads() -> int | None:
    """Threads of the encoders of extracted clips: ``PREFECT_MODIFY_VIDEO_THREADS``, else the encoder's own choice.

    x264's bytes depend on it, which is why no key of a paid call is made of encoded bytes.
    """
    value = os.environ.get("PREFECT_MODIFY_VIDEO_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def require_ffmpeg() -> None:
    """Raises a clear error when ffmpeg or ffprobe is not installed.

    Raises:
        InvalidInputError: naming the missing program and how to install it.
    """
    for program in (FFMPEG, FFPROBE):
        if shutil.which(program) is None:
            raise InvalidInputError(
                f"{program} is not installed or not on PATH; install it "
                "(Debian/Ubuntu: `apt-get install ffmpeg`, or run `make setup`)"
            )


def run_ffmpeg(args: list[str], *, program: str = FFMPEG, input_bytes: bytes | None = None) -> bytes:
    """Runs ffmpeg (or ffprobe) with ``args`` and returns its stdout.

    The child gets its own stdin so it never reads the terminal; ffmpeg's arguments are
    prefixed with ``QUIET``. Once a stop is requested (``stopping``: the first SIGINT/SIGTERM of a
    CLI run) the child is ended within a fraction of a second and ``StopRequested`` is raised, so
    a long extraction or conform does not run on.

    Args:
        args: Arguments after the program name.
        program: ``FFMPEG`` or ``FFPROBE``.
        input_bytes: What the child reads on stdin (nothing by default).

    Returns:
        The child's stdout.

    Raises:
        FfmpegError: the program exited with an error; the message has the tail of stderr.
        StopRequested: a stop was requested before or while it ran.
    """
    command = ffmpeg_command(args) if program == FFMPEG else [program, *args]
    name = Path(program).name
    check_stop(f"{name} not started")
    logger.debug("running %s", shlex.join(command))
    # The input is read from a file: communicate() cannot go on writing an input after a timeout.
    with tempfile.TemporaryFile() as stdin:
        stdin.write(input_bytes or b"")
        stdin.seek(0)
        process = subprocess.Popen(command, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with process:
        while True:
            try:
                # A call after a timeout goes on reading without losing output.
                stdout, stderr = process.communicate(timeout=SLICE_SECONDS)
                break
            except subprocess.TimeoutExpired:
                if stop_requested():
                    _end(process)
                    check_stop(f"{name} ended")
    if process.returncode != 0:
        # A Ctrl-C reaches ffmpeg too (same process group): its failure then is the stop, not an error.
        check_stop(f"{name} ended")
        raise FfmpegError(command, process.returncode, stderr.decode(errors="replace"))
    return stdout


def _end(process: subprocess.Popen) -> None:
    """Ends a child: SIGTERM, then SIGKILL if it is still there after 2 s."""
    process.terminate()
    try:
        process.communicate(timeout=2)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


def write_with_ffmpeg(args: list[str], destination: Path, *, input_bytes: bytes | None = None) -> Path:
    """Runs ffmpeg with ``args`` writing to a temporary file beside ``destination``, then renames it.

    A crash or an error never leaves a half-written file under the final name (``atomic_write``).

    Args:
        args: ffmpeg arguments up to, not including, the output file.
        destination: The file written.
        input_bytes: What ffmpeg reads on stdin (for ``-i -``).

    Returns:
        ``destination``.
    """
    with atomic_write(destination) as partial:
        run_ffmpeg([*args, "-y", str(partial)], input_bytes=input_bytes)
    return destination


def iter_raw_frames(args: list[str], frame_bytes: int, *, batch_frames: int = 256) -> Iterator[np.ndarray]:
    """Runs ffmpeg writing rawvideo to stdout and yields its frames in batches.

    Memory stays at one batch however long the video is. Stopping the iteration early stops ffmpeg.

    Args:
        args: ffmpeg arguments (after ``QUIET``); they must end by writing rawvideo to ``-``.
        frame_bytes: Size of one frame in bytes.
        batch_frames: Frames per yielded array.

    Yields:
        ``uint8`` arrays of shape (frames, frame_bytes); the last one may be shorter.

    Raises:
        FfmpegError: ffmpeg exited with an error.
    """
    command = ffmpeg_command(args)
    logger.debug("running %s", shlex.join(command))
    # stderr goes to a file: a damaged file can log an error per frame, more than a pipe holds.
    with tempfile.TemporaryFile() as log:
        with subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log) as process:
            assert process.stdout is not None
            try:
                while True:
                    check_stop("frames no longer read")
                    chunk = process.stdout.read(frame_bytes * batch_frames)
                    whole = len(chunk) - len(chunk) % frame_bytes
                    if whole:
                        yield np.frombuffer(chunk[:whole], dtype=np.uint8).reshape(-1, frame_bytes)
                    if len(chunk) < frame_bytes * batch_frames:
                        break
            finally:
                # Closing stdout first stops an ffmpeg whose frames are no longer wanted.
                process.stdout.close()
                returncode = process.wait()
        if returncode != 0:
            log.seek(0)
            raise FfmpegError(command, returncode, log.read().decode(errors="replace"))


def encode_raw_frames(args: list[str], frames: Iterable[bytes]) -> None:
    """Runs ffmpeg reading rawvideo on stdin and feeds it ``frames`` one by one.

    When ffmpeg stops reading (it wrote all the frames it was asked for, or failed), the rest of
    ``frames`` is not read; an iterator given as ``frames`` is then closed, which stops an
    ``iter_raw_frames`` decoder feeding it.

    Args:
        args: ffmpeg arguments (after ``QUIET``) reading rawvideo from ``-i -`` and writing a file.
        frames: Raw frames, each as bytes.

    Raises:
        FfmpegError: ffmpeg exited with an error.
    """
    command = ffmpeg_command(args)
    logger.debug("running %s", shlex.join(command))
    iterator = iter(frames)
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log)
        assert process.stdin is not None
        try:
            for frame in iterator:
                check_stop("frames no longer encoded")
                process.stdin.write(frame)
        except BrokenPipeError:
            pass  # ffmpeg stopped early; its status and log say why
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
            with suppress(BrokenPipeError):
                process.stdin.close()
            returncode = process.wait()
        if returncode != 0:
            log.seek(0)
            raise FfmpegError(command, returncode, log.read().decode(errors="replace"))


def ffmpeg_has_filter(name: str) -> bool:
    """Whether the installed ffmpeg has the filter ``name`` (e.g. ``drawtext``, which needs libfreetype)."""
    try:
        listing = run_ffmpeg(["-filters"]).decode(errors="replace")
    except (OSError, FfmpegError):
        return False
    return f" {name} " in listing


def font_file_matching(pattern: str) -> str | None:
    """The font file fontconfig's ``fc-match`` picks for ``pattern`` (e.g. ``sans:bold``), or ``None``."""
    if shutil.which("fc-match") is None:
        return None
    found = subprocess.run(["fc-match", "-f", "%{file}", pattern], capture_output=True, text=True, check=False)
    return (found.stdout.strip() or None) if found.returncode == 0 else None
