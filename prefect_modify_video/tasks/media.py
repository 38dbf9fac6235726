"""Prefect tasks over the media helpers: probe, plan, extract, conform, join.

Each is a thin wrapper; the work is in ``prefect_modify_video.media``. They are not cached by
Prefect: what is worth keeping (the paid results) is kept by the modify task's own store.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from prefect_modify_video.media.conform import CONFORM_ENCODE, INTERMEDIATE_ENCODE, conform_clip
from prefect_modify_video.media.extract import extract_segment, write_frame_image
from prefect_modify_video.media.join import join_segments
from prefect_modify_video.media.plan import Segment, SegmentPlan, plan_video
from prefect_modify_video.media.probe import VideoInfo, probe_video
from prefect_modify_video.tasks.modify import ModifiedSegment
from prefect_modify_video.tasks.runners import media_work
from prefect_modify_video.tasks.work_files import local_file, local_info, share_file


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


@task(
    name="extract-segment",
    description="Cuts one segment out of the source, frame-exact, as a clip the service accepts.",
    task_run_name="extract-{segment.index:05d}",
    cache_policy=NO_CACHE,
)
def extract_video_segment(
    info: VideoInfo, segment: Segment, work_dir: str, max_dimension: int | None, max_bytes: int | None = None,
    shared: str | None = None,
) -> Path | str:
    """Extracts one segment to ``<work_dir>/extract/<name>.mp4``, within the service's size caps.

    Args:
        shared: The run's shared work folder in the store's block (``tasks.work_files``), if the
            segment tasks run on other machines: the source is read from it and the clip put there.

    Returns:
        The path of the extracted clip (its ``block://`` reference when shared).
    """
    destination = Path(work_dir) / "extract" / f"{segment.name}.mp4"
    with media_work(segment.index):
        clip = extract_segment(local_info(info, work_dir), segment, destination, max_dimension=max_dimension,
                               max_bytes=max_bytes)
    return share_file(clip, shared, f"extract/{segment.name}.mp4", move=True)


@task(
    name="conform-segment",
    description="Brings a returned clip back to the source's frame rate, size and frame count.",
    task_run_name="conform-{segment.index:05d}",
    cache_policy=NO_CACHE,
)
def conform_modified_segment(
    modified: ModifiedSegment, info: VideoInfo, segment: Segment, work_dir: str, final: bool = False,
    shared: str | None = None, pending: bool = False,
) -> Path | str:
    """Conforms one returned clip to ``<work_dir>/conform/<name>.mp4``.

    Args:
        modified: The segment's answer.
        info: The source.
        segment: The segment.
        work_dir: The run's work folder.
        final: Encode it for the join (``CONFORM_ENCODE``): the finish step leaves it as it is
            (``tasks.seams.finished_in_conform``). Otherwise it is a lossless intermediate that the
            finish step gives its one final encode.

        shared: The run's shared work folder, if any (``extract_video_segment``).
        pending: (Not with ``final``.) Write no frames: the answer stream-copied with the filters that conform it
            (``media.pending``), which the finish step runs in its one encode instead of decoding an intermediate.

    Returns:
        The path of the conformed clip (its ``block://`` reference when shared).
    """
    destination = Path(work_dir) / "conform" / f"{segment.name}.mp4"
    encode = CONFORM_ENCODE if final else INTERMEDIATE_ENCODE
    with media_work(segment.index):
        clip = conform_clip(
            modified.local_clip(), info, segment, destination, encode=encode, pending=pending and not final
        )
    return share_file(clip, shared, f"conform/{segment.name}.mp4", move=True)


@task(
    name="neighbour-first-frame",
    description="Takes the previous segment's answer at this segment's first frame, as its first-frame image.",
    task_run_name="neighbour-frame-{segment.index:05d}",
    cache_policy=NO_CACHE,
)
def neighbour_first_frame(
    previous_conformed: Path, previous: Segment, segment: Segment, size: tuple[int, int], work_dir: str,
    shared: str | None = None,
) -> Path | str:
    """The restyled frame of the previous segment that shows this segment's first sent frame (sequential mode).

    With an overlap it is the very source frame this segment starts on; without, the frame before.

    Args:
        previous_conformed: The previous segment's conformed answer.
        previous: The previous segment.
        segment: The segment the image is for (it must start inside the same shot).
        size: Width and height of the clips sent to the service.
        work_dir: Where the PNG is written.

    Returns:
        The PNG's path.
    """
    index = min(segment.sent_first_frame - previous.sent_first_frame, previous.sent_frames - 1)
    destination = Path(work_dir) / "first-frames" / f"{segment.name}.png"
    image = write_frame_image(local_file(previous_conformed, work_dir), index, destination, size)
    return share_file(image, shared, f"first-frames/{segment.name}.png", move=True)


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
