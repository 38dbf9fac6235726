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

One ffmpeg command conforms a segment's answer (a pending clip, ``media.pending``), applies its
colour transfer and drops its overlap while it encodes it with the conform step's exact settings,
so finished and conformed clips join by stream copy; only the frames to blend go through numpy.
"""

from __future__ import annotations

import os
import tempfile
from fractions import Fraction
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
from prefect_modify_video.media.pending import conformed_reading
from prefect_modify_video.media.probe import probe_video
from prefect_modify_video.media.seams import seam_keyframe_options


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


def _transferred(frame: np.ndarray, layout: _Layout, transfer: ColourTransfer, weight: float) -> np.ndarray:
    """One raw frame through ``transfer`` at ``weight`` (the few frames of a blend head; the rest are done in ffmpeg)."""
    if transfer == IDENTITY or weight == 0:
        return frame
    result = np.empty_like(frame)
    for table, plane, out in zip(transfer.lookup_tables(weight), layout.planes(frame), layout.planes(result)):
        np.take(table, plane, out=out)
    return result


def _decode_args(clip: Path, frames: int | None = None, filters: list[str] | None = None) -> list[str]:
    """ffmpeg arguments writing a clip's frames (or its first ``frames``) to stdout as raw yuv420p, through ``filters``."""
    args = ["-i", str(clip), "-map", "0:v:0", "-an", "-sn", "-dn", "-fps_mode", "passthrough"]
    if filters:
        args += ["-vf", ",".join(filters)]
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
    """The first ``frames`` frames of a conformed clip (pending or not) as raw yuv420p, through ``transfer`` at ``weights``.

    Returns:
        ``uint8`` array of shape (frames, frame bytes), for ``finish_clip(blend_tail=...)``.

    Raises:
        InvalidInputError: the clip has fewer frames.
    """
    clip = Path(clip)
    reading = conformed_reading(clip)
    layout = _Layout(reading.width, reading.height)
    raw = np.frombuffer(run_ffmpeg(_decode_args(clip, frames, reading.filters)), dtype=np.uint8)
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


def _weight_commands(transfer: ColourTransfer, weights: np.ndarray, rate: Fraction, name: str) -> str:
    """``sendcmd`` lines changing the ``lutyuv`` named ``name`` to each frame's weight (frame k at k / rate)."""
    lines = []
    for index in range(1, len(weights)):
        if weights[index] != weights[index - 1]:
            at = (index - 0.5) / rate
            changes = ", ".join(
                f"lutyuv@{name} {plane} {expression}"
                for plane, expression in zip("yuv", transfer.lut_expressions(float(weights[index])))
            )
            lines.append(f"{float(at):.6f} {changes};")
    return "\n".join(lines) + "\n"


def _concat_clips(parts: list[Path], destination: Path, timescale: int) -> Path:
    """Joins clips encoded alike into ``destination`` by stream copy (the concat demuxer)."""
    handle, name = tempfile.mkstemp(prefix="modify-video-finish-", suffix=".concat.txt")
    os.close(handle)
    listing = Path(name)
    try:
        listing.write_text("".join(f"file '{_escaped(part)}'\n" for part in parts))
        return write_with_ffmpeg(
            ["-f", "concat", "-safe", "0", "-i", str(listing), "-map", "0:v:0", "-c", "copy",
             "-video_track_timescale", str(timescale)], destination,
        )  # fmt: skip
    finally:
        listing.unlink(missing_ok=True)


def _escaped(path: Path) -> str:
    return str(path.resolve()).replace("\\", "\\\\").replace("'", "'\\''")


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

    Each frame goes through ``transfer`` at its weight; the first ``drop_frames`` (the overlap,
    blended into the previous segment) are dropped; the last ``len(blend_tail)`` frames are mixed
    into ``blend_tail`` (the next segment's overlap frames, ``read_head``) by
    ``blend_keeping_contrast`` at ``blend_weights``. Encoded with ``CONFORM_ENCODE``, the same frame
    rate, MP4 timescale, sample aspect ratio and colour description as conformed clips, so they join
    by stream copy. Written atomically. ``finish_parts`` writes the same frames as two clips (no
    joining them here); this joins its parts by stream copy.

    Args:
        clip: A conformed clip: pending (``media.pending``: conformed in this encode), or encoded.
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
    destination = Path(destination)
    parts = finish_parts(
        clip, destination.with_name(f".{destination.stem}.body.mp4"), transfer=transfer, weights=weights,
        drop_frames=drop_frames, blend_tail=blend_tail, frame_rate=frame_rate, encode=encode,
    )
    if len(parts) == 1:
        os.replace(parts[0], destination)
        return destination
    rate = Fraction(frame_rate if frame_rate is not None else probe_video(parts[0]).frame_rate)
    try:
        return _concat_clips(parts, destination, track_timescale(rate))
    finally:
        for part in parts:
            part.unlink(missing_ok=True)


def finish_parts(
    clip: str | Path,
    destination: str | Path,
    *,
    transfer: ColourTransfer = IDENTITY,
    weights: np.ndarray | None = None,
    drop_frames: int = 0,
    blend_tail: np.ndarray | None = None,
    frame_rate: str | Fraction | None = None,
    encode: dict | None = None,
    seam_after: bool = True,
) -> list[Path]:
    """``finish_clip``'s frames as the clips to join: ``destination``, or its body and its blended tail.

    One ffmpeg command decodes the clip (through its conform filters when it is pending), applies
    the transfer (``lutyuv``, its weight changed frame by frame by ``sendcmd``), drops the overlap
    and encodes the body to ``destination``; the frames to blend leave the same command through a
    pipe, are mixed with ``blend_tail`` in numpy and encoded alike as ``<destination stem>.blend.mp4``.
    No frame goes through numpy but those, and no lossless intermediate is written. With ``seam_after``
    (a seam follows the clip's frames), the body gets a keyframe where the seam report starts reading
    (``seams.seam_keyframe_options``).

    Returns:
        The clips, in order (one, or the body and the blend; the body is left out when it would be empty).
    """
    clip, destination = Path(clip), Path(destination)
    reading = conformed_reading(clip)
    layout = _Layout(reading.width, reading.height)
    tail = np.zeros((0, layout.frame_bytes), dtype=np.uint8) if blend_tail is None else blend_tail
    if tail.ndim != 2 or tail.shape[1] != layout.frame_bytes:
        raise InvalidInputError(f"{clip}: the frames to blend in are not {layout.width}x{layout.height} yuv420p")
    frames = reading.frames
    kept = frames - drop_frames
    if drop_frames < 0 or kept < len(tail) or kept < 1:
        raise InvalidInputError(
            f"{clip}: {frames} frames cannot lose {drop_frames} and blend {len(tail)} into the next clip"
        )
    weights = _weights(weights, frames)[:frames]
    blend_from = frames - len(tail)
    rate = Fraction(frame_rate if frame_rate is not None else probe_video(clip).frame_rate)
    rate_text = f"{rate.numerator}/{rate.denominator}"
    settings = {**CONFORM_ENCODE, **(encode or {})}
    sar = (reading.pending.sample_aspect_ratio if reading.pending else probe_video(clip).sample_aspect_ratio)
    codec = [
        "-an", *[item for key, value in settings.items() for item in (f"-{key}", str(value))],
        *_colour_tags(clip), "-r", rate_text, "-video_track_timescale", str(track_timescale(rate)),
    ]  # fmt: skip
    # Frame k at k / rate whatever the clip's own timestamps, so that sendcmd finds it.
    chain = [*reading.filters, "format=yuv420p", f"settb={rate.denominator}/{rate.numerator}", "setpts=N"]
    commands = None
    if transfer != IDENTITY and np.any(weights != 0):
        if np.any(weights != weights[0]):
            handle, name = tempfile.mkstemp(prefix="modify-video-finish-", suffix=".cmd")
            os.close(handle)
            commands = Path(name)
            commands.write_text(_weight_commands(transfer, weights, rate, "anchor"))
            chain.append(f"sendcmd=f={commands}")
        chain.append(transfer.filter(float(weights[0]), name="anchor"))
    body_frames = blend_from - drop_frames
    blend = destination.with_name(f"{destination.stem}.blend.mp4")
    graph = ",".join(chain)
    if len(tail):
        graph += f",split=2[whole][tailing];[tailing]trim=start_frame={blend_from},setpts=PTS-STARTPTS[tail]"
        graph += f";[whole]trim=start_frame={drop_frames}:end_frame={blend_from}"
    else:
        graph += f",trim=start_frame={drop_frames}"
    graph += f",setpts=PTS-STARTPTS,setsar={sar.replace(':', '/')}[body]"
    args = ["-i", str(clip), "-filter_complex", graph]
    tail_out = ["-map", "[tail]", "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"]
    blend_encode = [
        "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{layout.width}x{layout.height}", "-framerate", rate_text,
        "-i", "-", "-vf", f"setsar={sar.replace(':', '/')}", *codec, "-frames:v", str(len(tail)),
    ]  # fmt: skip
    try:
        if not body_frames:  # every kept frame is blended: the body's frames go nowhere
            _write_blend([*args, "-map", "[body]", "-f", "null", "-", *tail_out], tail, layout, blend, blend_encode)
            return [blend]
        with atomic_write(destination) as partial:
            keyframe = (
                seam_keyframe_options(body_frames, overlap=len(tail), frames_to_seam=len(tail)) if seam_after else {}
            )
            body_out = ["-map", "[body]", *codec, *[item for key, value in keyframe.items() for item in (f"-{key}", value)],
                        "-frames:v", str(body_frames), "-y", str(partial)]  # fmt: skip
            if len(tail):
                _write_blend([*args, *body_out, *tail_out], tail, layout, blend, blend_encode)
            else:
                run_ffmpeg([*args, *body_out])
            if probe_video(partial).frames != body_frames:
                raise FfmpegError(ffmpeg_command(args), 0, f"{clip}: fewer than the {frames} frames expected")
        return [destination, blend] if len(tail) else [destination]
    finally:
        if commands is not None:
            commands.unlink(missing_ok=True)


def _write_blend(command: list[str], tail: np.ndarray, layout: _Layout, blend: Path, encode: list[str]) -> None:
    """Runs ``command`` (its last output: the frames to blend, raw), mixes them into ``tail`` and encodes them."""
    mixed = _Blended(iter_raw_frames(command, layout.frame_bytes, batch_frames=1), tail, layout)
    with atomic_write(blend) as partial:
        encode_raw_frames([*encode, "-y", str(partial)], mixed)
        if mixed.count != len(tail):
            raise FfmpegError(ffmpeg_command(command), 0, f"{mixed.count} frames to blend, {len(tail)} expected")


class _Blended:
    """The tail frames from a pipe, each mixed into the frame of ``tail`` it meets; counts them."""

    def __init__(self, batches: Iterator[np.ndarray], tail: np.ndarray, layout: _Layout):
        self.batches, self.tail, self.layout, self.count = batches, tail, layout, 0
        self.mix = blend_weights(len(tail))

    def __iter__(self) -> Iterator[bytes]:
        # Read to the pipe's end, so the command is seen through (its status checked) once the last frame is out.
        try:
            for batch in self.batches:
                for frame in batch:
                    k = self.count
                    self.count += 1
                    if k >= len(self.tail):
                        continue
                    yield np.concatenate([
                        blend_keeping_contrast(own, theirs, float(self.mix[k]))
                        for own, theirs in zip(self.layout.planes(frame), self.layout.planes(self.tail[k]))
                    ]).tobytes()  # fmt: skip
        finally:
            self.batches.close()
