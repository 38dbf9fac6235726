"""Finding shot cuts: where a new shot starts, from one small decode of the video.

One decode of the whole video, scaled to 64x36 and read as YUV through a rawvideo pipe, gives
each frame's mean absolute difference to the previous one (``frame_differences``). Cuts are
found in those numbers by an adaptive threshold (``cuts_from_differences``, the rule of
PySceneDetect's ``AdaptiveDetector``): a frame is a cut when its difference is at least
``threshold`` times the mean difference of the ``window`` frames on either side of it, and at
least ``min_difference`` on the 0-255 scale. The same numbers tell the planner where a long
shot moves least, so one decode serves both.

Why this rule rather than ffmpeg's ``scdet`` filter. Measured on this machine (2 cores) on
synthetic videos whose cuts are known; a cut counts only on its exact frame (±0); times are
two runs, the machine being shared:

===================================  ====  =========================  =========================
video                                cuts  adaptive (defaults)        scdet, threshold 10
===================================  ====  =========================  =========================
sample 6 s 320x180 (test fixture)    3     3 found, 0 false           3 found, 0 false
sample 20 s 320x180, 7 shots         6     6 found, 0 false           6 found, 0 false
"hard" 21 s 320x180 (below)          6     6 found, 0 false           5 found, 1 false
sample 75 s 1280x720 (make demo)     3     3 found, 0 false; 3-4 s    3 found, 0 false; 2-4 s
phone-like 3 min 1920x1080, 16 Mb/s  5     5 found, 0 false; 42-55 s  5 found, 0 false; 51-54 s
===================================  ====  =========================  =========================

"hard" is seven 3 s shots: a Mandelbrot zoom, a fast scroll (in-shot differences of 36), the
same test card cropped (a cut between similar pictures), the game of life, bars with a fast
hue turn, then a grey gradient followed by the same gradient 15 levels brighter (a faint cut,
difference 8.5). ``scdet`` scores how much the difference changes, so it fires again on the
first frame of a fast shot after a still one (score 10.1) and misses the faint cut (9.7): no
threshold gets both. The "phone-like" file is six 30 s shots (test cards, a zoom, the game of
life, a scroll) under temporal noise, H.264 High profile at 16 Mbit/s. Over all five videos,
true cuts have a ratio of 4.0 or more and a difference of 8.5 or more; every other frame has a
ratio of 2.14 or less, and 1.34 or less among frames whose difference reaches
``min_difference``. The weakest ratios are those of cuts next to fast motion (still to fast
scroll 4.0 here, 3.5-3.7 in the 160x90 version in the tests), whose neighbours' mean is high;
cuts between slow shots score 19 or more. Both detectors cost one
decode of the file; a plain ``ffmpeg -i f -f null -`` of the 3-minute file takes 37-46 s
here, so ``frame_differences`` adds little to it, and its numbers also serve the planner.

Decoding faster with ``-skip_loop_filter all`` (about 15 % less CPU) was measured and left out: it
finds the same cuts on the tests' videos, but its differences (up to 3.8 apart on the 60 s 720p
source of bench/overhead.py, where the skipped filtering drifts through a GOP) move split points
inside long shots, so a film planned again would be sent, and paid for, in other segments.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np

from prefect_modify_video.media.ffmpeg import iter_raw_frames

# Defaults of the adaptive cut rule; see the module docstring for the margins they leave.
CUT_THRESHOLD = 3.0
CUT_WINDOW = 2
CUT_MIN_DIFFERENCE = 5.0
CUT_MIN_SHOT_FRAMES = 8
# Below this the mean of a frame's neighbours is taken as still: a tiny jump after stillness
# is then judged by ``min_difference`` alone, not by a huge ratio.
STILL_DIFFERENCE = 1.0


def frame_differences(
    path: str | Path,
    *,
    width: int = 64,
    height: int = 36,
    frame_rate: str | Fraction | None = None,
) -> np.ndarray:
    """Mean absolute difference of each frame to the previous one, from one decode.

    Frames are scaled to ``width`` x ``height`` (area average, which also averages out grain)
    and compared on all three YUV planes at full chroma resolution, so a cut between two
    pictures of equal brightness but different colour still shows. A 3-minute 1080p phone
    video takes 42-55 s on 2 cores, about what decoding it alone takes (module docstring).

    Args:
        path: The video.
        width: Width the frames are scaled to before comparing.
        height: Height the frames are scaled to.
        frame_rate: If given, frames are first resampled to this constant rate, as the
            pipeline's extract step does, so that indices match a plan's frame numbers for a
            variable-rate source. ``None`` reads the frames as they are stored.

    Returns:
        ``float32`` array, one value per frame on the 0-255 scale; index 0 is 0.

    Raises:
        FfmpegError: the file could not be decoded.
    """
    filters = f"fps={frame_rate}," if frame_rate is not None else ""
    filters += f"scale={width}:{height}:flags=area,format=yuv444p"
    args = [
        "-i", str(path), "-map", "0:v:0", "-an", "-sn", "-dn", "-vf", filters,
        "-fps_mode", "passthrough",
        "-f", "rawvideo", "-pix_fmt", "yuv444p", "-",
    ]
    differences: list[np.ndarray] = []
    previous: np.ndarray | None = None
    for batch in iter_raw_frames(args, 3 * width * height):
        frames = batch.astype(np.int16)
        if previous is None:
            differences.append(np.zeros(1, dtype=np.float32))
        else:
            differences.append(np.abs(frames[:1] - previous).mean(axis=1, dtype=np.float32))
        differences.append(np.abs(np.diff(frames, axis=0)).mean(axis=1, dtype=np.float32))
        previous = frames[-1:]
    return np.concatenate(differences) if differences else np.zeros(0, dtype=np.float32)


def cut_ratios(differences: Sequence[float] | np.ndarray, *, window: int = CUT_WINDOW) -> np.ndarray:
    """Each frame's difference divided by the mean difference of its neighbours.

    The neighbours are the ``window`` frames before and after (fewer at the ends; index 0,
    which has no previous frame, is never a neighbour). The mean is floored at
    ``STILL_DIFFERENCE``. Index 0 gets 0.
    """
    values = np.asarray(differences, dtype=np.float64)
    count = len(values)
    if count == 0:
        return np.zeros(0)
    # Sums over index ranges from prefix sums; index 0 counts as no neighbour.
    usable = np.ones(count)
    usable[0] = 0.0
    sums = np.concatenate([[0.0], np.cumsum(values * usable)])
    counts = np.concatenate([[0.0], np.cumsum(usable)])
    index = np.arange(count)
    before_start, after_end = np.maximum(index - window, 0), np.minimum(index + 1 + window, count)
    total = (sums[index] - sums[before_start]) + (sums[after_end] - sums[index + 1])
    number = (counts[index] - counts[before_start]) + (counts[after_end] - counts[index + 1])
    level = np.where(number > 0, total / np.maximum(number, 1), 0.0)
    ratios = values / np.maximum(level, STILL_DIFFERENCE)
    ratios[0] = 0.0
    return ratios


def cuts_from_differences(
    differences: Sequence[float] | np.ndarray,
    *,
    threshold: float = CUT_THRESHOLD,
    window: int = CUT_WINDOW,
    min_difference: float = CUT_MIN_DIFFERENCE,
    min_shot_frames: int = CUT_MIN_SHOT_FRAMES,
) -> list[int]:
    """Frames where a new shot starts, by the adaptive rule (pure; see the module docstring).

    Args:
        differences: Output of ``frame_differences``.
        threshold: Least ratio of a cut's difference to its neighbours' mean difference.
        window: Neighbours on each side.
        min_difference: Least difference of a cut, on the 0-255 scale.
        min_shot_frames: A candidate closer than this to the previous cut is dropped (a flash
            gives two candidates, in and out; the first is kept).

    Returns:
        Sorted frame indices, never 0.
    """
    values = np.asarray(differences, dtype=np.float64)
    ratios = cut_ratios(values, window=window)
    cuts: list[int] = []
    for index in np.flatnonzero((ratios >= threshold) & (values >= min_difference)):
        if index == 0 or (cuts and index - cuts[-1] < min_shot_frames):
            continue
        cuts.append(int(index))
    return cuts


def detect_cuts(
    path: str | Path,
    *,
    frame_rate: str | Fraction | None = None,
    threshold: float = CUT_THRESHOLD,
    window: int = CUT_WINDOW,
    min_difference: float = CUT_MIN_DIFFERENCE,
    min_shot_frames: int = CUT_MIN_SHOT_FRAMES,
) -> list[int]:
    """Frame indices where a new shot starts (hard cuts), never 0.

    Decodes the video once (``frame_differences``); when the differences are needed too
    (for ``plan.plan_segments_on_cuts``), call that and ``cuts_from_differences`` instead.

    Args:
        path: The video.
        frame_rate: See ``frame_differences``.
        threshold: See ``cuts_from_differences``.
        window: See ``cuts_from_differences``.
        min_difference: See ``cuts_from_differences``.
        min_shot_frames: See ``cuts_from_differences``.

    Returns:
        Sorted frame indices.
    """
    differences = frame_differences(path, frame_rate=frame_rate)
    return cuts_from_differences(
        differences,
        threshold=threshold,
        window=window,
        min_difference=min_difference,
        min_shot_frames=min_shot_frames,
    )
