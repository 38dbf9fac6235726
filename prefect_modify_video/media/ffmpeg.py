"""Running ffmpeg and ffprobe: one runner that isolates stdin, logs the command and raises typed errors."""

from __future__ import annotations

import hashlib
import uuid
import logging
import os
import shlex
import shutil
import subprocess
from pathlib import Path

from prefect_modify_video.errors import FfmpegError, InvalidInputError

logger = logging.getLogger(__name__)

FFMPEG = os.environ.get("PREFECT_MODIFY_VIDEO_FFMPEG", "ffmpeg")
FFPROBE = os.environ.get("PREFECT_MODIFY_VIDEO_FFPROBE", "ffprobe")


def encoder_threads() -> int | None:
    """Threads of the encoders of extracted clips: ``PREFECT_MODIFY_VIDEO_THREADS``, else the encoder's own choice.

    x264's bytes depend on it, which is why no key of a paid call is made of encoded bytes.
    """
    value = os.environ.get("PREFECT_MODIFY_VIDEO_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def require_ffmpeg() -> None:
    """Raises a clear error when ffmpeg or ffprobe is not installed."""
    for program in (FFMPEG, FFPROBE):
        if shutil.which(program) is None:
            raise InvalidInputError(
                f"{program} is not installed or not on PATH; install it "
                "(Debian/Ubuntu: `apt-get install ffmpeg`, or run `make setup`)"
            )


def run_ffmpeg(args: list[str], *, program: str = FFMPEG, input_bytes: bytes | None = None) -> bytes:
    """Runs ffmpeg (or ffprobe) with ``args`` and returns its stdout.

    The child gets its own stdin so it never reads the terminal; ``-hide_banner`` and an
    error log level are added for ffmpeg.

    Raises:
        FfmpegError: the program exited with an error; the message has the tail of stderr.
    """
    command = [program, *args]
    if program == FFMPEG:
        command = [program, "-hide_banner", "-nostdin", "-loglevel", "error", *args]
    logger.debug("running %s", shlex.join(command))
    completed = subprocess.run(
        command,
        input=input_bytes if input_bytes is not None else b"",
        capture_output=True,
        check=False,
    )
    if completed.returncode != 0:
        raise FfmpegError(command, completed.returncode, completed.stderr.decode(errors="replace"))
    return completed.stdout


def sha256_of_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Returns the hex sha256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_destination(destination: Path) -> Path:
    """Returns a temporary path beside ``destination`` (same folder, same extension).

    Write there, then ``os.replace`` it onto ``destination``, so that a crash never leaves
    a half-written file under the final name.
    """
    return destination.with_name(f".{destination.stem}.{uuid.uuid4().hex[:8]}.partial{destination.suffix}")


def write_with_ffmpeg(args: list[str], destination: Path) -> Path:
    """Runs ffmpeg with ``args`` writing to a temporary file beside ``destination``, then renames it.

    A crash or an error never leaves a half-written file under the final name.

    Returns:
        ``destination``.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = atomic_destination(destination)
    try:
        run_ffmpeg([*args, "-y", str(partial)])
        os.replace(partial, destination)
    finally:
        partial.unlink(missing_ok=True)
    return destination
