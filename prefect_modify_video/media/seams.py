"""Measuring how visible each seam of a joined output is, and a contact sheet of the frames around them.

A seam at frame ``k`` joins frame ``k - 1`` of one segment to frame ``k`` of the next. Its
metric compares the output's jump in mean Y, U and V across it (ffmpeg ``signalstats``'
YAVG/UAVG/VAVG, computed in numpy) with what the jump may legitimately be: the source's own
jump at the same frame (large on a cut) and the output's usual frame-to-frame jump around it
(large in fast motion). Only the frames around each seam are decoded, by seeking. Every clip
ready to join is written with a keyframe just before the window the report reads before the seam
after it (``seam_keyframe_options``), so the output is decoded from there, not from the clip's
first frame; the source is decoded from its own keyframe before each window.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np
from pydantic import BaseModel, Field

from prefect_modify_video.errors import InvalidInputError
from prefect_modify_video.media.ffmpeg import write_with_ffmpeg
from prefect_modify_video.media.frames import FrameWindow, read_frame_windows, read_frames, yuv420p_planes
from prefect_modify_video.media.probe import VideoInfo, probe_video

SEAM_THRESHOLD = 1.5
# A change of mean level smaller than this (on the 0-255 scale) is taken as invisible, so
# seams in still, clean pictures are not judged by ratios of rounding noise.
MIN_VISIBLE_JUMP = 0.5
# Frames measured for the neighbouring jumps, on each side of a seam.
NEIGHBOUR_FRAMES = 3
# Frames are measured at most this wide; the mean of a plane barely changes with area scaling.
MEASURE_WIDTH = 320

# Contact sheet layout, in pixels.
FRAME_GAP = 2
SEAM_GAP = 16
ROW_GAP = 4
BACKGROUND = (32, 32, 32)
SEAM_MARK = (255, 0, 0)


class SeamMetric(BaseModel, frozen=True):
    """How visible one seam is: the output's jump against the jumps it may have.

    Jumps are absolute differences of plane means between frame ``frame - 1`` and ``frame``,
    as (Y, U, V) on the 0-255 scale.
    """

    frame: int = Field(description="First frame after the seam (frame k; the jump is from k-1 to k).")
    on_cut: bool = Field(description="Whether the seam falls on a shot cut of the source.")
    output_jump: tuple[float, float, float] = Field(
        description="The output's jump across the seam (a blended seam: the mean jump over the blend)."
    )
    source_jump: tuple[float, float, float] = Field(description="The source's jump at the same frame.")
    neighbour_jump: tuple[float, float, float] = Field(
        description="Median of the output's jumps at the frames around the seam, the seam excluded."
    )
    ratio: float = Field(
        description="Largest over Y, U, V of output jump / max(source jump, neighbour jump, MIN_VISIBLE_JUMP)."
    )
    threshold: float = Field(description="Largest ratio that passes.")
    passed: bool = Field(description="Whether ratio <= threshold.")


def seam_window(seam: int, overlap: int = 0, neighbours: int = NEIGHBOUR_FRAMES) -> tuple[int, int]:
    """The frames measured around a seam: ``(first, end)``, end exclusive, before clipping to the video's frames.

    The output's usual jump is taken over as many frames as a blend spans, at least ``neighbours``, on each
    side of the jumps into ``seam - overlap`` .. ``seam``.
    """
    blend_start = max(1, seam - overlap)
    span = max(neighbours, overlap)
    return max(0, blend_start - 1 - span), seam + span + 1


def keyframe_before_seam(overlap: int = 0, neighbours: int = NEIGHBOUR_FRAMES) -> int:
    """How many frames before a seam its output needs a keyframe, so the report decodes from there only.

    The frame before the first one ``seam_window`` measures: ``read_frames`` seeks a quarter frame
    before the frame it wants, and a seek lands on the last keyframe at or before that time.
    """
    seam = 2 * (overlap + neighbours + 2)  # any seam whose window starts after frame 0
    return seam - (seam_window(seam, overlap, neighbours)[0] - 1)


def seam_keyframe_options(frames: int, *, overlap: int = 0, frames_to_seam: int = 0) -> dict[str, str]:
    """ffmpeg output options for a clip ending before a seam: a keyframe where the seam report starts reading.

    Every writer of a clip ready to join (conform's final encode, the finish step, a backend encoding
    its answer as conform would) adds them, so the report decodes a few frames of the output around
    each seam instead of all from the clip's first frame. It costs one I-frame a clip.

    Args:
        frames: The clip's frames.
        overlap: Frames blended before the seam (the next segment's ``overlap_frames``).
        frames_to_seam: Frames between the clip's end and the seam (a body before a blended tail: the tail's).

    Returns:
        ``{"force_key_frames": expression}`` (options named as in an encode's settings), or nothing when that
        frame is not inside the clip after its first.
    """
    frame = frames + frames_to_seam - keyframe_before_seam(overlap)
    return {"force_key_frames": f"expr:eq(n,{frame})"} if 0 < frame < frames else {}


def measure_size(info: VideoInfo, max_width: int = MEASURE_WIDTH) -> tuple[int, int]:
    """Even frame size at which a video's frames are read for measuring: upright, at most ``max_width`` wide."""
    width, height = info.display_width, info.display_height
    if width > max_width:
        height = height * max_width / width
        width = max_width
    return max(2, int(width) - int(width) % 2), max(2, int(round(height)) - int(round(height)) % 2)


def plane_means(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Mean Y, U and V of each raw yuv420p frame: array (frames, 3)."""
    return np.stack([plane.mean(axis=1) for plane in yuv420p_planes(frames, size)], axis=1)


def _vector(values: np.ndarray) -> tuple[float, float, float]:
    return (float(values[0]), float(values[1]), float(values[2]))


def measure_seams(
    source: str | Path,
    output: str | Path,
    seams: Sequence[int],
    *,
    on_cut: Sequence[bool] | None = None,
    overlaps: Sequence[int] | None = None,
    threshold: float = SEAM_THRESHOLD,
    neighbours: int = NEIGHBOUR_FRAMES,
    min_jump: float = MIN_VISIBLE_JUMP,
) -> list[SeamMetric]:
    """Measures each seam of ``output`` against the same frames of ``source``.

    Both videos must have the same frames at the same rate (the pipeline's output does). A
    seam cross-blended over ``overlap`` frames spreads its change over the jumps into frames
    ``k - overlap`` to ``k``: it is judged by their mean against the mean of what each may be.
    About ``2 * neighbours + overlap + 2`` frames are decoded around each seam, in each video.
    ``measure_seams_and_sheet`` also draws the contact sheet from the same frames.

    Args:
        source: The source video.
        output: The joined output.
        seams: First frame of each segment after the first (``segment.first_frame``).
        on_cut: Whether each seam is on a cut (``segment.cut_before``); all ``False`` if omitted.
        overlaps: Frames blended before each seam (``segment.overlap_frames``); all 0 if omitted.
        threshold: Largest ratio that passes.
        neighbours: Frames on each side whose jumps make the neighbour jump.
        min_jump: Smallest jump a ratio is taken against (an invisible change).

    Returns:
        One metric per seam, in the order given.

    Raises:
        InvalidInputError: a seam outside 1..frames-1, or ``on_cut`` or ``overlaps`` of another length.
    """
    metrics, _ = measure_seams_and_sheet(
        source, output, seams, on_cut=on_cut, overlaps=overlaps, threshold=threshold, neighbours=neighbours,
        min_jump=min_jump,
    )
    return metrics


def measure_seams_and_sheet(
    source: str | Path,
    output: str | Path,
    seams: Sequence[int],
    *,
    on_cut: Sequence[bool] | None = None,
    overlaps: Sequence[int] | None = None,
    threshold: float = SEAM_THRESHOLD,
    neighbours: int = NEIGHBOUR_FRAMES,
    min_jump: float = MIN_VISIBLE_JUMP,
    sheet_png: str | Path | None = None,
    frames_each_side: int = 1,
    thumb_width: int = 160,
) -> tuple[list[SeamMetric], Path | None]:
    """``measure_seams``, and the contact sheet of ``write_seam_sheet`` drawn from the same decoded frames.

    Each video is read once around each seam (a seek and a few frames, at the measuring size);
    the sheet's thumbnails are scaled from those frames in numpy instead of being decoded again.

    Args:
        source: See ``measure_seams``.
        output: See ``measure_seams``.
        seams: See ``measure_seams``.
        on_cut: See ``measure_seams``.
        overlaps: See ``measure_seams``.
        threshold: See ``measure_seams``.
        neighbours: See ``measure_seams``.
        min_jump: See ``measure_seams``.
        sheet_png: Where the contact sheet goes; ``None``: no sheet.
        frames_each_side: See ``write_seam_sheet``.
        thumb_width: See ``write_seam_sheet``.

    Returns:
        The metrics, and ``sheet_png`` (``None`` when not asked for or when there are no seams).

    Raises:
        InvalidInputError: see ``measure_seams``.
    """
    on_cut = list(on_cut) if on_cut is not None else [False] * len(seams)
    overlaps = list(overlaps) if overlaps is not None else [0] * len(seams)
    if len(on_cut) != len(seams) or len(overlaps) != len(seams):
        raise InvalidInputError("measure_seams: on_cut and overlaps must have one value per seam")
    if not seams:
        return [], None
    if sheet_png is not None and (frames_each_side < 1 or thumb_width < 2):
        raise InvalidInputError("write_seam_sheet: frames_each_side must be >= 1 and thumb_width >= 2")
    source_info = probe_video(source)
    output_info = probe_video(output)
    total = min(source_info.frames, output_info.frames)
    size = measure_size(output_info)
    thumb = thumbnail_size(output_info, thumb_width)
    metrics = []
    thumbnails: list[tuple[int, list[np.ndarray]]] = []
    for seam, cut, overlap in zip(seams, on_cut, overlaps):
        if not 0 < seam < total:
            raise InvalidInputError(f"measure_seams: seam frame {seam} is not inside 1..{total - 1}")
        blend_start = max(1, seam - overlap)
        first, end = seam_window(seam, overlap, neighbours)
        count = min(total, end) - first
        shown_first = max(0, seam - frames_each_side)
        if sheet_png is not None:
            # The sheet's frames are read in the same pass: widen the window to hold them.
            read_first = min(first, shown_first)
            read_count = max(first + count, min(total, seam + frames_each_side)) - read_first
        else:
            read_first, read_count = first, count
        means, rows = {}, []
        # Both videos' frames in one ffmpeg run (one per seam: a run reading every seam's cost more).
        videos = (("source", source, source_info), ("output", output, output_info))
        windows = read_frame_windows(
            [FrameWindow(path, read_first, read_count, info.frame_rate, info.start_offset_s) for _, path, info in videos],
            size=size,
        )
        for (name, _, _), frames in zip(videos, windows):
            means[name] = plane_means(frames[first - read_first : first - read_first + count], size)
            if sheet_png is not None:
                shown = frames[shown_first - read_first : seam + frames_each_side - read_first]
                rows.append(yuv420p_to_rgb_thumbnails(shown, size, thumb))
        thumbnails.append((seam - shown_first, rows))
        # jumps[j] is the jump into frame first + j + 1; the seam's are those into blend_start..seam.
        measured = min(len(means["output"]), len(means["source"]))
        output_jumps = np.abs(np.diff(means["output"][:measured], axis=0))
        source_jumps = np.abs(np.diff(means["source"][:measured], axis=0))
        at = np.arange(blend_start - first - 1, min(seam - first, len(output_jumps)))
        around = np.delete(output_jumps, at, axis=0)
        neighbour_jump = np.median(around, axis=0) if len(around) else np.zeros(3)
        allowed = np.maximum(np.maximum(source_jumps[at], neighbour_jump), min_jump)
        # Over a blend, the mean jump against the mean allowed one (one frame: the plain ratio).
        output_jump, source_jump = output_jumps[at].mean(axis=0), source_jumps[at].mean(axis=0)
        ratio = float((output_jump / allowed.mean(axis=0)).max())
        metrics.append(
            SeamMetric(
                frame=seam,
                on_cut=bool(cut),
                output_jump=_vector(output_jump),
                source_jump=_vector(source_jump),
                neighbour_jump=_vector(neighbour_jump),
                ratio=ratio,
                threshold=threshold,
                passed=ratio <= threshold,
            )
        )
    if sheet_png is None:
        return metrics, None
    return metrics, _draw_sheet(thumbnails, Path(sheet_png), frames_each_side=frames_each_side, thumb_size=thumb)


def _area_matrix(source: int, target: int) -> np.ndarray:
    """(target, source) weights of an area-average resize of one axis (each row sums to 1)."""
    edges = np.arange(target + 1) * (source / target)
    low, high = edges[:-1, None], edges[1:, None]
    pixels = np.arange(source)[None, :]
    covered = np.clip(np.minimum(high, pixels + 1) - np.maximum(low, pixels), 0, None)
    return covered / covered.sum(axis=1, keepdims=True)


def yuv420p_to_rgb_thumbnails(frames: np.ndarray, size: tuple[int, int], thumb: tuple[int, int]) -> np.ndarray:
    """Raw yuv420p frames of ``size`` as RGB thumbnails of ``thumb`` (BT.601, limited range, area average).

    Returns:
        ``uint8`` array (frames, thumb height, thumb width, 3).
    """
    width, height = size
    luma, u, v = (plane.astype(np.float32) for plane in yuv420p_planes(frames, size))
    luma = luma.reshape(-1, height, width) - 16.0
    cw, ch = width // 2, height // 2
    u = u.reshape(-1, ch, cw).repeat(2, axis=1).repeat(2, axis=2)[:, :height, :width] - 128.0
    v = v.reshape(-1, ch, cw).repeat(2, axis=1).repeat(2, axis=2)[:, :height, :width] - 128.0
    rgb = np.stack(
        [1.164 * luma + 1.596 * v, 1.164 * luma - 0.392 * u - 0.813 * v, 1.164 * luma + 2.017 * u], axis=-1
    )
    rows, columns = _area_matrix(height, thumb[1]).astype(np.float32), _area_matrix(width, thumb[0]).astype(np.float32)
    scaled = np.einsum("th,fhwc,sw->ftsc", rows, rgb, columns, optimize=True)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def contact_sheet_size(seams: int, *, frames_each_side: int = 1, thumb_size: tuple[int, int]) -> tuple[int, int]:
    """``(width, height)`` in pixels of a contact sheet of ``seams`` seams with thumbnails of ``thumb_size``."""
    thumb_width, thumb_height = thumb_size
    per_seam = 2 * frames_each_side * thumb_width + (2 * frames_each_side - 1) * FRAME_GAP
    return seams * per_seam + (seams - 1) * SEAM_GAP, 2 * thumb_height + ROW_GAP


def thumbnail_size(info: VideoInfo, thumb_width: int) -> tuple[int, int]:
    """Even thumbnail size ``thumb_width`` wide with the video's display aspect ratio."""
    numerator, _, denominator = info.sample_aspect_ratio.partition(":")
    sar = Fraction(int(numerator), int(denominator or 1)) if numerator.isdigit() and int(numerator) else Fraction(1)
    display_width = info.display_width * (float(sar) if info.rotation not in (90, 270) else 1.0)
    display_height = info.display_height * (float(sar) if info.rotation in (90, 270) else 1.0)
    height = thumb_width * display_height / display_width
    width = thumb_width - thumb_width % 2
    return max(2, width), max(2, int(round(height / 2)) * 2)


def write_seam_sheet(
    source: str | Path,
    output: str | Path,
    seams: Sequence[int],
    destination_png: str | Path,
    *,
    frames_each_side: int = 1,
    thumb_width: int = 160,
) -> Path | None:
    """Writes a PNG of the frames around each seam: source row above, output row below.

    Each seam gets one group of columns, frames ``k - frames_each_side`` to
    ``k + frames_each_side - 1``; the gap just before frame ``k`` is red. The size is
    ``contact_sheet_size(len(seams), frames_each_side=..., thumb_size=thumbnail_size(output, thumb_width))``.
    The picture is assembled in numpy and encoded by ffmpeg, written atomically.

    Args:
        source: The source video.
        output: The joined output (same frames at the same rate).
        seams: First frame of each segment after the first.
        destination_png: Where the PNG goes.
        frames_each_side: Frames shown on each side of a seam.
        thumb_width: Width of one thumbnail in pixels.

    Returns:
        ``destination_png``, or ``None`` when there are no seams (nothing is written then).
    """
    if not seams:
        return None
    if frames_each_side < 1 or thumb_width < 2:
        raise InvalidInputError("write_seam_sheet: frames_each_side must be >= 1 and thumb_width >= 2")
    destination = Path(destination_png)
    source_info = probe_video(source)
    output_info = probe_video(output)
    thumb_width, thumb_height = thumbnail_size(output_info, thumb_width)
    thumbnails: list[tuple[int, list[np.ndarray]]] = []
    shown = 2 * frames_each_side
    for seam in seams:
        first = max(0, seam - frames_each_side)
        rows = [
            read_frames(
                path, first, shown, frame_rate=info.frame_rate, size=(thumb_width, thumb_height), pix_fmt="rgb24",
                start_offset_s=info.start_offset_s,
            ).reshape(-1, thumb_height, thumb_width, 3)
            for path, info in ((source, source_info), (output, output_info))
        ]
        thumbnails.append((seam - first, rows))
    return _draw_sheet(thumbnails, destination, frames_each_side=frames_each_side, thumb_size=(thumb_width, thumb_height))


def _draw_sheet(
    thumbnails: list[tuple[int, list[np.ndarray]]],
    destination: Path,
    *,
    frames_each_side: int,
    thumb_size: tuple[int, int],
) -> Path:
    """Lays out the thumbnails of each seam (frames before it, source and output rows) and writes the PNG.

    Args:
        thumbnails: Per seam, how many of its frames come before the seam, and the source's and
            the output's RGB thumbnails (frames, height, width, 3) from the first frame shown.
        destination: The PNG (written atomically).
        frames_each_side: Frames shown on each side of a seam.
        thumb_size: Width and height of a thumbnail.
    """
    thumb_width, thumb_height = thumb_size
    width, height = contact_sheet_size(len(thumbnails), frames_each_side=frames_each_side, thumb_size=thumb_size)
    sheet = np.empty((height, width, 3), dtype=np.uint8)
    sheet[:] = BACKGROUND
    per_frame = thumb_width + FRAME_GAP
    per_seam = 2 * frames_each_side * thumb_width + (2 * frames_each_side - 1) * FRAME_GAP + SEAM_GAP
    shown = 2 * frames_each_side
    for column, (before, rows) in enumerate(thumbnails):
        left = column * per_seam
        mark = left + frames_each_side * per_frame - FRAME_GAP
        sheet[:, mark : mark + FRAME_GAP] = SEAM_MARK
        for row, frames in enumerate(rows):
            top = row * (thumb_height + ROW_GAP)
            # A seam near the start shows fewer frames before it; keep frame k under the mark.
            offset = frames_each_side - before
            for index, frame in enumerate(frames[: shown - offset]):
                x = left + (index + offset) * per_frame
                sheet[top : top + thumb_height, x : x + thumb_width] = frame
    write_with_ffmpeg(
        ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-i", "-",
         "-frames:v", "1", "-update", "1", "-f", "image2", "-c:v", "png"],
        destination,
        input_bytes=sheet.tobytes(),
    )  # fmt: skip
    return destination
