"""Colour statistics of YUV pictures and the per-channel transfer that moves one picture's statistics to another's.

A ``ColourTransfer`` is applied three ways, all from the same weighting (``ColourTransfer.weighted``):
as an ffmpeg ``lutyuv`` filter (the local backend's looks, the finish step's encode), as numpy lookup
tables of the same values (the few frames of a blend head) and on statistics directly (the anchor's planning).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from prefect_modify_video.media.ffmpeg import run_ffmpeg


class YuvStatistics(NamedTuple):
    """Mean and standard deviation of the Y, U and V planes of some frames (0-255 scale)."""

    mean: np.ndarray
    std: np.ndarray


@dataclass(frozen=True)
class ColourTransfer:
    """One per-channel gain and offset in YUV that moves a reference's statistics to a target's."""

    gain: tuple[float, float, float]
    offset: tuple[float, float, float]

    def weighted(self, weight: float) -> tuple[np.ndarray, np.ndarray]:
        """Gain and offset of Y, U and V at ``weight`` (0: none, 1: full): the gain eased toward 1, the offset toward 0."""
        return 1 + weight * (np.asarray(self.gain) - 1), weight * np.asarray(self.offset)

    def lut_expressions(self, weight: float) -> list[str]:
        """The ``lutyuv`` expressions of Y, U and V at ``weight``: the values of ``lookup_tables``.

        ``round`` is ``np.rint`` but on exact halves; ``lutyuv`` clips the result to 0-255 itself.
        """
        return [f"round(val*{g:.9f}{o:+.9f})" for g, o in zip(*self.weighted(weight))]

    def filter(self, strength: float, name: str = "") -> str:
        """The ``lutyuv`` filter applying this transfer at ``strength`` (0: none, 1: full).

        Args:
            strength: The weight (``weighted``).
            name: Names the filter ``lutyuv@name``, for ``sendcmd`` to change its expressions.
        """
        label = f"lutyuv@{name}" if name else "lutyuv"
        return f"{label}=" + ":".join(f"{plane}={text}" for plane, text in zip("yuv", self.lut_expressions(strength)))

    def lookup_tables(self, weight: float) -> list[np.ndarray]:
        """Lookup tables of Y, U and V (``uint8``, 256 entries each) for this transfer at ``weight``."""
        values = np.arange(256, dtype=np.float64)
        return [np.clip(np.rint(values * g + o), 0, 255).astype(np.uint8) for g, o in zip(*self.weighted(weight))]


IDENTITY = ColourTransfer(gain=(1.0, 1.0, 1.0), offset=(0.0, 0.0, 0.0))
"""The transfer that changes nothing."""


def yuv_statistics(path: Path, *, at_seconds: float = 0.0, width: int = 256) -> YuvStatistics:
    """Mean and standard deviation of Y, U and V of one frame of a video, or of an image.

    The frame is scaled to ``width`` pixels wide and read through a rawvideo pipe.

    Args:
        path: A video or an image.
        at_seconds: Where the frame is (0: the first).
        width: Width the frame is scaled to.

    Returns:
        ``(mean, std)``, each an array of 3.
    """
    args = []
    if at_seconds > 0:
        args += ["-ss", f"{at_seconds:.6f}"]
    args += [
        "-i", str(path), "-frames:v", "1",
        "-vf", f"scale={width}:-2,format=yuv444p", "-f", "rawvideo", "-pix_fmt", "yuv444p", "-",
    ]  # fmt: skip
    raw = run_ffmpeg(args)
    planes = np.frombuffer(raw, dtype=np.uint8).reshape(3, -1).astype(np.float64)
    return YuvStatistics(planes.mean(axis=1), planes.std(axis=1))
