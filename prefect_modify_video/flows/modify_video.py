"""The ``modify-video`` flow: probe, plan, then one task per segment (extract → modify → conform), join, report."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from prefect import flow
from prefect.futures import PrefectFuture, as_completed, wait
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff
from pydantic import BaseModel, Field

from prefect_modify_video.blocks.presets import fields_set_by_run, load_preset
from prefect_modify_video.errors import BudgetExceededError, FfmpegError, InvalidInputError, ModifyVideoError
from prefect_modify_video.media.ffmpeg import run_ffmpeg
from prefect_modify_video.media.join import check_not_an_output, check_output_path
from prefect_modify_video.media.files import check_free_space
from prefect_modify_video.media.plan import SegmentPlan
from prefect_modify_video.media.probe import VideoInfo, check_image, probe_video
from prefect_modify_video.parameters import ModifyVideoParameters, flow_signature, parameters_from_flow
from prefect_modify_video.progress import INPUTS_CHECKED_RECORD_KEY, PROGRESS_RECORD_KEY, SegmentProgress
from prefect_modify_video.providers.base import ModifyBackend
from prefect_modify_video.storage.blocks import deliver_output
from prefect_modify_video.storage.download import fetch_source
from prefect_modify_video.storage.identity import check_output_is_not_source
from prefect_modify_video.storage.locations import (
    errors_named_as,
    is_block_reference,
    is_remote,
    local_path,
    location_name,
    parse_block_reference,
    sibling_location,
)
from prefect_modify_video.storage.scratch import make_scratch_dir, remove_dead_scratch_dirs
from prefect_modify_video.run_plan import create_checked_backend, plan_run
from prefect_modify_video.store import ResultStore
from prefect_modify_video.tasks import (
    join_video_segments,
    modify_video_segment,
    neighbour_first_frame,
    plan_video_segments,
    probe_source_video,
    report_modify_video_run,
)
from prefect_modify_video.tasks.modify import (
    ModifySettings,
    billed_calls,
    clear_billing_records,
    segment_key,
)
from prefect_modify_video.tasks.runners import segment_task_runner
from prefect_modify_video.tasks.segment import SegmentResult, failed_step
from prefect_modify_video.tasks.work_files import (
    local_file,
    remove_shared_folder,
    share_file,
    shared_source,
    shared_work_location,
)
from prefect_modify_video.stopping import StopRequested

USER_ERRORS: tuple[type[BaseException], ...] = (InvalidInputError, BudgetExceededError, StopRequested)
"""Errors of the user's input or request, not bugs: logged as one line, without a traceback."""


class _InputErrorsAsOneLine(logging.Filter):
    """Drops Prefect's traceback records (``Task run failed with exception``, ``Encountered exception during
    execution``, ``Engine execution exited...``) for ``USER_ERRORS``: the run's ``Finished in state
    Failed(...)`` line and its state message already say the error in one line. Bugs keep their tracebacks."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, USER_ERRORS)


def _log_input_errors_as_one_line() -> None:
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _InputErrorsAsOneLine) for f in logger.filters):
            logger.addFilter(_InputErrorsAsOneLine())


_log_input_errors_as_one_line()
from prefect_modify_video.tasks.report import (
    RunProgressArtifact,
    RunSummary,
    emit_run_event,
    emit_segment_event,
    image_data_uri,
    locate,
)
from prefect_modify_video.tasks.seams import (
    SegmentFinisher,
    finish_segment,
    flagged_seams,
    judged_seams,
    report_video_seams,
)


class ModifyVideoResult(BaseModel):
    """What a run produced and what it cost."""

    output: str = Field(description="Path of the restyled video.")
    mode: str = Field(default="", description="The mode used (after the preset, if any).")
    prompt: str = Field(default="", description="The prompt used (after the preset, if any).")
    segments: int = Field(description="Number of segments.")
    frames: int = Field(description="Frames in the output.")
    duration_s: float = Field(description="Length of the output in seconds.")
    billed_calls: int = Field(description="Paid calls made by this run.")
    reused_segments: int = Field(description="Segments found in the store, not paid again.")
    cost_usd: float = Field(description="Cost of this run's paid calls, as the service reported or estimated.")
    free: bool = Field(default=False, description="Whether the backend costs nothing (its calls are not paid).")
    worst_seam_ratio: float | None = Field(
        default=None,
        description="Largest jump at a seam inside a shot as a multiple of the source's own (None: no such seam).",
    )
    seams_flagged: list[int] = Field(
        default_factory=list, description="Frames of the seams inside shots above the threshold."
    )
    contact_sheet: str | None = Field(default=None, description="Picture of every seam, source above output.")
    seconds: float = Field(description="Wall time of the run.")

    @classmethod
    def from_summary(cls, summary: RunSummary) -> ModifyVideoResult:
        """The result of a run whose output is written, from its summary."""
        return cls(
            output=summary.output,
            mode=summary.mode,
            prompt=summary.prompt,
            segments=summary.segments,
            frames=summary.frames,
            duration_s=summary.duration_s,
            billed_calls=summary.paid,
            reused_segments=summary.reused,
            cost_usd=summary.cost_usd,
            free=summary.free,
            seconds=summary.seconds,
            worst_seam_ratio=summary.worst_seam_ratio,
            seams_flagged=summary.seams_flagged,
            contact_sheet=summary.contact_sheet,
        )


class SegmentsFailedError(ModifyVideoError):
    """Raised when some segments failed for good; the others are stored and a re-run sends only these.

    Attributes:
        billed_calls: The paid calls the run made before it failed (they were billed all the same).
        cost_usd: Their cost.
    """

    def __init__(self, message: str, billed_calls: int = 0, cost_usd: float = 0.0):
        super().__init__(message, billed_calls, cost_usd)
        self.billed_calls, self.cost_usd = billed_calls, cost_usd

    def __str__(self) -> str:
        return str(self.args[0])


def check_paths(info: VideoInfo, output: Path, first_frame: Path | None) -> None:
    """Checks the (local) output path and first frame against the probed source.

    Raises:
        InvalidInputError: naming the path and what to do.
    """
    check_not_an_output(info)
    check_output_path(info, output)
    check_decodable(info)
    if first_frame is not None:
        check_image(first_frame)


def check_decodable(info: VideoInfo) -> None:
    """Refuses a source whose video ffmpeg can read the header of but not decode (no decoder for its codec).

    The probe reads headers only; without this check every segment's extraction would fail
    after the run had started.

    Raises:
        InvalidInputError: naming the source, its codec and what to do.
    """
    try:
        run_ffmpeg(["-v", "error", "-i", info.path, "-map", "0:v:0", "-frames:v", "1", "-f", "null", "-"])
    except FfmpegError as error:
        reason = error.stderr.strip().splitlines()[-1] if error.stderr.strip() else f"status {error.returncode}"
        raise InvalidInputError(
            f"{info.path}: its video cannot be decoded by this ffmpeg ({reason}); convert it to a common codec "
            "(e.g. ffmpeg -i in -c:v libx264 -c:a copy out.mkv) or install an ffmpeg that decodes it"
        ) from error


def check_first_frame_size(first_frame: Path | None, backend: ModifyBackend) -> None:
    """Refuses a first-frame image larger than the service takes, before anything is uploaded or paid.

    Raises:
        InvalidInputError: naming the image, its size, the limit and what to do.
    """
    if first_frame is None:
        return
    if not backend.takes_first_frame:
        raise InvalidInputError(
            f"{first_frame}: {backend.name} takes no image (prompt only); put the style into the prompt and "
            "drop first_frame, or use a backend that takes one (see the README's table of backends)"
        )
    limit = getattr(backend, "max_image_bytes", None) or backend.max_upload_bytes
    size = Path(first_frame).stat().st_size
    if size > limit:
        raise InvalidInputError(
            f"{first_frame}: the first frame is {size:,} bytes; {backend.name} takes at most {limit:,}; "
            "give a smaller image (a JPEG, or the video's own size)"
        )


def deployment_prefilled(params: ModifyVideoParameters) -> ModifyVideoParameters | None:
    """The parameters the run's Custom run form showed before the user changed anything, for a deployment's run.

    Prefect's form is filled with the deployment's parameters (the model's defaults for the
    rest) and sends every field back, so a value still equal to that one is not the user's
    choice (``fields_set_by_run``). ``None`` outside a deployment's own run (a Python call, a
    subflow of a batch, the CLI).
    """
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    deployment_id = getattr(getattr(context, "flow_run", None), "deployment_id", None)
    if deployment_id is None:
        return None
    with get_client(sync_client=True) as client:
        deployed = client.read_deployment(deployment_id).parameters or {}
    try:
        return parameters_from_flow({**deployed, "source": params.source})
    except (ValueError, TypeError):  # a deployment saved with parameters this version refuses: nothing counts as prefilled
        return None


def apply_preset(params: ModifyVideoParameters, prefilled: ModifyVideoParameters | None = None) -> ModifyVideoParameters:
    """The parameters with the named preset filling what the run did not set itself (``fields_set_by_run``).

    Args:
        params: The run's parameters.
        prefilled: What the run's form prefilled (``deployment_prefilled``): values still equal
            to it are filled by the preset too.
    """
    if not params.preset:
        return params
    preset = load_preset(params.preset)
    explicit = fields_set_by_run(params, prefilled)
    filled = preset.applied_fields(params, explicit)
    try:
        logger = get_run_logger()
    except MissingContextError:  # outside a run (the CLI's early check): nothing to log to
        logger = None
    if logger is not None:
        logger.info(
            "preset %r applied: it set %s", params.preset,
            ", ".join(filled) if filled else "nothing (the run set every field the preset holds)",
        )
    return preset.apply(params, explicit)


def check_inputs(params: ModifyVideoParameters) -> None:
    """Checks the inputs of a run before anything starts (used by the CLI for a clear, early error).

    Local files are probed; URLs and ``block://`` references are only checked for form here
    (the flow fetches them).

    Raises:
        InvalidInputError: naming the input and what to do.
    """
    params = apply_preset(params)
    destination = params.resolved_output()
    for reference in (params.source, destination, params.first_frame):
        if reference and is_block_reference(reference):
            parse_block_reference(reference)
    check_output_is_not_source(params.source, destination)
    first_frame = local_path(params.first_frame) if params.first_frame and not is_remote(params.first_frame) else None
    if not is_remote(params.source):
        info = probe_video(local_path(params.source))
        # A remote output is written locally first, then delivered: check it as such a file.
        local_output = (
            Path(tempfile.gettempdir()) / "modify-video-check" / location_name(destination)
            if is_remote(destination)
            else local_path(destination)
        )
        check_paths(info, local_output, first_frame)
    backend = create_checked_backend(params)
    if first_frame is not None and first_frame.is_file():
        check_first_frame_size(first_frame, backend)


FETCH_PREFIX = "modify-video-fetch-"
"""The fetch folders in the system temp folder (a downloaded source, first frame, remote output)."""
WORK_PATTERN = ".*.work-*"
"""The hidden work folders beside an output (``.<stem>.work-XXXX``: extracted and conformed clips)."""


def remove_dead_runs_folders(pattern: str, parent: Path | None) -> None:
    """Removes the folders named ``pattern`` in ``parent`` (the temp folder) that a run killed on this host left.

    The modify-video, preview and batch flows call it before making their own scratch folders (``make_scratch_dir``).
    """
    removed = remove_dead_scratch_dirs(pattern, parent)
    if removed:
        get_run_logger().info(
            "removed %d folder(s) left by runs that died: %s", len(removed), ", ".join(str(p) for p in removed)
        )


def video_run_name(source: str | None, mode: str | None = None) -> str:
    """A run's name after its video (and mode): ``film-flex_2`` for ``/videos/film.mp4`` in flex_2.

    Example:
        >>> video_run_name("block://local-file-system/in/trip/beach.mov", "adhere_1"), video_run_name("a.mp4")
        ('beach-adhere_1', 'a')
    """
    stem = Path(location_name(source or "") or "video").stem or "video"
    return f"{stem}-{mode}" if mode else stem


def _modify_video_run_name() -> str:
    from prefect.runtime import flow_run

    parameters = flow_run.parameters
    return video_run_name(parameters.get("source"), parameters.get("mode"))


def _rename_run(name: str) -> None:
    """Renames the current flow run (the mode a preset chose is known only once it is applied)."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None or context.flow_run.name == name:
        return
    with get_client(sync_client=True) as client:
        client.update_flow_run(context.flow_run.id, name=name)


def _takes_flow_parameters(fn):
    """Gives ``fn`` (which takes ``**arguments``) the flat parameters of ``flow_signature`` (Prefect's run form)."""
    signature = flow_signature()
    fn.__signature__ = signature.replace(return_annotation=ModifyVideoResult)
    fn.__annotations__ = {name: p.annotation for name, p in signature.parameters.items()} | {"return": ModifyVideoResult}
    return fn


@flow(
    name="modify-video",
    description="Restyles a video of any length through a modify-video service.",
    flow_run_name=_modify_video_run_name,
)
@_takes_flow_parameters
def modify_video(**arguments) -> ModifyVideoResult:
    """Restyles a whole video: splits it into clips the service accepts, sends each once, joins them.

    The output has the source's frame count, frame rate, size and audio (copied unchanged).
    Paid results are stored by content, so a re-run after a crash or a failure pays only for
    the segments it does not have. The parameters are those of ``ModifyVideoParameters``:
    source, prompt, mode, first_frame, output, preset and backend, then the groups limits,
    store, seams and retries (``parameters.flow_signature``); empty ones are not set.

    Returns:
        Where the output is, how many segments, frames and paid calls, and the cost.

    Raises:
        InvalidInputError: the source, first frame or output path cannot be used.
        SegmentsFailedError: some segments failed for good; the message lists them.

    Example:
        ```python
        from prefect_modify_video.flows import modify_video

        result = modify_video(source="film.mp4", prompt="warm vintage film", limits={"max_cost_usd": 5})
        print(result.output)
        ```
    """
    started = time.monotonic()
    params = parameters_from_flow(arguments)
    if params.preset:
        params = apply_preset(params, deployment_prefilled(params))
        _rename_run(video_run_name(params.source, params.mode))
    destination = params.resolved_output()
    remove_dead_runs_folders(f"{FETCH_PREFIX}*", None)
    fetch_dir = make_scratch_dir(FETCH_PREFIX)
    try:
        return _modify_fetched_video(params, destination, fetch_dir, started)
    except SegmentsFailedError:
        raise  # its event, with the run's cost, is emitted where it is raised
    except Exception as error:
        emit_run_event("failed", output=destination, error=_first_line(error))
        raise
    finally:
        shutil.rmtree(fetch_dir, ignore_errors=True)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def _modify_fetched_video(
    params: ModifyVideoParameters, destination: str, fetch_dir: Path, started: float
) -> ModifyVideoResult:
    """The flow's body once the source and first frame are local files."""
    logger = get_run_logger()
    check_output_is_not_source(params.source, destination)
    limit = params.max_source_bytes
    source = str(fetch_source(params.source, fetch_dir, kind="video", max_bytes=limit))
    first_frame = (
        str(fetch_source(params.first_frame, fetch_dir, kind="image", max_bytes=limit)) if params.first_frame else None
    )
    output = fetch_dir / location_name(destination) if is_remote(destination) else local_path(destination)
    # Errors about a fetched copy name the source as given (the copy is gone when the run ends).
    with errors_named_as(source, params.source):
        info = probe_source_video(source)
        check_not_an_output(info)
        check_output_path(info, output)
        check_decodable(info)
    if first_frame:
        with errors_named_as(first_frame, params.first_frame):
            check_image(first_frame)
    if info.dropped_streams:
        logger.warning(
            "%s: the output keeps the video and every audio stream; these are not carried over: %s",
            source, ", ".join(info.dropped_streams),
        )

    run = plan_run(params, info, planner=plan_video_segments)
    backend, plan, seams, estimate = run.backend, run.plan, run.seams, run.estimate_usd
    if first_frame:
        with errors_named_as(first_frame, params.first_frame):
            check_first_frame_size(Path(first_frame), backend)
    for warning in backend.prompt_warnings(params.prompt):
        logger.warning(warning)
    logger.info(
        "%s: %d frames at %s fps -> %d segments under %.1f s (%.2f s of overlaps), %dx%d to %s, estimated $%.2f",
        source, info.frames, info.frame_rate, len(plan.segments), run.max_segment_seconds, plan.overlap_s,
        *run.sent_size, backend.name, estimate, extra={INPUTS_CHECKED_RECORD_KEY: True},
    )

    if params.max_cost_usd is not None and estimate > params.max_cost_usd:
        raise BudgetExceededError(
            f"{source}: estimated ${estimate:.2f} for {len(plan.segments)} segments on {backend.name} is above "
            f"max_cost_usd=${params.max_cost_usd:.2f}; raise the budget or use a cheaper backend or model"
        )

    store = ResultStore(params.store_dir)
    # Before paying: room for the work files and the output beside it, and for the answers in the store
    # (a rough measure: the source's size three times, and once).
    source_bytes = Path(source).stat().st_size
    check_free_space({output.parent: 3 * source_bytes, store.root: source_bytes})
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        remove_dead_runs_folders(WORK_PATTERN, output.parent)
        work_dir = make_scratch_dir(f".{output.stem}.work-", output.parent)
    except OSError as error:
        raise InvalidInputError(
            f"{output.parent}: cannot write there ({error.strerror or error}); choose a writable output folder"
        ) from error
    settings = ModifySettings.for_run(
        params, run, source=source, first_frame=first_frame, store=store, work_dir=work_dir, mode=params.mode
    )
    progress_artifact = RunProgressArtifact(len(plan.segments))
    try:
        retries = params.retries
        segment_task = modify_video_segment.with_options(
            retries=retries.segment_retries,
            retry_delay_seconds=exponential_backoff(retries.retry_delay_seconds) if retries.retry_delay_seconds else 0,
        )
        finisher = SegmentFinisher(plan, info, str(work_dir), seams, backend.max_dimension)
        rows, finished, failures = _run_segments(
            plan, info, settings, backend, progress_artifact, segment_task, run.estimates_usd, seams.sequential,
            finisher, output=destination,
        )
        billed = billed_calls(settings, range(len(plan.segments)))
        clear_billing_records(settings, range(len(plan.segments)))  # added up: the summary holds them now
        summary = RunSummary(
            source=source, backend=backend.name, free=backend.is_free, mode=params.mode, prompt=params.prompt, segments=len(plan.segments),
            paid=len(billed), reused=sum(1 for r in rows if r.get("paid") is False),
            frames=info.frames, frame_rate=info.frame_rate, duration_s=plan.duration_s,
            billed_s=plan.billed_s, overlap_s=plan.overlap_s,
            cost_usd=sum(call.cost_usd for call in billed),
            remaining_credits=next(
                (r["remaining_credits"] for r in reversed(rows) if r.get("remaining_credits") is not None), None),
            anchored=seams.anchor_colours,
        )
        if failures:
            summary.seconds = time.monotonic() - started
            report_modify_video_run(plan, rows, summary, failures)
            emit_run_event("failed", output=destination, summary=summary,
                           error=f"{len(failures)} of {len(plan.segments)} segments failed")
            raise SegmentsFailedError(
                f"{len(failures)} of {len(plan.segments)} segments failed ({summary.paid} paid calls, "
                f"${summary.cost_usd:.2f}); the other "
                f"{len(plan.segments) - len(failures)} are stored and a re-run sends only these:\n"
                + "\n".join(failures),
                summary.paid,
                summary.cost_usd,
            )
        join_video_segments(finished, info, str(output))
        sheet_path = output.with_name(f"{output.stem}.seams.png")
        metrics, sheet = report_video_seams(source, str(output), plan, str(sheet_path), seams.seam_threshold)
        location = deliver_output(output, destination) if is_remote(destination) else os.path.abspath(output)
        if sheet and is_remote(destination):
            sheet = deliver_output(Path(sheet), sibling_location(destination, sheet_path.name))
        elif sheet:
            sheet = os.path.abspath(sheet)
        where, url = locate(destination if is_remote(destination) else location)
        summary = summary.model_copy(update=dict(
            output=location,
            output_where=where,
            output_url=url,
            contact_sheet_image=image_data_uri(sheet_path),
            seconds=time.monotonic() - started,
            contact_sheet=sheet,
            seams=len(metrics),
            seams_on_cuts=len(metrics) - len(judged_seams(metrics)),
            seams_flagged=flagged_seams(metrics),
            worst_seam_ratio=max((m.ratio for m in judged_seams(metrics)), default=None),
        ))
        report_modify_video_run(plan, rows, summary, failures)
        emit_run_event("completed", output=destination, summary=summary)
        logger.info("output written to %s", location)
        return ModifyVideoResult.from_summary(summary)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def _run_segments(
    plan: SegmentPlan,
    info: VideoInfo,
    settings: ModifySettings,
    backend: ModifyBackend,
    progress_artifact: RunProgressArtifact,
    segment_task,
    estimates: dict[int, float],
    sequential: bool,
    finisher: SegmentFinisher,
    output: str | None = None,
):
    """Runs one task per segment (extract → modify → conform → finish), with ``settings.concurrency`` paid calls in flight.

    The workers are more than the paid calls (which the segment task bounds itself), so that
    extracting and conforming go on while calls wait on the service. The run's first-frame
    image goes with the segment at frame 0. In the ``sequential`` mode a segment starting inside
    a shot waits for the previous one and gets its answer's frame as first frame (a
    ``neighbour_first_frame`` task between the two; the segment is extracted once it has it). The segments
    ``finisher.as_conformed`` are conformed ready to join (``tasks.seams.finished_in_conform``); each other
    segment is finished (``tasks.seams.finish_segment``, one at a time in this process) as soon as it and the
    next segment are conformed, while later segments still wait on the service.

    Returns:
        Per-segment rows for the report, the clips to join (none when a segment failed), and failure lines.
    """
    rows: dict[int, dict] = {}
    failures: list[str] = []
    finishing: dict[int, PrefectFuture] = {}  # the finish tasks, by segment (none for those finished in conform)
    ready_to_join = finisher.as_conformed
    size = settings.sent_size
    keys: dict[int, str] = {}
    for segment in plan.segments:
        first_frame_key = settings.first_frame_sha256 if segment.index == 0 else None
        if sequential and segment.index > 0 and not segment.cut_before:
            first_frame_key = keys[segment.index - 1]
        keys[segment.index] = segment_key(settings, segment, first_frame_key)
    with segment_task_runner(settings.concurrency) as runner, ThreadPoolTaskRunner(max_workers=1) as finish_runner:
        # On a cluster with a block store, the segment tasks exchange files through it (tasks.work_files).
        shared = shared_work_location(settings.store_dir, settings.run_key)
        task_info = shared_source(info, shared)
        if shared:
            settings = settings.model_copy(update={
                name: share_file(value, shared, f"run/{Path(value).name}")
                for name in ("first_frame", "reference_frame") if (value := getattr(settings, name))
            })
        segment_futures = {}
        previous_done = None
        for segment in plan.segments:
            first_frame, neighbour = (settings.first_frame if segment.index == 0 else None), None
            if sequential and segment.index > 0 and not segment.cut_before:
                first_frame = neighbour = runner.submit(
                    neighbour_first_frame,
                    parameters={
                        "previous_result": previous_done,
                        "previous": plan.segments[segment.index - 1],
                        "segment": segment,
                        "size": size,
                        "work_dir": settings.work_dir,
                        "shared": shared,
                    },
                )
            done = runner.submit(
                segment_task,
                parameters={
                    "info": task_info,
                    "segment": segment,
                    "settings": settings,
                    "key": keys[segment.index],
                    "estimated_cost_usd": estimates[segment.index],
                    "first_frame": first_frame,
                    "max_dimension": backend.max_dimension,
                    "max_bytes": backend.max_upload_bytes,
                    "final": segment.index in ready_to_join,
                    "pending": segment.index not in ready_to_join,
                    "shared": shared,
                },
            )
            segment_futures[done] = (segment, neighbour)
            previous_done = done
        progress = SegmentProgress(total=len(plan.segments), free=backend.is_free)
        for future in as_completed(list(segment_futures)):
            segment, neighbour = segment_futures[future]
            try:
                done: SegmentResult = future.result()
                result = done.modified
                ready = finisher.add(
                    segment.index,
                    str(local_file(done.conformed, settings.work_dir)),
                    # none for a backend that read the source (``reads_source``)
                    str(local_file(done.extracted, settings.work_dir)) if done.extracted is not None else None,
                )
                for index in ready:
                    if not failures and index not in ready_to_join:  # a run with a failed segment joins nothing
                        finishing[index] = finish_runner.submit(
                            finish_segment, parameters={"finisher": finisher, "index": index}
                        )
                rows[segment.index] = {**result.model_dump(), "state": "done"}
                progress.record(paid=result.paid)
                emit_segment_event(
                    "paid" if result.paid else "reused", index=segment.index, output=output,
                    backend=backend.name, mode=settings.mode, cost_usd=result.cost_usd if result.paid else 0.0,
                )
            except Exception as error:  # noqa: BLE001 - each failure is reported in the flow's error
                step, error = _failed_step_error(error, segment, future, neighbour)
                kind = type(error).__name__
                rows[segment.index] = {"index": segment.index, "state": f"failed: {kind}", "paid": None}
                failures.append(
                    f"segment {segment.name} ({segment.start_s:.2f}-{segment.end_s:.2f} s): "
                    + (f"{step} failed: " if step else "") + f"{kind}: {error}"
                )
                progress.record(paid=None)
                emit_segment_event(
                    "failed", index=segment.index, output=output, backend=backend.name, mode=settings.mode,
                    error=_first_line(error),
                )
            progress_artifact.show(progress)
            get_run_logger().info("progress: %s", progress.describe(), extra={PROGRESS_RECORD_KEY: progress})
        if shared:
            remove_shared_folder(shared)
        wait(list(finishing.values()))  # before the work folder goes
    failures.sort()
    if any("InsufficientCreditsError" in line for line in failures):
        failures.insert(0, "the account ran out of credits: add credits, then re-run the same parameters")
    finished = [] if failures else [
        part for segment in plan.segments
        for part in (finishing[segment.index].result() if segment.index in finishing else finisher.finish(segment.index))
    ]
    return list(rows.values()), finished, failures


class PreviousSegmentFailedError(ModifyVideoError):
    """Raised for a segment of the sequential mode that was not sent because the segment before it failed."""


def _failed_step_error(error: Exception, segment, future, neighbour=None) -> tuple[str | None, Exception]:
    """The step of a segment that failed (``extract``, ``modify``, ``conform``, ``first frame``) and its own error.

    A task whose upstream failed never runs: asking it for its result raises Prefect's
    ``UnfinishedRun`` ("Run is in PENDING state"), which says nothing of the cause. In the
    sequential mode a segment's task needs its ``neighbour`` (``tasks.segment.neighbour_first_frame``),
    which needs the segment before it.

    Args:
        error: What asking for the segment's result raised.
        segment: The segment.
        future: The segment task's future.
        neighbour: The future of its first-frame image in the sequential mode, if any.

    Returns:
        The failed step's name (``None`` when not known) and its own error, else ``error``.
    """
    for step, task_future in (("first frame", neighbour), (None, future)):
        state = getattr(task_future, "state", None)
        if state is not None and (state.is_failed() or state.is_crashed()):
            try:
                task_future.result()
            except Exception as cause:  # noqa: BLE001 - the cause is what is reported
                return step or failed_step(cause), cause
    if getattr(neighbour, "state", None) is not None and neighbour.state.is_pending():
        return None, PreviousSegmentFailedError(
            f"not sent: the segment before it failed, and in the sequential mode its first frame is that "
            f"segment's answer; a re-run sends it once segment {segment.index - 1:05d} is done"
        )
    return failed_step(error), error
