"""Joining conformed clips with the source's audio, and the rules an output path must follow to carry it.

The join copies every stream (video from the clips, audio from the source) without re-encoding,
except into WebM, which holds only VP9/AV1 video and Opus/Vorbis audio: the video is then encoded
to VP9 and an audio stream the container cannot hold is encoded to Opus (Opus and Vorbis are
copied). Its output is written atomically (``media.files.atomic_write``).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from prefect_modify_video.errors import InvalidInputError
from prefect_modify_video.media.ffmpeg import write_with_ffmpeg
from prefect_modify_video.media.probe import VideoInfo

# Audio codecs the MP4 muxer can carry as they are.
MP4_AUDIO_CODECS = {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac", "mp2", "mp1"}
MP4_EXTENSIONS = {".mp4", ".m4v"}
WEBM_EXTENSIONS = {".webm"}
OUTPUT_EXTENSIONS = MP4_EXTENSIONS | WEBM_EXTENSIONS | {".mov", ".mkv"}
# Audio codecs WebM carries as they are; any other is encoded to Opus.
WEBM_AUDIO_CODECS = {"opus", "vorbis"}
# VP9 for a WebM output: constant quality, row threads, a speed fit for whole films.
WEBM_VIDEO_CODEC = ["-c:v", "libvpx-vp9", "-crf", "31", "-b:v", "0", "-row-mt", "1", "-deadline", "good", "-cpu-used", "4"]
OUTPUT_MARK = "restyled by prefect-modify-video"
"""The comment tag every output carries (``VideoInfo.comment``): a run never takes an output as its source."""


def check_not_an_output(info: VideoInfo) -> None:
    """Refuses a source that is an output of this plugin (its container's comment carries ``OUTPUT_MARK``).

    An output restyled again would be paid for again, and a trigger on a folder that outputs land
    in would restyle its own outputs without end.

    Raises:
        InvalidInputError: naming the source and what to do.
    """
    if OUTPUT_MARK in info.comment:
        raise InvalidInputError(
            f"{info.path}: is an output of prefect-modify-video (its comment tag says '{OUTPUT_MARK}'); a run never "
            "restyles an output again: give the original video (to restyle it anyway, copy it with "
            "ffmpeg -i in -map_metadata -1 -c copy out)"
        )


# Characters a line of ffmpeg's concat list cannot hold, however quoted.
_CONCAT_UNSAFE = re.compile(r"[\n\r\x00]")


def check_output_path(info: VideoInfo, output: Path) -> None:
    """Refuses an output path that would overwrite the source or cannot hold its audio.

    Raises:
        InvalidInputError: naming the path and what to do.
    """
    source = Path(info.path).resolve()
    if output.resolve() == source:
        raise InvalidInputError(f"{output}: the output path is the source itself; choose another output path")
    if output.exists() and output.is_dir():
        raise InvalidInputError(f"{output}: the output path is a directory; give a file name")
    if output.suffix.lower() not in OUTPUT_EXTENSIONS:
        raise InvalidInputError(
            f"{output}: unsupported output extension {output.suffix!r}; use one of {sorted(OUTPUT_EXTENSIONS)}"
        )
    if output.suffix.lower() in MP4_EXTENSIONS:
        unfit = sorted({a.codec for a in info.audio_streams if a.codec not in MP4_AUDIO_CODECS})
        if unfit:
            raise InvalidInputError(
                f"{output}: MP4 cannot carry the source's {', '.join(unfit)} audio unchanged; "
                "use a .mov or .mkv output path"
            )
    check_writable_folder(output)


def check_writable_folder(output: Path) -> None:
    """Refuses an output whose folder cannot be written (read-only, not a folder), before any work.

    The folder need not exist yet: its nearest existing ancestor must take a new file. Trying
    one is the only test that holds for every case (permissions, read-only mounts, root).

    Raises:
        InvalidInputError: naming the output, the folder and what to do.
    """
    existing = Path(os.path.abspath(output)).parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InvalidInputError(f"{output}: {existing} is not a folder; choose an output path in a folder")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".modify-video-write-check-"):
            pass
    except OSError as error:
        raise InvalidInputError(
            f"{output}: cannot write in {existing} ({error.strerror or type(error).__name__}); "
            "choose an output path in a writable folder"
        ) from error


def default_output_path(source: Path) -> Path:
    """``<stem>.modified<ext>`` beside the source, in a container that can carry its audio."""
    suffix = source.suffix.lower() if source.suffix.lower() in OUTPUT_EXTENSIONS else ".mkv"
    return source.with_name(f"{source.stem}.modified{suffix}")


def _concat_safe(clips: list[Path], folder: Path) -> list[Path]:
    """The clips under names ffmpeg's concat list can hold: as they are, or linked (else copied) into ``folder``.

    A file or folder name with a line break (allowed by the file system) cannot be written on
    a concat list's line; the clips are then given plain names in a folder of the system's
    temporary space.
    """
    if not any(_CONCAT_UNSAFE.search(str(clip.resolve())) for clip in clips):
        return clips
    if _CONCAT_UNSAFE.search(str(folder.resolve())):
        raise InvalidInputError(f"{folder!r}: the temporary folder's name has a line break; set TMPDIR to another")
    safe = []
    for index, clip in enumerate(clips):
        target = folder / f"{index:05d}{clip.suffix}"
        try:
            os.link(clip, target)
        except OSError:
            shutil.copyfile(clip, target)
        safe.append(target)
    return safe


def _codecs(info: VideoInfo, destination: Path) -> list[str]:
    """Stream copy, or for WebM: VP9 video, and each audio stream copied if WebM holds its codec, else Opus."""
    if destination.suffix.lower() not in WEBM_EXTENSIONS:
        return ["-c", "copy"]
    audio = []
    for n, stream in enumerate(info.audio_streams):
        audio += [f"-c:a:{n}", "copy"] if stream.codec in WEBM_AUDIO_CODECS else [f"-c:a:{n}", "libopus"]
    return [*WEBM_VIDEO_CODEC, *audio]


def _concat_line(path: Path) -> str:
    escaped = str(path.resolve()).replace("\\", "\\\\").replace("'", "'\\''")
    return f"file '{escaped}'\n"


def join_segments(clips: list[Path], info: VideoInfo, destination: Path) -> Path:
    """Joins conformed clips by stream copy and adds every audio stream of the source, copied once.

    The video starts as far after the audio as the source's does (``info.start_offset_s``).

    Args:
        clips: Conformed clips in order.
        info: The source; its audio streams are copied as they are.
        destination: The output file; written atomically.

    Returns:
        ``destination``.
    """
    if not clips:
        raise InvalidInputError("join: no clips to join")
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.stem}.", suffix=".concat.txt")
    os.close(handle)
    concat_list = Path(name)
    safe_folder = Path(tempfile.mkdtemp(prefix="modify-video-concat-"))
    offset = ["-itsoffset", f"{info.start_offset_s:.6f}"] if info.start_offset_s > 0 else []
    args = [
        *offset, "-f", "concat", "-safe", "0", "-i", str(concat_list),
        "-i", info.path,
        "-map", "0:v:0", "-map", "1:a?", *_codecs(info, destination),
        "-map_metadata", "-1", "-map_chapters", "-1", "-metadata", f"comment={OUTPUT_MARK}",
    ]
    if destination.suffix.lower() in MP4_EXTENSIONS | {".mov"}:
        args += ["-movflags", "+faststart"]
    try:
        concat_list.write_text("".join(_concat_line(c) for c in _concat_safe([Path(c) for c in clips], safe_folder)))
        return write_with_ffmpeg(args, destination)
    finally:
        concat_list.unlink(missing_ok=True)
        shutil.rmtree(safe_folder, ignore_errors=True)
