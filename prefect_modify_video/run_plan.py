"""One plan of a run, shared by the flow, the preview and the ``plan`` command.

``plan_run`` decides everything about a run that follows from its parameters and the probed
source before any work: the backend (built the one way backends are built), the longest
segment, the seams' options for that backend, the segments, the size and frame rate sent (one
frame in ``Segment.frame_step`` for a service with a frame-rate cap, clips padded to its shortest
input) and each segment's
estimated price. Nothing here imports Prefect; the flow passes its planning task in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prefect_modify_video.blocks.credentials import build_backend
from prefect_modify_video.errors import InvalidInputError
from prefect_modify_video.media.extract import service_size
from prefect_modify_video.media.plan import SegmentPlan, plan_segments_on_cuts, plan_video, sent_frame_step
from prefect_modify_video.media.scenes import cuts_from_differences, frame_differences
from prefect_modify_video.media.probe import VideoInfo
from prefect_modify_video.parameters import ModifyVideoParameters, SeamOptions
from prefect_modify_video.providers.base import ModifyBackend

Planner = Callable[[VideoInfo, float, int], SegmentPlan]
"""Plans segments: ``(info, max_segment_seconds, overlap_frames) -> SegmentPlan`` (``plan_video``)."""

ESTIMATE_ONLY_KEY = "plan-makes-no-request"
"""The key an estimate-only backend is built with: it is never sent anywhere."""


def create_checked_backend(params: ModifyVideoParameters, *, estimate_only: bool = False) -> ModifyBackend:
    """Builds the run's backend, refusing a setup that cannot work (no key, no upload store).

    Args:
        params: The run's parameters.
        estimate_only: Build it only to plan and price (no key needed, no upload store checked).

    Raises:
        InvalidInputError: naming what is missing and where to give it.
    """
    # An estimate needs no key, but a saved block's settings (a model, Segmind's v2 API) change the price.
    placeholder = estimate_only and not params.backend.credentials_block
    backend = build_backend(params.backend, api_key=ESTIMATE_ONLY_KEY if placeholder else None)
    has_uploader = params.backend.upload_url or params.backend.upload_block
    if backend.requires_uploader and not has_uploader and not estimate_only:
        raise InvalidInputError(
            f"{backend.name} takes media only by URL: give backend.upload_block (--upload-block), a storage "
            "block folder on S3 or GCS, or backend.upload_url (--upload-url), an HTTP PUT store the service can read"
        )
    return backend


@dataclass(frozen=True)
class RunPlan:
    """What a run will do and what it should cost, decided before any work."""

    backend: ModifyBackend
    max_segment_seconds: float
    """The cap every segment stays strictly under: the parameter's, never above the service's."""
    concurrency: int
    """Paid calls in flight at once: the parameter's, else the service's documented limit."""
    seams: SeamOptions
    """The seam options with the backend's defaults filled in."""
    plan: SegmentPlan
    sent_size: tuple[int, int]
    """Width and height of the clips sent to the service."""
    estimates_usd: dict[int, float]
    """Each segment's list price by index (billed as one call, its overlap included)."""
    billed_seconds: dict[int, float] | None = None
    """Each segment's seconds as the service bills them (its minimum, its blocks), by index."""

    @property
    def billed_s(self) -> float:
        """The seconds the service bills for the whole run (``plan.billed_s`` rounded up to its billing)."""
        return sum((self.billed_seconds or {}).values()) if self.billed_seconds else self.plan.billed_s

    @property
    def estimate_usd(self) -> float:
        """The whole run's list price."""
        return sum(self.estimates_usd.values())

    @property
    def overlap_cost_usd(self) -> float:
        """What the overlaps add: each segment's price with them less its price without."""
        width, height = self.sent_size
        alone = sum(self.backend.estimate_cost_usd(s.duration_s, width, height) for s in self.plan.segments)
        return self.estimate_usd - alone


def plan_run(
    params: ModifyVideoParameters, info: VideoInfo, *, estimate_only: bool = False, planner: Planner = plan_video
) -> RunPlan:
    """Plans a run of ``params`` over the probed source ``info``.

    Args:
        params: The run's parameters (a preset already applied).
        info: The probed source.
        estimate_only: Plan and price without a key or an upload store (the ``plan`` command).
        planner: What splits the video (the flow passes its Prefect task).

    Returns:
        The run's plan.

    Raises:
        InvalidInputError: the backend cannot be built or used as configured.

    Example:
        >>> from prefect_modify_video.media.sample import make_sample_video
        >>> from prefect_modify_video.media.probe import probe_video
        >>> import tempfile, pathlib
        >>> clip = make_sample_video(pathlib.Path(tempfile.mkdtemp()) / "s.mp4", seconds=4, width=64, height=36)
        >>> run = plan_run(ModifyVideoParameters(source=str(clip), backend={"name": "fal"}), probe_video(clip),
        ...                estimate_only=True)
        >>> run.max_segment_seconds, len(run.plan.segments) >= 1, run.estimate_usd > 0
        (10.0, True, True)
    """
    backend = create_checked_backend(params, estimate_only=estimate_only)
    cap = min(params.max_segment_seconds or backend.max_segment_seconds, backend.max_segment_seconds)
    seams = params.seams.resolved_for(backend)
    width, height = service_size(info, backend.max_dimension)
    step = sent_frame_step(info.frame_rate, backend.max_fps)
    if step > 1:
        # A clip sent one frame in `step` lasts up to step - 1 source frames longer than its segment.
        cap -= (step - 1) / info.fps
    cap = cheapest_cap(backend, info, cap, seams.overlap_frames, (width, height))
    plan = planner(info, cap, seams.overlap_frames).as_sent(step, backend.min_clip_seconds)
    return RunPlan(
        backend=backend,
        max_segment_seconds=cap,
        concurrency=params.concurrency or backend.max_concurrency,
        seams=seams,
        plan=plan,
        sent_size=(width, height),
        estimates_usd={s.index: backend.estimate_cost_usd(s.sent_duration_s, width, height) for s in plan.segments},
        billed_seconds={s.index: backend.billed_seconds(s.sent_duration_s) for s in plan.segments},
    )


def block_caps(cap: float, block: float, fps: float) -> list[float]:
    """Caps under ``cap`` that let segments fill whole billing blocks: each block multiple plus half a frame
    (a segment may then be exactly that long; segments stay strictly under a cap).

    Example:
        >>> block_caps(18.0, 5.0, 25.0)
        [5.02, 10.02, 15.02]
    """
    caps, k = [], 1
    while k * block + 0.5 / fps < cap:
        caps.append(round(k * block + 0.5 / fps, 6))
        k += 1
    return caps


def cheapest_cap(
    backend: ModifyBackend, info: VideoInfo, cap: float, overlap_frames: int, size: tuple[int, int]
) -> float:
    """The cap to plan under: ``cap``, or a smaller one fitting the service's billing blocks when that is cheaper.

    For a service billed in blocks (``billing_block_seconds``) the source is planned under ``cap`` and under each
    whole number of blocks below it; the cheapest plan's cap wins (on a tie, ``cap``: fewer segments).
    """
    block = backend.billing_block_seconds
    candidates = block_caps(cap, block, info.fps) if block else []
    if not candidates:
        return cap
    step = sent_frame_step(info.frame_rate, backend.max_fps)
    differences = frame_differences(info.path, frame_rate=info.frame_rate)
    cuts = cuts_from_differences(differences)

    def cost(candidate: float) -> float:
        try:
            plan = plan_segments_on_cuts(
                info.frames, info.frame_rate, candidate, cuts, differences, overlap_frames=overlap_frames
            ).as_sent(step, backend.min_clip_seconds)
        except InvalidInputError:
            return float("inf")
        return round(sum(backend.estimate_cost_usd(s.sent_duration_s, *size) for s in plan.segments), 6)

    best = cost(cap)
    for candidate in candidates:
        price = cost(candidate)
        if price < best:
            cap, best = candidate, price
    return cap
