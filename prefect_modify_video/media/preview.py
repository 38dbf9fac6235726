"""The preview's pictures: tiles of several clips side by side, as one still row and as a moving grid.

Tiles keep the order given (left to right, then row by row). They carry their label when ffmpeg has
``drawtext`` and a font is found (``label_font``); the order holds either way.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from prefect_modify_video.media.ffmpeg import ffmpeg_has_filter, font_file_matching, write_with_ffmpeg
from prefect_modify_video.media.plan import Segment
from prefect_modify_video.media.probe import VideoInfo

MAX_TILE_WIDTH = 480
# Where a font for the tile labels may be; PREFECT_MODIFY_VIDEO_FONT overrides.
FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
)
# Characters that would need escaping inside a filter graph; a font path holding one is not used.
_FILTER_SPECIALS = set("\\':,;[]")


def label_font() -> str | None:
    """A font file for tile labels when ffmpeg has ``drawtext``, else ``None`` (tiles unlabelled)."""
    if not ffmpeg_has_filter("drawtext"):
        return None
    candidates = [os.environ.get("PREFECT_MODIFY_VIDEO_FONT", ""), font_file_matching("sans:bold") or ""]
    candidates += FONT_CANDIDATES
    return next((c for c in candidates if c and Path(c).is_file() and not _FILTER_SPECIALS & set(c)), None)


def tile_size(info: VideoInfo) -> tuple[int, int]:
    """Size of one tile: the source's output size, at most ``MAX_TILE_WIDTH`` wide, even."""
    width, height = info.output_width, info.output_height
    if width > MAX_TILE_WIDTH:
        height, width = round(height * MAX_TILE_WIDTH / width), MAX_TILE_WIDTH
    return width - width % 2, max(2, height - height % 2)


def _tile_chain(index: int, label: str, width: int, height: int, font: str | None, extra: str = "") -> str:
    chain = f"[{index}:v]{extra}scale={width}:{height}:flags=bicubic,setsar=1"
    if font:
        size = max(10, height // 12)
        chain += (
            f",drawtext=fontfile='{font}':text='{label}'"
            f":x={size // 2}:y={size // 2}:fontsize={size}:fontcolor=white:box=1:boxcolor=black@0.6:boxborderw={size // 4}"
        )
    return chain + f"[t{index}]"


def write_tile_strip(clips: list[Path], labels: list[str], frame: int, tile: tuple[int, int],
                     destination: Path, font: str | None) -> Path:
    """Writes one image of one row of tiles: frame ``frame`` of each clip, left to right in the order given.

    Args:
        clips: Clips of the same frames (the source's excerpt and each mode's answer, conformed).
        labels: One label per clip.
        frame: Which frame of each clip.
        tile: ``(width, height)`` of a tile (``tile_size``).
        destination: The image (PNG), written atomically.
        font: Font file for the labels (``label_font``); ``None`` leaves tiles unlabelled.

    Returns:
        ``destination``.
    """
    width, height = tile
    args: list[str] = []
    for clip in clips:
        args += ["-i", str(clip)]
    chains = [
        _tile_chain(i, label, width, height, font, extra=f"trim=start_frame={frame}:end_frame={frame + 1},")
        for i, label in enumerate(labels)
    ]
    graph = ";".join(chains) + ";" + "".join(f"[t{i}]" for i in range(len(clips))) + f"hstack=inputs={len(clips)}[out]"
    return write_with_ffmpeg([*args, "-filter_complex", graph, "-map", "[out]", "-frames:v", "1"], destination)


def grid_shape(tiles: int) -> tuple[int, int]:
    """Columns and rows of the grid video for ``tiles`` tiles (as square as can be, filled row by row)."""
    columns = math.ceil(math.sqrt(tiles))
    return columns, math.ceil(tiles / columns)


def write_grid_video(clips: list[Path], labels: list[str], info: VideoInfo, segment: Segment,
                     tile: tuple[int, int], destination: Path, font: str | None) -> Path:
    """Writes the clips as a grid video (row by row, in order) with the source's first audio stream for the excerpt.

    Args:
        clips: Clips of the excerpt's frames, conformed to the source's rate.
        labels: One label per clip.
        info: The source (rate, audio streams).
        segment: The excerpt: its frames and where its audio is.
        tile: ``(width, height)`` of a tile (``tile_size``).
        destination: The video (MP4), written atomically.
        font: Font file for the labels; ``None`` leaves tiles unlabelled.

    Returns:
        ``destination``.
    """
    width, height = tile
    columns, rows = grid_shape(len(clips))
    args: list[str] = []
    for clip in clips:
        args += ["-i", str(clip)]
    chains = [_tile_chain(i, label, width, height, font) for i, label in enumerate(labels)]
    blanks = columns * rows - len(clips)
    chains += [f"color=c=black:s={width}x{height}:r={info.frame_rate}[b{k}]" for k in range(blanks)]
    inputs = "".join(f"[t{i}]" for i in range(len(clips))) + "".join(f"[b{k}]" for k in range(blanks))
    layout = "|".join(f"{(k % columns) * width}_{(k // columns) * height}" for k in range(columns * rows))
    graph = ";".join(chains) + f";{inputs}xstack=inputs={columns * rows}:layout={layout}:shortest=1[out]"
    audio = bool(info.audio_streams)
    if audio:
        start = info.start_offset_s + segment.start_s
        args += ["-ss", f"{start:.6f}", "-t", f"{segment.duration_s:.6f}", "-i", info.path]
    args += ["-filter_complex", graph, "-map", "[out]"]
    if audio:
        args += ["-map", f"{len(clips)}:a:0", "-c:a", "aac", "-b:a", "128k"]
    args += [
        "-r", info.frame_rate, "-frames:v", str(segment.frames),
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p", "-movflags", "+faststart",
    ]
    return write_with_ffmpeg(args, destination)
