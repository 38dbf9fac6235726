"""Prefect tasks over the media helpers: probe, plan, join; and the segment task's media steps: extract, conform.

Each is a thin wrapper; the work is in ``prefect_modify_video.media``. They are not cached by
Prefect: what is worth keeping (the paid results) is kept by the segment task's own store.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from prefect_modify_video.media.conform import CONFORM_ENCODE, INTERMEDIATE_ENCODE, conform_clip
from prefect_modify_video.media.extract import extract_segment
from prefect_modify_video.media.join import join_segments
from prefect_modify_video.media.plan import Segment, SegmentPlan, plan_video
from prefect_modify_video.media.probe import VideoInfo, probe_video
from prefect_modify_video.tasks.runners import media_work
from prefect_modify_video.tasks.work_files import local_info


@task(name="probe-video", description="Reads a video's streams with ffprobe.", cache_policy=NO_CACHE)
def probe_source_video(source: str) -> VideoInfo:
    """Probes the source video.

    Args:
        source: Path of a local video file.

    Returns:
        The source's ``VideoInfo``.

    Example:
        ```python
        from prefect import flow
        from prefect_modify_video.tasks import probe_source_video

        @flow
        def show():
            return probe_source_video("film.mp4").duration_s
        ```
    """
    info = probe_video(source)
    if info.header_mismatch:
        get_run_logger().warning("%s: %s; the packets' timing is used", source, info.header_mismatch)
    return info


@task(
    name="plan-segments",
    description="Splits the video into segments under the service's cap, with seams on shot cuts first.",
    cache_policy=NO_CACHE,
)
def plan_video_segments(info: VideoInfo, max_segment_seconds: float, overlap_frames: int = 0) -> SegmentPlan:
    """Plans the segments of a probed video: whole shots packed under the cap, long shots split at low motion.

    Args:
        info: The probed source.
        max_segment_seconds: The cap every segment stays strictly under, overlap included.
        overlap_frames: Frames the two segments of a seam inside a shot share (sent with both, blended).

    Returns:
        The segment plan.
    """
    return plan_video(info, max_segment_seconds, overlap_frames)


def extract_clip(
    info: VideoInfo, segment: Segment, work_dir: str, max_dimension: int | None, max_bytes: int | None = None,
) -> Path:
    """Extracts one segment to ``<work_dir>/extract/<name>.mp4``, within the service's size caps.

    A step of the segment task (``tasks.segment``), one per core at once (``media_work``). A
    complete clip already there (an earlier try of the segment) is kept, not extracted again.

    Args:
        info: The source (its path may be a shared ``block://`` reference: ``tasks.work_files``).
        segment: The segment.
        work_dir: The run's work folder.
        max_dimension: The service's cap on the longest side.
        max_bytes: The service's cap on an upload.

    Returns:
        The path of the extracted clip.
    """
    destination = Path(work_dir) / "extract" / f"{segment.name}.mp4"
    with media_work(segment.index):
        return extract_segment(local_info(info, work_dir), segment, destination, max_dimension=max_dimension,
                               max_bytes=max_bytes, reuse=True)


def conform_answer(
    answer: Path, info: VideoInfo, segment: Segment, work_dir: str, final: bool = False, pending: bool = False,
) -> Path:
    """Conforms one returned clip to ``<work_dir>/conform/<name>.mp4``.

    A step of the segment task (``tasks.segment``), one per core at once (``media_work``).

    Args:
        answer: The segment's answer (a local file).
        info: The source.
        segment: The segment.
        work_dir: The run's work folder.
        final: Encode it for the join (``CONFORM_ENCODE``): the finish step leaves it as it is
            (``tasks.seams.finished_in_conform``). Otherwise it is a lossless intermediate that the
            finish step gives its one final encode.
        pending: (Not with ``final``.) Write no frames: the answer stream-copied with the filters that conform it
            (``media.pending``), which the finish step runs in its one encode instead of decoding an intermediate.

    Returns:
        The path of the conformed clip.
    """
    destination = Path(work_dir) / "conform" / f"{segment.name}.mp4"
    encode = CONFORM_ENCODE if final else INTERMEDIATE_ENCODE
    with media_work(segment.index):
        return conform_clip(answer, info, segment, destination, encode=encode, pending=pending and not final)


@task(
    name="join-segments",
    description="Joins the conformed clips and copies the source's audio in, once.",
    cache_policy=NO_CACHE,
)
def join_video_segments(clips: list[Path], info: VideoInfo, output: str) -> Path:
    """Joins the conformed clips into the output, with the source's audio streams unchanged.

    Returns:
        The output path.
    """
    return join_segments([Path(c) for c in clips], info, Path(output))
