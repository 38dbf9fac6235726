"""Reading a video's frames into numpy: a window of frames found by seeking, and the planes of raw yuv420p frames.

Frames are numbered as the pipeline's extract step numbers them (the ``fps`` filter at the
source's rate after a seek), so index ``k`` is a plan's frame ``k``.
"""

from __future__ import annotations

import tempfile
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from prefect_modify_video.media.ffmpeg import run_ffmpeg
from prefect_modify_video.media.probe import frame_seek_seconds


def _reading(
    first: int, rate: Fraction, size: tuple[int, int], pix_fmt: str, start_offset_s: float
) -> tuple[list[str], str, str]:
    """How ``read_frames`` reads from frame ``first``: the seek's input options, the numbering filter, the scaling."""
    seek = frame_seek_seconds(first, rate, start_offset_s)
    width, height = size
    return (
        ["-ss", f"{seek:.6f}"] if seek > 0 else [],
        f"fps={rate.numerator}/{rate.denominator}",
        f"scale={width}:{height}:flags=area,format={pix_fmt}",
    )


def read_frames(
    path: str | Path,
    first: int,
    count: int,
    *,
    frame_rate: str | Fraction,
    size: tuple[int, int],
    pix_fmt: str = "yuv420p",
    start_offset_s: float = 0.0,
) -> np.ndarray:
    """Reads ``count`` frames from frame ``first`` on, by seeking, as raw bytes per frame.

    Frames are numbered at ``frame_rate`` as the pipeline's extract step numbers them (a
    quarter-frame early seek, then the ``fps`` filter), so index ``k`` is the plan's frame ``k``.
    A read past the end returns fewer frames.

    Args:
        path: The video.
        first: First frame wanted.
        count: Number of frames wanted.
        frame_rate: The rate frames are numbered at.
        size: ``(width, height)`` the frames are scaled to (area average).
        pix_fmt: Raw pixel format, ``yuv420p`` or ``rgb24``.
        start_offset_s: The video's start after the file's earliest stream (``VideoInfo.start_offset_s``).

    Returns:
        ``uint8`` array of shape (frames, bytes per frame).
    """
    width, height = size
    frame_bytes = {"yuv420p": width * height * 3 // 2, "rgb24": width * height * 3}[pix_fmt]
    seek, numbering, scale = _reading(first, Fraction(frame_rate), size, pix_fmt, start_offset_s)
    output = ["-frames:v", str(count), "-f", "rawvideo", "-pix_fmt", pix_fmt, "-"]
    raw = run_ffmpeg([
        *seek, "-i", str(path), "-map", "0:v:0", "-an", "-sn", "-dn", "-vf", f"{numbering},{scale}", *output,
    ])  # fmt: skip
    if seek and len(raw) < count * frame_bytes:
        # Seeking failed on this file (some MPEG-TS do), or the read runs past the end: count from the start.
        raw = run_ffmpeg([
            "-i", str(path), "-map", "0:v:0", "-an", "-sn", "-dn",
            "-vf", f"{numbering},trim=start_frame={first},{scale}", *output,
        ])  # fmt: skip
    whole = len(raw) - len(raw) % frame_bytes
    return np.frombuffer(raw[:whole], dtype=np.uint8).reshape(-1, frame_bytes)


class FrameWindow(NamedTuple):
    """Frames ``first`` .. ``first + count - 1`` of a video, numbered as ``read_frames`` numbers them."""

    path: str | Path
    first: int
    count: int
    frame_rate: str | Fraction
    start_offset_s: float = 0.0


def read_frame_windows(windows: Sequence[FrameWindow], *, size: tuple[int, int]) -> list[np.ndarray]:
    """``read_frames`` of each window (raw yuv420p at ``size``), all in one ffmpeg run.

    Each window is one input opened with its own seek and one output with ``read_frames``' filters, so
    each gives the frames ``read_frames`` gives; one program start serves them all. Meant for a few
    windows (the seam report reads two a run: eight in one run cost more CPU than four runs of two).
    A window that gives fewer frames (a seek that failed on its file, or the video's end) is read by
    ``read_frames``.

    Returns:
        One ``uint8`` array (frames, bytes per frame) per window, in order.
    """
    width, height = size
    frame_bytes = width * height * 3 // 2
    with tempfile.TemporaryDirectory(prefix="modify-video-frames-") as folder:
        inputs: list[str] = []
        outputs: list[str] = []
        for index, window in enumerate(windows):
            seek, numbering, scale = _reading(
                window.first, Fraction(window.frame_rate), size, "yuv420p", window.start_offset_s
            )
            # One decoding thread: for a few frames, frame threads cost about 15 % more CPU (their start and sync).
            inputs += ["-threads", "1", *seek, "-i", str(window.path)]
            outputs += [
                "-map", f"{index}:v:0", "-vf", f"{numbering},{scale}", "-frames:v", str(window.count),
                "-f", "rawvideo", "-pix_fmt", "yuv420p", str(Path(folder) / f"{index}.yuv"),
            ]  # fmt: skip
        if windows:
            run_ffmpeg([*inputs, *outputs])
        read = []
        for index, window in enumerate(windows):
            raw = (Path(folder) / f"{index}.yuv").read_bytes()
            if len(raw) < window.count * frame_bytes:
                read.append(read_frames(
                    window.path, window.first, window.count, frame_rate=window.frame_rate, size=size,
                    start_offset_s=window.start_offset_s,
                ))  # fmt: skip
            else:
                read.append(np.frombuffer(raw[: window.count * frame_bytes], dtype=np.uint8).reshape(-1, frame_bytes))
        return read


def yuv420p_planes(frames: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Splits raw yuv420p frames (frames, bytes) into Y, U and V arrays (frames, pixels)."""
    width, height = size
    luma = width * height
    chroma = luma // 4
    return frames[:, :luma], frames[:, luma : luma + chroma], frames[:, luma + chroma : luma + 2 * chroma]
