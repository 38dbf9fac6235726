"""The ``modify-video-preview`` flow: one short excerpt through several modes, side by side, with costs.

It cuts an excerpt of the source (the first 5 s by default), sends it once per mode
(concurrently, through the same segment task and result store as ``modify-video``), conforms
each answer to the source's frame rate and size, and writes:

- ``<stem>.preview.png``: a contact sheet, one row of tiles, left to right: the source, then
  each mode in the order given; each tile is the excerpt's middle frame. Tiles carry their
  name when ffmpeg has ``drawtext`` and a font is found; the order holds either way.
- ``<stem>.preview.mp4``: the same tiles as moving video in a grid (row by row, same order),
  with the source's audio for the excerpt;
- artifacts: a table per mode (paid or reused, cost of the preview, estimated cost of the full
  render) and a markdown summary.

**Choosing a mode afterwards does not pay again** for the excerpt when the excerpt *is* the full
run's first segment: it starts at 0 and has as many frames as the first segment of the plan that
``modify-video`` makes with the same backend and ``max_segment_seconds``. Give ``end_s`` empty
to get exactly that excerpt (or an ``end_s`` that falls on the same frame count). The excerpt is
then cut by the same extract step with the same arguments, so it is the same bytes, and sent
with the same prompt, mode, first-frame image, backend and model, so the paid result is stored
under the key the full run looks up (with the same ``store_dir``). Any other excerpt (a later
start, another length, another ``max_segment_seconds`` or backend) is paid for by the preview
only. The default excerpt (5 s) is usually cheaper overall than the first segment, which may be
up to the service's cap (10–30 s) long, for every mode previewed.
"""

from __future__ import annotations

import os
import shutil
from fractions import Fraction
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from prefect_modify_video.errors import InvalidInputError, ModifyVideoError
from prefect_modify_video.media.conform import conform_clip
from prefect_modify_video.media.files import atomic_copy
from prefect_modify_video.media.join import check_not_an_output
from prefect_modify_video.media.plan import MIN_SEGMENT_SECONDS, Segment, SegmentPlan, max_frames_under
from prefect_modify_video.media.preview import label_font, tile_size, write_grid_video, write_tile_strip
from prefect_modify_video.media.probe import VideoInfo, check_image
from prefect_modify_video.parameters import Location, ModifyVideoParameters, field_definitions, plain_optional_properties
from prefect_modify_video.providers.base import Mode
from prefect_modify_video.storage.blocks import deliver_output
from prefect_modify_video.storage.download import fetch_source
from prefect_modify_video.storage.scratch import make_scratch_dir
from prefect_modify_video.flows.modify_video import remove_dead_runs_folders
from prefect_modify_video.storage.locations import is_remote, is_url, join_location, location_name, sibling_location
from prefect_modify_video.run_plan import plan_run
from prefect_modify_video.store import ResultStore
from prefect_modify_video.tasks import (
    modify_video_segment,
    plan_video_segments,
    probe_source_video,
)
from prefect_modify_video.tasks.media import extract_clip
from prefect_modify_video.tasks.modify import ModifiedSegment, ModifySettings, segment_key
from prefect_modify_video.tasks.report import image_data_uri

DEFAULT_PREVIEW_MODES: tuple[Mode, ...] = ("adhere_3", "flex_1", "flex_3", "reimagine_1")
DEFAULT_EXCERPT_SECONDS = 5.0
PREVIEW_PREFIX = "modify-video-preview-"
"""The preview's scratch folders in the system temp folder (the fetched source, clips, tiles)."""


# The fields a preview shares with the full run, copied from ModifyVideoParameters (type, title, bounds); some
# say what they mean for a preview.
PreviewRunFields = create_model(
    "PreviewRunFields",
    __doc__="The modify-video parameters a preview takes too.",
    **field_definitions(
        ModifyVideoParameters,
        ["source", "prompt", "first_frame", "backend", "max_segment_seconds", "store_dir", "preset", "max_cost_usd"],
        descriptions={
            "max_segment_seconds": "As for the full run: it decides the full run's first segment and the cost estimate.",
            "store_dir": "Folder of paid results; the full run must use the same one to reuse the preview.",
            "preset": "Name of a saved Modify Video Preset block: fills prompt, first frame, backend and segment length.",
            "max_cost_usd": "No paid call of the preview may take it past this.",
        },
    ),
)


class PreviewParameters(PreviewRunFields):
    """What to preview: the source, the look, the modes to compare and the excerpt.

    Addresses carrying credentials are refused without repeating them (``parameters.refuse_credentials``).
    """

    model_config = ConfigDict(hide_input_in_errors=True, json_schema_extra=plain_optional_properties)

    modes: list[Mode] = Field(
        default_factory=lambda: list(DEFAULT_PREVIEW_MODES),
        min_length=1,
        title="Modes",
        description="The modes to compare, in the order the tiles show them (after the source).",
    )
    start_s: float = Field(default=0.0, ge=0, title="Excerpt start (s)", description="Where the excerpt starts.")
    end_s: float | None = Field(
        default=DEFAULT_EXCERPT_SECONDS,
        title="Excerpt end (s)",
        description=(
            "Where the excerpt ends (5 s by default). Empty: the end of the full run's first segment; the "
            "excerpt is then that segment and the chosen mode's result is reused by the full run."
        ),
    )
    output_folder: Location | None = Field(
        default=None,
        title="Output folder",
        description="Local or block:// folder for the contact sheet and grid video; beside the source when empty.",
    )

    @field_validator("modes")
    @classmethod
    def _unique_modes(cls, modes: list[str]) -> list[str]:
        return list(dict.fromkeys(modes))


class PreviewModeResult(BaseModel):
    """One mode of a preview."""

    mode: str
    state: str = Field(description="Completed or Failed.")
    paid: bool | None = Field(default=None, description="Paid in this preview (False: found in the store).")
    cost_usd: float = Field(default=0.0, description="What this preview paid for the mode.")
    full_render_estimate_usd: float = Field(description="Estimated cost of the full render in this mode.")
    full_render_remaining_usd: float = Field(
        description="The same, less the first segment when the preview already paid for it."
    )
    error: str | None = None


class PreviewResult(BaseModel):
    """What a preview wrote and what it cost."""

    contact_sheet: str = Field(description="Location of the contact sheet PNG.")
    grid_video: str = Field(description="Location of the grid video.")
    tile_order: list[str] = Field(description="Tiles left to right (and row by row in the grid).")
    excerpt_start_s: float
    excerpt_end_s: float
    excerpt_frames: int
    reusable_by_full_run: bool = Field(description="Whether the excerpt is the full run's first segment.")
    billed_calls: int
    preview_cost_usd: float
    modes: list[PreviewModeResult]


class PreviewFailedError(ModifyVideoError):
    """Raised when some modes of a preview failed; the others are in the contact sheet and grid."""


def choose_excerpt(
    info: VideoInfo, plan: SegmentPlan, start_s: float, end_s: float | None, cap_s: float
) -> tuple[Segment, bool]:
    """The excerpt as a segment, and whether it is the full run's first segment.

    Raises:
        InvalidInputError: the excerpt is empty, shorter than 1 s, or not under the service's cap.
    """
    rate = Fraction(info.frame_rate)
    first = plan.segments[0]
    if end_s is None and start_s == 0:
        return first, True
    start_frame = round(Fraction(start_s).limit_denominator(100000) * rate)
    if end_s is None:
        end_frame = start_frame + first.frames
    else:
        end_frame = round(Fraction(end_s).limit_denominator(100000) * rate)
    end_frame = min(end_frame, info.frames)
    if start_frame == 0 and end_frame == first.end_frame:
        return first, True
    frames = end_frame - start_frame
    if frames <= 0 or start_frame >= info.frames:
        raise InvalidInputError(
            f"{info.path}: the excerpt {start_s:g}-{end_s} s holds no frame of the {info.duration_s:.2f} s video; "
            "choose start_s and end_s inside it"
        )
    if frames / rate < MIN_SEGMENT_SECONDS and frames < info.frames:
        raise InvalidInputError(f"{info.path}: the excerpt is {float(frames / rate):.2f} s; make it at least 1 s")
    if frames > max_frames_under(cap_s, rate):
        raise InvalidInputError(
            f"{info.path}: the excerpt is {float(frames / rate):.2f} s, not under the {cap_s:g} s a call takes; "
            "choose a shorter excerpt"
        )
    segment = plan.sent(Segment(
        index=0, first_frame=start_frame, end_frame=end_frame,
        start_s=float(start_frame / rate), end_s=float(end_frame / rate),
    ))
    return segment, False


def _destination(params: PreviewParameters, name: str) -> str:
    if params.output_folder:
        return join_location(params.output_folder, name)
    if is_url(params.source):
        raise InvalidInputError(
            f"{location_name(params.source) or 'the URL source'}: a preview of a URL source needs an output_folder "
            "(local or block://...)"
        )
    return sibling_location(params.source, name)


def _preview_run_name() -> str:
    """``beach-preview``: after the previewed video."""
    from prefect.runtime import flow_run

    from prefect_modify_video.flows.modify_video import video_run_name

    params = flow_run.parameters.get("params")  # the model, or the dict a deployment gives
    source = params.get("source") if isinstance(params, dict) else getattr(params, "source", None)
    return f"{video_run_name(source)}-preview"


@flow(
    name="modify-video-preview",
    description="Restyles a short excerpt in several modes, side by side, with costs.",
    flow_run_name=_preview_run_name,
)
def preview_modes(params: PreviewParameters) -> PreviewResult:
    """Previews several modes on one excerpt: contact sheet, grid video, and the cost of each full render.

    See the module's documentation for when the full run reuses the preview's paid call.

    Args:
        params: Source, prompt, first frame, backend, modes and excerpt.

    Returns:
        Where the contact sheet and grid video are, and each mode's costs.

    Raises:
        InvalidInputError: the source, first frame, excerpt or output location cannot be used.
        PreviewFailedError: some modes failed (the others are in the outputs).

    Example:
        ```python
        from prefect_modify_video.flows.preview import PreviewParameters, preview_modes

        result = preview_modes(PreviewParameters(source="film.mp4", prompt="watercolour painting", end_s=None))
        print(result.contact_sheet, [(m.mode, m.full_render_estimate_usd) for m in result.modes])
        ```
    """
    logger = get_run_logger()
    if params.preset:
        from prefect_modify_video.blocks.presets import load_preset

        params = load_preset(params.preset).apply(params)
    stem = Path(location_name(params.source) or "source").stem
    sheet_destination = _destination(params, f"{stem}.preview.png")
    grid_destination = _destination(params, f"{stem}.preview.mp4")

    # A marked scratch folder: a later run removes it if this one is killed.
    remove_dead_runs_folders(f"{PREVIEW_PREFIX}*", None)
    work = make_scratch_dir(PREVIEW_PREFIX)
    try:
        source = str(fetch_source(params.source, work / "source"))
        first_frame = None
        if params.first_frame:
            first_frame = str(check_image(fetch_source(params.first_frame, work / "first-frame", kind="image")))
        info = probe_source_video(source)
        check_not_an_output(info)
        # Planned (and checked) as the full run plans, so an excerpt at frame 0 is its first segment, reused by it.
        run_params = ModifyVideoParameters(
            **params.model_dump(include=set(PreviewRunFields.model_fields) - {"preset", "source"}), source=source
        )
        run = plan_run(run_params, info, planner=plan_video_segments)
        backend, plan = run.backend, run.plan
        segment, reusable = choose_excerpt(info, plan, params.start_s, params.end_s, run.max_segment_seconds)
        call_estimate = backend.estimate_cost_usd(segment.sent_duration_s, *run.sent_size)
        full_estimate = run.estimate_usd
        first_estimate = run.estimates_usd[0]
        logger.info(
            "excerpt %.3f-%.3f s (%d frames)%s; %d modes at about $%.2f each",
            segment.start_s, segment.end_s, segment.frames,
            ", the full run's first segment" if reusable else "", len(params.modes), call_estimate,
        )

        store = ResultStore(params.store_dir)
        extracted = extract_clip(info, segment, str(work), backend.max_dimension, backend.max_upload_bytes)
        futures = {}
        sent_first_frame = first_frame if segment.first_frame == 0 else None
        # One run key for every mode: max_cost_usd holds for the whole preview.
        run_settings = ModifySettings.for_run(
            run_params, run, source=source, first_frame=first_frame, store=store, work_dir=work, mode=params.modes[0]
        )
        for mode in params.modes:
            settings = run_settings.model_copy(update={"mode": mode, "work_dir": str(work / "modes" / mode)})
            key = segment_key(settings, segment, settings.first_frame_sha256 if sent_first_frame else None)
            # The segment task with the excerpt given: it sends it and conforms the answer in the mode's folder.
            futures[mode] = modify_video_segment.submit(
                info=info, segment=segment, settings=settings, key=key, estimated_cost_usd=call_estimate,
                first_frame=sent_first_frame, clip=extracted,
            )
        source_tile = conform_clip(Path(extracted), info, segment, work / "source-tile.mp4")

        rows: list[PreviewModeResult] = []
        clips, labels = [source_tile], ["source"]
        for mode, future in futures.items():
            try:
                done = future.result()
                result: ModifiedSegment = done.modified
                clips.append(Path(done.conformed))
                labels.append(mode)
                cost = (result.cost_usd or 0.0) if result.paid else 0.0
                stored = reusable  # the result now sits under the full run's first-segment key
                rows.append(PreviewModeResult(
                    mode=mode, state="Completed", paid=result.paid, cost_usd=cost,
                    full_render_estimate_usd=full_estimate,
                    full_render_remaining_usd=max(0.0, full_estimate - first_estimate) if stored else full_estimate,
                ))
            except Exception as error:  # noqa: BLE001 - one mode's failure is reported, the others shown
                first_line = (str(error).strip().splitlines() or [""])[0]
                logger.error("mode %s failed: %s: %s", mode, type(error).__name__, first_line)
                rows.append(PreviewModeResult(
                    mode=mode, state="Failed", full_render_estimate_usd=full_estimate,
                    full_render_remaining_usd=full_estimate, error=f"{type(error).__name__}: {first_line}",
                ))

        font = label_font()
        if font is None:
            logger.info("no drawtext or font: tiles are unlabelled; order left to right: %s", ", ".join(labels))
        tile = tile_size(info)
        outputs = work / "outputs"
        sheet = write_tile_strip(clips, labels, segment.frames // 2, tile, outputs / f"{stem}.preview.png", font)
        grid = write_grid_video(clips, labels, info, segment, tile, outputs / f"{stem}.preview.mp4", font)
        sheet_location = _place(sheet, sheet_destination)
        if not is_remote(sheet_location):
            sheet_location = os.path.abspath(sheet_location)
        grid_location = _place(grid, grid_destination)
        if not is_remote(grid_location):
            grid_location = os.path.abspath(grid_location)

        billed = sum(1 for r in rows if r.paid)
        preview_cost = sum(r.cost_usd for r in rows)
        _report(params, segment, reusable, rows, labels, sheet_location, grid_location, billed, preview_cost,
                call_estimate, image_data_uri(sheet), free=backend.is_free)
        failed = [r for r in rows if r.state != "Completed"]
        if failed:
            raise PreviewFailedError(
                f"{len(failed)} of {len(rows)} modes failed (the others are in {sheet_location}):\n"
                + "\n".join(f"{r.mode}: {r.error}" for r in failed)
            )
        return PreviewResult(
            contact_sheet=sheet_location,
            grid_video=grid_location,
            tile_order=labels,
            excerpt_start_s=segment.start_s,
            excerpt_end_s=segment.end_s,
            excerpt_frames=segment.frames,
            reusable_by_full_run=reusable,
            billed_calls=billed,
            preview_cost_usd=preview_cost,
            modes=rows,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _place(local_file: Path, destination: str) -> str:
    """Moves a finished output to a local destination, or delivers it to a block."""
    if is_remote(destination):
        return deliver_output(local_file, destination)
    return str(atomic_copy(local_file, Path(os.path.expanduser(destination))))


def _report(params, segment, reusable, rows, labels, sheet, grid, billed, preview_cost, call_estimate, image, free) -> None:
    table = [
        {
            "mode": r.mode,
            "state": r.state,
            "paid_in_preview": r.paid,
            "preview_cost_usd": round(r.cost_usd, 4),
            "full_render_estimate_usd": round(r.full_render_estimate_usd, 4),
            "full_render_after_preview_usd": round(r.full_render_remaining_usd, 4),
            "error": r.error,
        }
        for r in rows
    ]
    create_table_artifact(table=table, key="modify-video-preview-modes", description="Modes of the preview and their costs.")
    lines = [
        "# Modify video preview",
        "",
        f"- **Source**: `{params.source}`",
        f"- **Prompt**: {params.prompt or '(none)'}",
        f"- **Backend**: {params.backend.name}",
        f"- **Excerpt**: {segment.start_s:.3f}-{segment.end_s:.3f} s ({segment.frames} frames)"
        + (" = the full run's first segment: the mode you choose is not paid again for it"
           if reusable else " (not the full run's first segment: the full run pays for all of it)"),
        f"- **Contact sheet**: `{sheet}`",
        f"- **Grid video**: `{grid}`",
        f"- **Tiles, left to right**: {', '.join(labels)}",
        f"- **Preview cost**: none ({billed} restyled by the free {params.backend.name} backend)" if free
        else f"- **Preview cost**: ${preview_cost:.2f} ({billed} paid calls × about ${call_estimate:.2f})",
        "",
        "| mode | full render (est.) | after this preview (est.) |",
        "|---|---|---|",
        *[f"| {r.mode} | ${r.full_render_estimate_usd:.2f} | ${r.full_render_remaining_usd:.2f} |" for r in rows],
    ]
    if image:
        lines += ["", f"![Side by side, left to right: {', '.join(labels)}]({image})"]
    create_markdown_artifact(markdown="\n".join(lines), key="modify-video-preview", description="Preview summary.")
