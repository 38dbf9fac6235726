"""The embedded ``local`` backend: real colour and tone restyling with ffmpeg, no account needed."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from pathlib import Path
from typing import ClassVar

from prefect_modify_video.media.conform import conformed_output_args
from prefect_modify_video.media.extract import SentReading, frames_in, read_sent_frames
from prefect_modify_video.media.files import atomic_copy
from prefect_modify_video.media.ffmpeg import write_with_ffmpeg
from prefect_modify_video.media.probe import probe_video
from prefect_modify_video.media.looks import (
    LOOKS,
    MODE_STRENGTH,
    ColourTransfer,
    build_look_filter,
    choose_looks,
    fit_colour_transfer,
)
from prefect_modify_video.providers.base import JobState, ModifyBackend, ModifyJob, ModifyRequest

logger = logging.getLogger(__name__)


class LocalBackend(ModifyBackend):
    """Restyles colour and tone on this machine.

    Given both first frames, the colour statistics of ``reference_frame`` (the source's own
    first frame) are moved to ``styled_first_frame``'s (the run's restyled first frame): one
    transform, fitted once, for every segment of the video (a request's own ``first_frame`` is
    not used). Then the looks named in the prompt are applied. The strength of both rises from
    ``adhere_1`` (subtle) to ``reimagine_3`` (strong). It keeps the clip's frame rate and size.

    Args:
        reference_frame: An image of the source's first frame.
        styled_first_frame: The restyled first frame whose colours the video takes.
    """

    name: ClassVar[str] = "local"
    service: ClassVar[str] = "local"
    default_overlap_frames: ClassVar[int] = 0
    """Its answers are the same on both sides of a seam: nothing to blend."""
    uses_reference_frame: ClassVar[bool] = True
    answers_drift: ClassVar[bool] = False
    is_free: ClassVar[bool] = True
    reads_source: ClassVar[bool] = True
    """It restyles each segment straight from the source: no upload clip is encoded for it."""
    model = "ffmpeg-looks-1"
    max_segment_seconds = 30.0
    max_upload_bytes = 2**62
    max_dimension = None
    max_concurrency = 2
    poll_interval_seconds = 0.0

    def __init__(self, reference_frame: Path | None = None, styled_first_frame: Path | None = None, **_ignored):
        self.reference_frame = reference_frame
        self.styled_first_frame = styled_first_frame
        self._transfer: ColourTransfer | None = None
        self._lock = threading.Lock()

    def estimate_cost_usd(self, seconds: float, width: int, height: int) -> float:
        """The local backend is free."""
        return 0.0

    def prompt_warnings(self, prompt: str) -> list[str]:
        """Names the prompt's words that no look matches, and the look used when none does."""
        choice = choose_looks(prompt)
        warnings = []
        if choice.unknown_words:
            warnings.append(
                "local backend: these prompt words match no look and are ignored: "
                + ", ".join(choice.unknown_words)
            )
        if not any(phrase in prompt.lower() for names, _ in LOOKS.values() for phrase in names):
            warnings.append(f"local backend: the prompt names no look; using {', '.join(choice.looks)}")
        return warnings

    def colour_transfer(self) -> ColourTransfer | None:
        """The colour transfer for this video, fitted on first use and reused for every segment."""
        if self.styled_first_frame is None or self.reference_frame is None:
            return None
        with self._lock:
            if self._transfer is None:
                self._transfer = fit_colour_transfer(self.reference_frame, self.styled_first_frame)
            return self._transfer

    def restyle(self, request: ModifyRequest, destination: Path) -> Path:
        """Writes the restyled clip to ``destination`` (blocking).

        From the source when the request says where its frames are (``ModifyRequest.source``: one decode of
        the segment, no upload clip), else from ``request.clip``.
        """
        choice = choose_looks(request.prompt)
        strength = MODE_STRENGTH[request.mode]
        chain = build_look_filter(choice.looks, strength, self.colour_transfer())
        # Encoded once, as the conform step would encode it for the join (which then copies it): the
        # look is applied inside the one final encode instead of in an encode of its own.
        if request.source is None:
            args = ["-i", str(request.clip), "-map", "0:v:0", "-vf", chain, "-an", "-map_metadata", "-1",
                    *conformed_output_args(probe_video(request.clip))]  # fmt: skip
            return write_with_ffmpeg(args, destination)
        source = request.source
        timing = source.output_options()

        def write(reading: SentReading) -> int:
            # The frames an extracted clip would hold, restyled: the sent frames' filters, then the looks.
            args = [*reading.input_args(), "-vf", f"{reading.filter_text()},{chain}", "-an", "-map_metadata", "-1",
                    "-r", timing["r"], "-frames:v", str(timing["frames:v"]),
                    *conformed_output_args(source.clip_info())]  # fmt: skip
            return frames_in(write_with_ffmpeg(args, destination))

        read_sent_frames(source, write, lambda frames: frames)
        return destination

    async def submit(self, request: ModifyRequest, workdir: Path) -> ModifyJob:
        """Restyles the clip at once and returns a completed job."""
        workdir.mkdir(parents=True, exist_ok=True)
        name = request.clip.stem if request.source is None else request.source.segment.name
        result = workdir / f"{name}.local.mp4"
        await asyncio.to_thread(self.restyle, request, result)
        return ModifyJob(provider=self.name, state=JobState.COMPLETED, result_path=result, cost_usd=0.0)

    async def download(self, job: ModifyJob, destination: Path) -> Path:
        """Moves the finished clip to ``destination``."""
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(job.result_path, destination)
        except OSError:  # another file system (the store is not beside the work folder): copy
            atomic_copy(job.result_path, destination)
            Path(job.result_path).unlink(missing_ok=True)
        return destination
