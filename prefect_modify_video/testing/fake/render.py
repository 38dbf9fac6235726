"""The fake services' work: a restyled clip made by ffmpeg from the uploaded one.

The answer is hue turned and graded warm, at 24 fps, without audio, H.264 yuv420p, the
input's size and length, as the real services answer. With ``drift`` above 0 each answer
also gets its own colour cast and brightness (``drift_filter``), so joins show seams to
correct.
"""

from __future__ import annotations

import os
import random
import subprocess
import tempfile
from pathlib import Path

VIDEO_FILTER = "hue=h=90:s=1.5,colorchannelmixer=rr=1:gg=0.8:bb=0.6"
"""The visible change the fake applies: hue turned 90°, then a warm grade (moves grey too)."""

DRIFT_CHANNEL_GAIN = 0.08
"""At ``drift=1`` each channel's gain is 1 ± 0.04..0.08 (sign and size random per answer)."""
DRIFT_BRIGHTNESS = 0.04
"""At ``drift=1`` the brightness moves by ± 0.02..0.04 of the full range (about 5-10 levels)."""
CAST_SIGNS = ((-1, -1, -1), (-1, 1, 1), (1, -1, 1), (1, 1, -1))
"""Directions of the (red, green, blue) gains of casts 0-3, then again: any two differ in two."""

_FFMPEG = os.environ.get("PREFECT_MODIFY_VIDEO_FFMPEG", "ffmpeg")
_FFPROBE = os.environ.get("PREFECT_MODIFY_VIDEO_FFPROBE", "ffprobe")


class RenderError(RuntimeError):
    """Raised when ffmpeg cannot make a clip from the uploaded bytes."""


def drift_filter(drift: float, cast: int = 0) -> str | None:
    """The colour cast number ``cast`` at size ``drift``: an ffmpeg filter, or ``None`` when ``drift`` is 0.

    Each channel's gain moves by ``drift * DRIFT_CHANNEL_GAIN`` times a size in 0.5..1 drawn
    from ``cast``, with the signs of ``CAST_SIGNS[cast % 4]``, and the brightness by
    ``drift * DRIFT_BRIGHTNESS`` the way green moves. So any two of four consecutive casts
    differ in the direction of two channels: neighbouring segments always show a seam, on
    every machine (a draw from the clip's bytes would depend on the x264 build and threads).

    Args:
        drift: Size of the drift; 0 gives none, 1 is a clearly visible cast.
        cast: Which cast; the fake server numbers the distinct clips it is sent.

    Example:
        >>> drift_filter(1.0, cast=1).startswith("colorchannelmixer=rr=0.9")
        True
        >>> drift_filter(0.0, cast=1) is None
        True
    """
    if drift <= 0:
        return None
    draw = random.Random(cast)
    red, green, blue = (1 + sign * draw.uniform(0.5, 1.0) * DRIFT_CHANNEL_GAIN * drift for sign in CAST_SIGNS[cast % 4])
    brightness = (1.0 if green > 1 else -1.0) * draw.uniform(0.5, 1.0) * DRIFT_BRIGHTNESS * drift
    return f"colorchannelmixer=rr={red:.4f}:gg={green:.4f}:bb={blue:.4f},eq=brightness={brightness:.4f}"


def render_modified_clip(
    video: bytes,
    *,
    output_size: tuple[int, int] | None = None,
    length_factor: float = 1.0,
    drift: float = 0.0,
    cast: int = 0,
    fps: float = 24.0,
) -> bytes:
    """Makes the fake service's answer: a colour-changed silent H.264 MP4 at ``fps`` (24 by default).

    Args:
        video: The uploaded clip.
        output_size: ``(width, height)`` of the answer; ``None`` keeps the input's size.
        length_factor: Part of the input the answer covers (1.0: all of it). Below 1 the
            answer is the *first* ``length_factor`` of the input (an output ``-t``), so
            its frames line up with the start of the sent clip.
        drift: Size of this answer's own colour cast (``drift_filter``); 0 adds none.
        cast: Which cast (``drift_filter``).
        fps: The service's own frame rate (Lucy answers at 22).

    Returns:
        The MP4 bytes.

    Raises:
        RenderError: ffmpeg or ffprobe failed (not a video, no video stream...).
    """
    with tempfile.TemporaryDirectory(prefix="fake-modify-") as tmp:
        source = Path(tmp) / "in.mp4"
        target = Path(tmp) / "out.mp4"
        source.write_bytes(video)
        filters = [f"fps={fps:g}", VIDEO_FILTER]
        cast_filter = drift_filter(drift, cast)
        if cast_filter is not None:
            filters.append(cast_filter)
        if output_size is not None:
            filters.append(f"scale={int(output_size[0])}:{int(output_size[1])},setsar=1")
        args = [_FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", str(source)]
        args += ["-vf", ",".join(filters), "-an", "-sn", "-dn"]
        args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
        args += ["-movflags", "+faststart"]
        if length_factor != 1.0:
            args += ["-t", f"{_probe_duration(source) * length_factor:.3f}"]
        args.append(str(target))
        _run(args)
        return target.read_bytes()


def clip_rate_and_seconds(video: bytes) -> tuple[float | None, float | None]:
    """The frame rate of an uploaded clip's first video stream and its length (``None``: not readable)."""
    with tempfile.TemporaryDirectory(prefix="fake-probe-") as tmp:
        source = Path(tmp) / "in.mp4"
        source.write_bytes(video)
        try:
            out = _run([_FFPROBE, "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=r_frame_rate",
                        "-of", "csv=p=0", str(source)])
            seconds = _probe_duration(source)
        except RenderError:
            return None, None
    numerator, _, denominator = out.strip().partition("/")
    try:
        return float(numerator) / float(denominator or 1), seconds
    except (ValueError, ZeroDivisionError):
        return None, seconds


def _probe_duration(path: Path) -> float:
    out = _run(
        [_FFPROBE, "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)]
    )
    try:
        return float(out.strip())
    except ValueError as exc:
        raise RenderError(f"no duration in {out!r}") from exc


def _run(args: list[str]) -> str:
    try:
        done = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RenderError(f"{args[0]} failed: {exc}") from exc
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip()[-500:]
        raise RenderError(f"{args[0]} exited with {done.returncode}: {tail}")
    return done.stdout.decode(errors="replace")
