"""The segment task: one Prefect task per segment that extracts it, gets its answer (paid once) and conforms it.

One task, not one per step: the Prefect server records a task run's states, and three of them a
segment cost about three times the server's CPU of one (``bench/concurrency.py``). The steps stay
apart inside it: the media steps are ``tasks.media.extract_clip`` and ``conform_answer`` (one per
core at once), the paid step ``tasks.modify.answer_segment``; an error is marked with the step
that raised it (``failed_step``), so the run's failure line names it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from prefect_modify_video.media.extract import SourceSegment, write_frame_image
from prefect_modify_video.media.plan import Segment
from prefect_modify_video.media.probe import VideoInfo
from prefect_modify_video.tasks.media import conform_answer, extract_clip
from prefect_modify_video.tasks.modify import ModifiedSegment, ModifySettings, answer_segment, retry_if_retryable
from prefect_modify_video.providers.registry import backend_class
from prefect_modify_video.tasks.work_files import local_file, local_info, share_file


class SegmentResult(BaseModel):
    """What a segment's task made: its extracted clip, its answer and what it cost, its conformed clip."""

    extracted: str | None = Field(
        description="The clip sent (a ``block://`` reference when the work files are shared); ``None`` for a backend "
        "that read the segment from the source (``ModifyBackend.reads_source``)."
    )
    modified: ModifiedSegment
    conformed: str = Field(description="The conformed answer (a ``block://`` reference when shared).")


@contextmanager
def _step(name: str) -> Iterator[None]:
    try:
        yield
    except Exception as error:
        try:
            error.segment_step = name  # pickled with the error (its __dict__) when it comes back from a Dask worker
        except AttributeError:  # an error type that takes no attributes: the line names no step
            pass
        raise


def failed_step(error: BaseException) -> str | None:
    """The step of the segment task that raised ``error``: ``extract``, ``modify`` or ``conform`` (``None``: not one)."""
    return getattr(error, "segment_step", None)


@task(
    name="modify-segment",
    description="Extracts one segment, sends it to the modify-video service (or reuses the stored answer) and "
    "conforms the answer to the source.",
    task_run_name="modify-{segment.index:05d}",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=[5, 20, 60],
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_if_retryable,
)
def modify_video_segment(
    info: VideoInfo,
    segment: Segment,
    settings: ModifySettings,
    key: str,
    estimated_cost_usd: float = 0.0,
    first_frame: Path | str | None = None,
    max_dimension: int | None = None,
    max_bytes: int | None = None,
    final: bool = False,
    pending: bool = False,
    shared: str | None = None,
    clip: Path | str | None = None,
) -> SegmentResult:
    """Extracts, restyles (paying at most once: ``tasks.modify.answer_segment``) and conforms one segment.

    A backend that reads the source itself (``ModifyBackend.reads_source``: ``local``) gets the segment's frames
    there (``media.extract.SourceSegment``): nothing is extracted for it.

    Prefect retries it after a retryable service error (``retry_if_retryable``); a retry finds its
    extracted clip whole on disk and keeps it, and reloads the saved job instead of paying again.
    Errors of the media steps (a bad answer's ``FfmpegError`` in conform) are not retried.

    Args:
        info: The source (its path a ``block://`` reference when the work files are shared).
        segment: The segment.
        settings: Prompt, mode, backend, store and work folder of the run.
        key: The segment's store key (``tasks.modify.segment_key``).
        estimated_cost_usd: The list price of the call, booked against ``max_cost_usd``.
        first_frame: The image sent as the clip's restyled first frame, if any (the run's image
            for the segment at frame 0; in the sequential mode, ``neighbour_first_frame``'s).
        max_dimension: The service's cap on the clip's longest side.
        max_bytes: The service's cap on an upload.
        final: Conform it ready to join (``tasks.media.conform_answer``).
        pending: Conform it as a pending clip that the finish step encodes (``tasks.media.conform_answer``).
        shared: The run's shared work folder in the store's block (``tasks.work_files``), when the
            segment tasks run on other machines: the clips made here are put there.
        clip: The segment already extracted (the preview sends one excerpt in each mode): not extracted again.

    Returns:
        The extracted clip (``None`` when nothing was extracted), the answer and what it cost, and the conformed clip.

    Raises:
        ProviderError: from the paid step; retryable ones are retried.
        FfmpegError: from extract or conform.
    """
    work_dir = settings.work_dir
    extracted: Path | None
    if clip is not None:
        extracted, extracted_reference = Path(clip), str(clip)
        sent: Path | SourceSegment = extracted
    elif backend_class(settings.backend_name).reads_source:
        # It reads the segment's frames from the source itself: no upload clip is encoded.
        extracted = extracted_reference = None
        sent = SourceSegment(local_info(info, work_dir), segment, max_dimension)
    else:
        with _step("extract"):
            extracted = extract_clip(info, segment, work_dir, max_dimension, max_bytes)
            # Shared at once (the flow's finish step reads it), and kept here for the paid step and a retry.
            extracted_reference = share_file(extracted, shared, f"extract/{segment.name}.mp4")
            sent = extracted
    with _step("modify"):
        # A sync task running its paid step's coroutine: Prefect's async task engine cost the flow's process
        # 0.07 CPU s a task run, its sync engine 0.01 (bench/concurrency.py's no-op flow, 100 segments).
        modified = asyncio.run(answer_segment(sent, segment, settings, key, estimated_cost_usd, first_frame))
    with _step("conform"):
        conformed = conform_answer(modified.local_clip(), info, segment, work_dir, final=final, pending=pending)
        conformed_reference = share_file(conformed, shared, f"conform/{segment.name}.mp4", move=True)
    if shared and clip is None and extracted is not None:
        extracted.unlink(missing_ok=True)  # the worker keeps no clip
    return SegmentResult(extracted=extracted_reference, modified=modified, conformed=conformed_reference)


@task(
    name="neighbour-first-frame",
    description="Takes the previous segment's answer at this segment's first frame, as its first-frame image.",
    task_run_name="neighbour-frame-{segment.index:05d}",
    cache_policy=NO_CACHE,
)
def neighbour_first_frame(
    previous_result: SegmentResult, previous: Segment, segment: Segment, size: tuple[int, int], work_dir: str,
    shared: str | None = None,
) -> Path | str:
    """The restyled frame of the previous segment that shows this segment's first sent frame (sequential mode).

    With an overlap it is the very source frame this segment starts on; without, the frame before.

    Args:
        previous_result: The previous segment's task's result (its conformed answer is read).
        previous: The previous segment.
        segment: The segment the image is for (it must start inside the same shot).
        size: Width and height of the clips sent to the service.
        work_dir: Where the PNG is written.
        shared: The run's shared work folder, if any (``modify_video_segment``).

    Returns:
        The PNG's path (its ``block://`` reference when shared).
    """
    index = min(segment.sent_first_frame - previous.sent_first_frame, previous.sent_frames - 1)
    destination = Path(work_dir) / "first-frames" / f"{segment.name}.png"
    image = write_frame_image(local_file(previous_result.conformed, work_dir), index, destination, size)
    return share_file(image, shared, f"first-frames/{segment.name}.png", move=True)
