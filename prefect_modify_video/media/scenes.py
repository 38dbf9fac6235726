"""Finding shot cuts and planning segments whose seams fall on them.

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
"""

from __future__ import annotations

import math
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from prefect_modify_video.errors import FfmpegError, InvalidInputError
from prefect_modify_video.media.ffmpeg import FFMPEG
from prefect_modify_video.media.probe import VideoInfo
from prefect_modify_video.media.plan import MIN_SEGMENT_SECONDS, Segment, SegmentPlan, max_frames_under

# Defaults of the adaptive cut rule; see the module docstring for the margins they leave.
CUT_THRESHOLD = 3.0
CUT_WINDOW = 2
CUT_MIN_DIFFERENCE = 5.0
CUT_MIN_SHOT_FRAMES = 8
# Below this the mean of a frame's neighbours is taken as still: a tiny jump after stillness
# is then judged by ``min_difference`` alone, not by a huge ratio.
STILL_DIFFERENCE = 1.0


def iter_raw_frames(args: list[str], frame_bytes: int, *, batch_frames: int = 256) -> Iterator[np.ndarray]:
    """Runs ffmpeg writing rawvideo to stdout and yields its frames in batches.

    Memory stays at one batch however long the video is.

    Args:
        args: ffmpeg arguments (after the program name); they must end by writing rawvideo to ``-``.
        frame_bytes: Size of one frame in bytes.
        batch_frames: Frames per yielded array.

    Yields:
        ``uint8`` arrays of shape (frames, frame_bytes); the last one may be shorter.

    Raises:
        FfmpegError: ffmpeg exited with an error.
    """
    command = [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", *args]
    # stderr goes to a file: a damaged file can log an error per frame, more than a pipe holds.
    with tempfile.TemporaryFile() as log:
        with subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log) as process:
            assert process.stdout is not None
            try:
                while True:
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
    (for ``plan_segments_on_cuts``), call that and ``cuts_from_differences`` instead.

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


# ----------------------------------------------------------------- planning on cuts


def _pack_cost(frames: int, min_frames: int) -> tuple[int, int, int]:
    return (1, int(frames < min_frames), 0)


def _add(a: tuple[int, int, int], b: tuple[int, int, int]) -> tuple[int, int, int]:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2])


def _split_points(
    first: int,
    end: int,
    parts: int,
    shot: tuple[int, int],
    differences: np.ndarray | None,
    search_frames: int,
    min_frames: int,
    max_frames: int,
) -> list[int]:
    """Inner boundaries of ``parts`` equal parts of first..end, each moved to the stillest frame near it.

    A boundary stays inside ``shot`` (the long shot being split), keeps both parts it touches
    between ``min_frames`` and ``max_frames``, and is moved at most ``search_frames``. Moving
    them left to right keeps a solution: each next nominal boundary stays reachable.
    """
    length = end - first
    bounds = [first + length * k // parts for k in range(parts + 1)]
    for k in range(1, parts):
        nominal = bounds[k]
        low = max(nominal - search_frames, bounds[k - 1] + min_frames, bounds[k + 1] - max_frames, shot[0] + 1)
        high = min(nominal + search_frames, bounds[k - 1] + max_frames, bounds[k + 1] - min_frames, shot[1] - 1)
        if differences is None or low > high:
            continue
        candidates = np.arange(low, high + 1)
        # Stillest frame first, then the one nearest the equal split.
        order = np.lexsort((np.abs(candidates - nominal), differences[candidates]))
        bounds[k] = int(candidates[order[0]])
    return bounds[1:-1]


def plan_segments_on_cuts(
    total_frames: int,
    frame_rate: str | Fraction,
    max_segment_seconds: float,
    cuts: Sequence[int],
    differences: Sequence[float] | np.ndarray | None = None,
    *,
    min_segment_seconds: float = MIN_SEGMENT_SECONDS,
    search_seconds: float = 0.5,
    overlap_frames: int = 0,
) -> SegmentPlan:
    """Splits the frames into segments under the cap with seams on shot cuts first.

    Whole consecutive shots are packed into segments under the cap, as many as fit in each
    (greedy, front first). A shot longer than the cap is split into the fewest equal parts,
    each split point moved to the lowest-motion frame (smallest ``differences``) within
    ``search_seconds`` while every part stays under the cap and at least
    ``min_segment_seconds`` long. A shot shorter than ``min_segment_seconds`` that cannot share
    a segment with whole neighbours goes into the parts of a long neighbouring shot; if there
    is none it becomes a short segment of its own.

    Exactly: among plans whose seams are cuts or split points inside long shots, this is one
    with the fewest segments, then the fewest segments under ``min_segment_seconds``, then the
    fewest seams off cuts; among those, each segment ends as late as possible (the greedy
    packing). It is found by a shortest path over the cuts.

    A segment starting inside a shot also gets ``overlap_frames`` frames before its start
    (``Segment.overlap_frames``; fewer if the previous segment or the shot is shorter): they are
    sent with it and cross-blended with the previous segment's last frames. The parts of a long
    shot are sized so that each, overlap included, stays under the cap.

    Args:
        total_frames: Number of frames in the source.
        frame_rate: Frames per second, e.g. ``"30000/1001"``.
        max_segment_seconds: The backend's cap; every segment is strictly shorter.
        cuts: Frames where a shot starts (``detect_cuts``); 0, duplicates and frames outside
            the video are ignored.
        differences: ``frame_differences`` of the source, for choosing split points; ``None``
            splits long shots exactly equally.
        min_segment_seconds: Shortest segment wanted.
        search_seconds: How far a split point may move from the equal split.
        overlap_frames: Frames each in-shot seam's segments share (0: none); at most half of
            ``min_segment_seconds`` is used.

    Returns:
        The plan; segments starting on a cut have ``cut_before=True``.

    Raises:
        InvalidInputError: no frames, no frame rate, or a cap under twice ``min_segment_seconds``.
    """
    rate = Fraction(frame_rate)
    if total_frames <= 0 or rate <= 0:
        raise InvalidInputError("plan: the video has no frames or no frame rate")
    if max_segment_seconds < 2 * min_segment_seconds:
        raise InvalidInputError(
            f"plan: max_segment_seconds={max_segment_seconds} is too short; "
            f"use at least {2 * min_segment_seconds:g} s"
        )
    if differences is not None:
        # Frames without a measure are never chosen as split points.
        differences = np.asarray(differences, dtype=np.float64)[:total_frames]
        if len(differences) < total_frames:
            differences = np.concatenate([differences, np.full(total_frames - len(differences), np.inf)])
    max_frames = max_frames_under(max_segment_seconds, rate)
    min_frames = min(max_frames, math.ceil(Fraction(min_segment_seconds).limit_denominator(1000) * rate))
    if overlap_frames < 0:
        raise InvalidInputError(f"plan: overlap_frames={overlap_frames} must be 0 or more")
    # At most half the shortest segment wanted; parts of a long shot carry it on top of their own frames.
    overlap_frames = min(overlap_frames, min_frames // 2)
    part_max_frames = max_frames - overlap_frames
    search_frames = int(search_seconds * rate)

    cut_set = sorted({int(c) for c in cuts if 0 < int(c) < total_frames})
    starts = [0, *cut_set]
    ends = [*cut_set, total_frames]
    lengths = [e - s for s, e in zip(starts, ends)]
    count = len(starts)
    long_shot = [n > max_frames for n in lengths]

    # edges[a] = list of (b, cost, long shot index or None): shots a..b-1 make one unit.
    edges: list[list[tuple[int, tuple[int, int, int], int | None]]] = [[] for _ in range(count)]
    for a in range(count):
        frames = 0
        for b in range(a + 1, count + 1):
            if long_shot[b - 1]:
                break
            frames += lengths[b - 1]
            if frames > max_frames:
                break
            edges[a].append((b, _pack_cost(frames, min_frames), None))
    for k in range(count):
        if not long_shot[k]:
            continue
        # A long shot with the short shots next to it (each side under min_frames) attached.
        firsts = [k]
        total = 0
        for a in range(k - 1, -1, -1):
            total += lengths[a]
            if long_shot[a] or total >= min_frames:
                break
            firsts.append(a)
        afters = [k + 1]
        total = 0
        for b in range(k + 1, count):
            total += lengths[b]
            if long_shot[b] or total >= min_frames:
                break
            afters.append(b + 1)
        for a in firsts:
            for b in afters:
                frames = ends[b - 1] - starts[a]
                parts = math.ceil(frames / part_max_frames)
                edges[a].append((b, (parts, 0, parts - 1), k))

    # Cheapest cover of shots a..count-1, filled from the end.
    best: list[tuple[int, int, int] | None] = [None] * (count + 1)
    best[count] = (0, 0, 0)
    for a in range(count - 1, -1, -1):
        for b, cost, _ in edges[a]:
            if best[b] is not None:
                total_cost = _add(cost, best[b])
                if best[a] is None or total_cost < best[a]:
                    best[a] = total_cost

    boundaries: list[int] = []
    a = 0
    while a < count:
        choices = [(b, cost, k) for b, cost, k in edges[a] if best[b] is not None and _add(cost, best[b]) == best[a]]
        b, cost, k = max(choices, key=lambda choice: choice[0])
        first, end = starts[a], ends[b - 1]
        boundaries.append(first)
        if k is not None:
            parts = cost[0]
            boundaries += _split_points(
                first, end, parts, (starts[k], ends[k]), differences, search_frames, min_frames, part_max_frames
            )
        a = b
    boundaries.append(total_frames)

    segments = []
    for index, (first, end) in enumerate(zip(boundaries, boundaries[1:])):
        in_shot = index > 0 and first not in cut_set
        shot_start = max((c for c in starts if c <= first), default=0)
        overlap = min(overlap_frames, first - shot_start, first - boundaries[index - 1]) if in_shot else 0
        segments.append(
            Segment(
                index=index,
                first_frame=first,
                end_frame=end,
                start_s=float(first / rate),
                end_s=float(end / rate),
                cut_before=index > 0 and not in_shot,
                overlap_frames=overlap,
            )
        )
    return SegmentPlan(
        frame_rate=f"{rate.numerator}/{rate.denominator}",
        total_frames=total_frames,
        max_segment_seconds=max_segment_seconds,
        segments=segments,
    )


def plan_video(info: VideoInfo, max_segment_seconds: float, overlap_frames: int = 0) -> SegmentPlan:
    """Plans a probed video's segments with seams on its shot cuts first (one small decode).

    Args:
        info: The probed source.
        max_segment_seconds: The cap every segment stays strictly under, overlap included.
        overlap_frames: Frames shared by the two segments of each seam inside a shot.

    Returns:
        The plan; ``cut_before`` marks the seams that fall on a cut.
    """
    differences = frame_differences(info.path, frame_rate=info.frame_rate)
    cuts = cuts_from_differences(differences)
    return plan_segments_on_cuts(
        info.frames, info.frame_rate, max_segment_seconds, cuts, differences, overlap_frames=overlap_frames
    )
