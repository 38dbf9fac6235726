"""Parameters of the flows, as pydantic models: the Prefect UI shows them as forms."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from prefect_modify_video.providers.base import Mode, ModifyBackend

BackendName = Literal["local", "segmind", "segmind-async", "luma", "fal", "replicate"]


class BackendSpec(BaseModel):
    """Which service to call and where its key is; holds no secret itself."""

    name: BackendName = Field(default="local", title="Backend", description="The modify-video service.")
    credentials_block: str | None = Field(
        default=None,
        title="Credentials block",
        description="Name of a saved credentials block of the service; without it the key is read from the environment.",
    )
    base_url: str | None = Field(
        default=None, title="Base URL", description="Another address for the service (a proxy or a test server)."
    )
    model: str | None = Field(default=None, description="The service's model, e.g. ray-2 or ray-flash-2 (Luma, fal).")
    poll_interval_seconds: float | None = Field(
        default=None, description="Seconds between status checks of a queued job; the service's default when empty."
    )
    timeout_seconds: float | None = Field(
        default=None, description="Seconds to wait for one answer of the service; its default when empty."
    )
    upload_url: str | None = Field(
        default=None,
        description="Where segments are uploaded for services that take media by URL (an HTTP PUT store).",
    )
    upload_block: str | None = Field(
        default=None,
        description="Or a storage block's folder for those uploads, read by the service through presigned URLs: "
        "block://remote-file-system/<block-name>/<folder> on s3:// or gs://.",
    )


class ModifyVideoParameters(BaseModel):
    """What to restyle, how, with which service, and where the result goes."""

    source: str = Field(
        title="Source video",
        description="The video to restyle: a local path, an http(s) URL or block://<block-type-slug>/<block-name>/<path>.",
    )
    prompt: str = Field(
        default="",
        title="Prompt",
        description="The look to give the video, e.g. 'warm vintage film with grain'.",
    )
    mode: Mode = Field(
        default="flex_1",
        title="Mode",
        description="How far from the source: adhere (subtle) < flex (keeps shapes) < reimagine (loose).",
    )
    first_frame: str | None = Field(
        default=None,
        title="First frame",
        description="An image (path, URL or block:// reference): a restyled version of the video's first frame (recommended).",
    )
    output: str | None = Field(
        default=None,
        title="Output path",
        description="Where the restyled video is written (a local path or block:// reference); '<source>.modified.<ext>' beside the source when empty.",
    )
    preset: str | None = Field(
        default=None,
        title="Preset",
        description="Name of a saved Modify Video Preset block; parameters given here override it.",
    )
    backend: BackendSpec = Field(default_factory=BackendSpec, title="Backend", description="The service to use.")
    max_segment_seconds: float | None = Field(
        default=None,
        title="Longest segment (s)",
        description="Upper bound on a segment's length; the service's own cap when empty.",
        ge=2,
    )
    concurrency: int | None = Field(
        default=None,
        title="Concurrency",
        description="Segments in flight at once; the service's documented limit when empty.",
        ge=1,
        le=64,
    )
    store_dir: str | None = Field(
        default=None,
        title="Result store",
        description="Where paid results are kept and found again on a re-run: a local folder or a storage block's "
        "folder (block://<block-type-slug>/<block-name>/<folder>, e.g. S3); under PREFECT_HOME when empty.",
    )
    max_cost_usd: float | None = Field(
        default=None,
        ge=0,
        title="Budget (USD)",
        description="Refuse to start when the estimate is above it, and send no call that would pass it.",
    )
    anchor_colours: bool | None = Field(
        default=None,
        title="Anchor colours across segments",
        description="Correct each answer's colour drift toward its neighbours; on for services, off for the local backend when empty.",
    )
    anchor_strength: float = Field(
        default=1.0,
        ge=0,
        le=1,
        title="Anchoring strength",
        description="Weight of a segment's colour correction away from its in-shot seams (1 everywhere at the seams, "
        "ramped over a second): 1 holds the whole shot to one colour, less keeps more of each answer's own.",
    )
    overlap_frames: int | None = Field(
        default=None,
        ge=0,
        le=60,
        title="Overlap at in-shot seams (frames)",
        description="Frames sent with both segments of a seam inside a shot and cross-blended there (billed twice); "
        "12 for services, 0 for the local backend when empty.",
    )
    sequential: bool = Field(
        default=False,
        title="Sequential (continuity over speed)",
        description="Send segments one after another, each starting inside a shot getting the previous answer's "
        "frame as its first frame; no concurrency.",
    )
    seam_threshold: float = Field(
        default=1.5, gt=0, description="A seam whose jump is above this many times the source's own is flagged."
    )
    segment_retries: int = Field(
        default=3, ge=0, le=10, description="Tries after the first for a segment that failed with a retryable error."
    )
    retry_delay_seconds: float = Field(
        default=10.0, ge=0, description="Wait before a segment's first retry; doubled for each further one (with jitter)."
    )
    refresh: bool = Field(default=False, description="Pay for every segment again instead of reusing stored results.")

    def resolved_overlap_frames(self, backend: ModifyBackend) -> int:
        """The overlap to plan with: as given, else the backend's ``default_overlap_frames``."""
        if self.overlap_frames is not None:
            return self.overlap_frames
        return backend.default_overlap_frames

    def resolved_output(self) -> str:
        """The output location, defaulting to ``<stem>.modified<ext>`` beside the source.

        Raises:
            InvalidInputError: the source is a URL and no output is given.
        """
        from pathlib import Path

        from prefect_modify_video.media.join import default_output_path
        from prefect_modify_video.storage.locations import location_name, sibling_location

        if self.output:
            return self.output
        return sibling_location(self.source, default_output_path(Path(location_name(self.source))).name)
