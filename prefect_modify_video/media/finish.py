"""Finishing each segment's clip for the join: its colour transfer, its overlap, the next one blended in.

A segment that starts inside a shot was sent with ``overlap`` frames before its own (see
``Segment.overlap_frames``): the service restyled those source frames twice, once at the end of
the previous segment and once at the start of this one. ``finish_clip`` writes the frames a
segment owns in the output: each frame through the segment's one colour transfer (at that
frame's weight), the overlap frames dropped, and its last frames cross-blended into the next
segment's overlap frames, so an in-shot seam becomes a short dissolve instead of a jump.

The blend keeps contrast. A plain linear dissolve of two pictures that differ in detail has a
smaller spread than either (the variance of a mix of two partly independent signals drops,
most at the middle), so it greys out; ``blend_keeping_contrast`` rescales each plane of the mix
about its mean so its standard deviation is the interpolation of the two pictures' own. Its
mean is the interpolation of their means either way.

Frames go through numpy as raw yuv420p and are encoded with the conform step's exact settings,
so finished and conformed clips join by stream copy.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np

from prefect_modify_video.errors import FfmpegError, InvalidInputError
from prefect_modify_video.media.colour import IDENTITY, ColourTransfer
from prefect_modify_video.media.conform import CONFORM_ENCODE, track_timescale
from prefect_modify_video.media.ffmpeg import (
    FFPROBE,
    encode_raw_frames,
    ffmpeg_command,
    iter_raw_frames,
    run_ffmpeg,
    write_with_ffmpeg,
)
from prefect_modify_video.media.files import atomic_write
from prefect_modify_video.media.probe import probe_video


def blend_weights(frames: int) -> np.ndarray:
    """Weight of the next segment on each of ``frames`` blended frames: 1/(n+1) rising to n/(n+1)."""
    return np.arange(1, frames + 1, dtype=np.float64) / (frames + 1)


def blend_keeping_contrast(before: np.ndarray, after: np.ndarray, weight: float) -> np.ndarray:
    """Mixes two planes (``uint8``) with ``weight`` of ``after``, keeping the interpolated contrast.

    The linear mix ``(1 - weight) * before + weight * after`` is rescaled about its mean so that
    its standard deviation is ``(1 - weight) * std(before) + weight * std(after)``.

    Returns:
        The mixed plane, ``uint8``, the shape of the inputs.
    """
    first = before.astype(np.float32)
    second = after.astype(np.float32)
    mix = (1 - weight) * first + weight * second
    mean = float(mix.mean())
    spread = float(mix.std())
    wanted = (1 - weight) * float(first.std()) + weight * float(second.std())
    if spread > 1e-3:
        mix = mean + (mix - mean) * (wanted / spread)
    return np.clip(np.rint(mix), 0, 255).astype(np.uint8)


class _Layout:
    """Where the Y, U and V planes lie in one raw yuv420p frame."""

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self.luma = width * height
        self.chroma = ((width + 1) // 2) * ((height + 1) // 2)
        self.frame_bytes = self.luma + 2 * self.chroma

    def planes(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        luma, chroma = self.luma, self.chroma
        return frame[:luma], frame[luma : luma + chroma], frame[luma + chroma :]


# Every pair of bytes, in the machine's byte order: a byte table applied to it gives the table for pairs.
_BYTE_PAIRS = np.arange(1 << 16, dtype=np.uint16).view(np.uint8)


@lru_cache(maxsize=4)
def _lookup_tables(transfer: ColourTransfer, weight: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each plane's table for ``transfer`` at ``weight``, for single bytes and for pairs of bytes.

    The last few are kept (a segment's frames away from its seams share one weight), a few hundred KB each.
    """
    return [(table, table[_BYTE_PAIRS].view(np.uint16)) for table in transfer.lookup_tables(weight)]


def _transferred(frame: np.ndarray, layout: _Layout, transfer: ColourTransfer, weight: float) -> np.ndarray:
    if transfer == IDENTITY or weight == 0:
        return frame
    result = np.empty_like(frame)
    tables = _lookup_tables(transfer, weight)
    for (table, pairs), plane, out in zip(tables, layout.planes(frame), layout.planes(result)):
        # Two bytes a lookup where the plane allows: half the time of one byte a lookup.
        if len(plane) % 2:
            np.take(table, plane, out=out)
        else:
            np.take(pairs, plane.view(np.uint16), out=out.view(np.uint16))
    return result


def _decode_args(clip: Path, frames: int | None = None) -> list[str]:
    """ffmpeg arguments writing a clip's frames (or its first ``frames``) to stdout as raw yuv420p."""
    args = ["-i", str(clip), "-map", "0:v:0", "-an", "-sn", "-dn", "-fps_mode", "passthrough"]
    if frames is not None:
        args += ["-frames:v", str(frames)]
    return [*args, "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"]


def _weights(weights: np.ndarray | None, frames: int) -> np.ndarray:
    if weights is None:
        return np.ones(frames)
    weights = np.asarray(weights, dtype=np.float64)
    if len(weights) < frames:
        weights = np.concatenate([weights, np.full(frames - len(weights), weights[-1] if len(weights) else 1.0)])
    return weights


def read_head(
    clip: str | Path, frames: int, transfer: ColourTransfer = IDENTITY, weights: np.ndarray | None = None
) -> np.ndarray:
    """The first ``frames`` frames of a clip as raw yuv420p, through ``transfer`` at per-frame ``weights``.

    Returns:
        ``uint8`` array of shape (frames, frame bytes), for ``finish_clip(blend_tail=...)``.

    Raises:
        InvalidInputError: the clip has fewer frames.
    """
    clip = Path(clip)
    info = probe_video(clip)
    layout = _Layout(info.display_width, info.display_height)
    raw = np.frombuffer(run_ffmpeg(_decode_args(clip, frames)), dtype=np.uint8)
    if len(raw) < frames * layout.frame_bytes:
        raise InvalidInputError(f"{clip}: has fewer than the {frames} frames to blend")
    head = raw[: frames * layout.frame_bytes].reshape(frames, layout.frame_bytes)
    weights = _weights(weights, frames)
    return np.stack([_transferred(frame, layout, transfer, float(weights[k])) for k, frame in enumerate(head)])


def _colour_tags(path: Path) -> list[str]:
    """Output options that keep a clip's colour description (range, matrix, transfer, primaries)."""
    output = run_ffmpeg(
        [
            "-v", "error", "-select_streams", "v:0",
            "-show_entries", "stream=color_range,color_space,color_transfer,color_primaries",
            "-of", "default=noprint_wrappers=1", str(path),
        ],
        program=FFPROBE,
    ).decode(errors="replace")
    options = {"color_range": "-color_range", "color_space": "-colorspace",
               "color_transfer": "-color_trc", "color_primaries": "-color_primaries"}
    tags: list[str] = []
    for line in output.splitlines():
        key, _, value = line.partition("=")
        if key in options and value and value not in ("unknown", "reserved"):
            tags += [options[key], value]
    return tags


def finish_clip(
    clip: str | Path,
    destination: str | Path,
    *,
    transfer: ColourTransfer = IDENTITY,
    weights: np.ndarray | None = None,
    drop_frames: int = 0,
    blend_tail: np.ndarray | None = None,
    frame_rate: str | Fraction | None = None,
    encode: dict | None = None,
) -> Path:
    """Writes the frames a segment owns in the output, from its conformed clip.

    Each frame goes through ``transfer`` at its weight, as lookup tables; the first
    ``drop_frames`` (the overlap, blended into the previous segment) are dropped; the last
    ``len(blend_tail)`` frames are mixed into ``blend_tail`` (the next segment's overlap frames,
    ``read_head``) by ``blend_keeping_contrast`` at ``blend_weights``. The clip is re-encoded
    with ``CONFORM_ENCODE``, the same frame rate, MP4 timescale, sample aspect ratio and colour
    description, so it joins with conformed clips by stream copy. Written atomically. A clip with
    nothing to change (no transfer, nothing dropped or blended) is only encoded again: that is how a
    clip conformed to ``conform.INTERMEDIATE_ENCODE`` gets its one final encode.

    Args:
        clip: A conformed clip.
        destination: The finished clip (MP4).
        transfer: The segment's one colour transfer.
        weights: Weight of the transfer on each frame of ``clip`` (default 1 everywhere).
        drop_frames: Frames dropped from the start.
        blend_tail: Frames (raw yuv420p, the clip's size) the clip's last frames blend into.
        frame_rate: The output rate; defaults to the clip's.
        encode: Codec settings; defaults to ``CONFORM_ENCODE`` (change only together with conform).

    Returns:
        ``destination``.

    Raises:
        InvalidInputError: fewer frames than dropped and blended, or a tail of another size.
        FfmpegError: decoding or encoding failed.
    """
    clip, destination = Path(clip), Path(destination)
    info = probe_video(clip)
    layout = _Layout(info.display_width, info.display_height)
    tail = np.zeros((0, layout.frame_bytes), dtype=np.uint8) if blend_tail is None else blend_tail
    if tail.ndim != 2 or tail.shape[1] != layout.frame_bytes:
        raise InvalidInputError(f"{clip}: the frames to blend in are not {layout.width}x{layout.height} yuv420p")
    kept = info.frames - drop_frames
    if drop_frames < 0 or kept < len(tail) or kept < 1:
        raise InvalidInputError(
            f"{clip}: {info.frames} frames cannot lose {drop_frames} and blend {len(tail)} into the next clip"
        )
    weights = _weights(weights, info.frames)
    mix = blend_weights(len(tail))
    blend_from = info.frames - len(tail)
    rate = Fraction(frame_rate if frame_rate is not None else info.frame_rate)
    rate_text = f"{rate.numerator}/{rate.denominator}"
    settings = {**CONFORM_ENCODE, **(encode or {})}
    output_args = [
        "-vf", f"setsar={info.sample_aspect_ratio.replace(':', '/')}", "-an",
        *[item for key, value in settings.items() for item in (f"-{key}", str(value))],
        *_colour_tags(clip),
        "-r", rate_text, "-video_track_timescale", str(track_timescale(rate)),
        "-frames:v", str(kept),
    ]  # fmt: skip
    if transfer == IDENTITY and drop_frames == 0 and not len(tail):
        # Nothing to change in the frames: ffmpeg encodes them straight from the clip, no pipe through numpy.
        return write_with_ffmpeg(["-i", str(clip), "-map", "0:v:0", "-fps_mode", "passthrough", *output_args],
                                 destination)
    encode_args = [
        "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{layout.width}x{layout.height}",
        "-framerate", rate_text, "-i", "-", *output_args,
    ]  # fmt: skip
    decoded = 0

    def owned_frames() -> Iterator[bytes]:
        """The clip's frames the output keeps, transferred and blended, counting those decoded."""
        nonlocal decoded
        for batch in iter_raw_frames(_decode_args(clip), layout.frame_bytes, batch_frames=1):
            index = decoded
            decoded += 1
            if index < drop_frames or index >= info.frames:
                continue
            frame = _transferred(batch[0], layout, transfer, float(weights[index]))
            if index >= blend_from:
                k = index - blend_from
                frame = np.concatenate(
                    [
                        blend_keeping_contrast(own, theirs, float(mix[k]))
                        for own, theirs in zip(layout.planes(frame), layout.planes(tail[k]))
                    ]
                )
            yield frame.tobytes()

    with atomic_write(destination) as partial:
        encode_raw_frames([*encode_args, "-y", str(partial)], owned_frames())
        if decoded < info.frames:
            raise FfmpegError(
                ffmpeg_command(_decode_args(clip)), 0, f"{clip}: {decoded} frames decoded, {info.frames} expected"
            )
    return destination
