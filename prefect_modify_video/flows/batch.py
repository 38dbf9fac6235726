"""The ``modify-video-batch`` flow: many videos, each restyled by the ``modify-video`` flow as a child run.

Each video runs in a task of the batch (``restyle-video-NNN``) that fetches the source when it
is a URL or a ``block://`` reference, calls ``modify_video`` (a subflow: a child run of the
batch run, with its own segments, artifacts and state) and delivers the output. At most
``max_concurrent_videos`` run at once. A video that fails fails alone: the others finish, then
the batch ends Failed with one line per failed video. A table artifact lists every video.

With ``deployment`` set, the videos run elsewhere instead: each is one flow run of that
``modify-video`` deployment (``run_deployment``, not waited on inside the call), started on
whichever worker of the deployment's work pool picks it up. The batch keeps at most
``max_concurrent_videos`` of them in flight, polls their states, submits a crashed one again
(at most ``max_resubmits`` times: its machine or process died; the new run reuses what the
store holds) and reads each finished one's segment table. Sources, outputs and the result store
must then be places every machine reaches (``block://`` references, or URLs for sources).
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from prefect_modify_video.errors import InvalidInputError, ModifyVideoError
from prefect_modify_video.flows.modify_video import (
    apply_preset,
    modify_video,
    remove_dead_runs_folders,
    video_run_name,
)
from prefect_modify_video.parameters import GroupedOptions, Location, ModifyVideoParameters, field_definitions, flow_arguments
from prefect_modify_video.media.join import default_output_path
from prefect_modify_video.storage.blocks import deliver_output
from prefect_modify_video.storage.download import DEFAULT_MAX_BYTES, fetch_source, list_videos
from prefect_modify_video.storage.locations import (
    is_block_reference,
    is_remote,
    join_location,
    location_name,
    sibling_location,
)
from prefect_modify_video.storage.scratch import make_scratch_dir

# Parameters of one video that the batch sets per video (or, for the first frame, not at all:
# a restyled first frame belongs to one video).
BATCH_PREFIX = "modify-video-batch-"
"""The batch's scratch folders (downloaded sources, outputs on their way to a block), in ``work_dir`` or the temp folder."""

PER_VIDEO_FIELDS = frozenset({"source", "output", "first_frame", "preset"})

BatchSettings = create_model(
    "BatchSettings",
    __doc__=(
        "Settings shared by every video of a batch: the modify-video parameters without source, output and "
        "first frame."
    ),
    __base__=GroupedOptions,
    **field_definitions(ModifyVideoParameters, [n for n in ModifyVideoParameters.model_fields if n not in PER_VIDEO_FIELDS]),
)
"""A pydantic model with every field of ``ModifyVideoParameters`` except the per-video ones (options of a group
given flat too, as for the parameters)."""


class BatchParameters(BaseModel):
    """Which videos, where their outputs go, the settings they share, and how many run at once.

    Addresses carrying credentials are refused without repeating them (``parameters.refuse_credentials``).
    """

    model_config = ConfigDict(hide_input_in_errors=True)

    sources: list[Location] = Field(
        default_factory=list,
        title="Sources",
        description="Videos to restyle: local paths, http(s) URLs or storage blocks' files, e.g. block://local-file-system/my-folder/film.mp4.",
    )
    folder: Location | None = Field(
        default=None,
        title="Folder",
        description=(
            "A local folder or a block:// folder (block://local-file-system/my-videos/in/): every video file in it "
            "is restyled too (by extension; hidden files and earlier outputs *.modified.* are skipped)."
        ),
    )
    recursive: bool = Field(default=False, description="Whether the folder's sub-folders are searched too.")
    output_folder: Location | None = Field(
        default=None,
        title="Output folder",
        description=(
            "Local folder or block:// folder for the outputs, named NAME.modified.EXT. Empty: beside each "
            "source (a URL source then needs an output folder)."
        ),
    )
    preset: str | None = Field(
        default=None,
        title="Preset",
        description="Name of a saved Modify Video Preset block; the settings given here override it.",
    )
    settings: BatchSettings = Field(  # type: ignore[valid-type]
        default_factory=BatchSettings,
        title="Settings",
        description="Prompt, mode, backend and the other settings every video shares.",
    )
    max_concurrent_videos: int = Field(
        default=2,
        ge=1,
        le=32,
        title="Videos at once",
        description=(
            "Videos restyled at the same time (with a deployment: its flow runs in flight). Each runs up to its "
            "own concurrency of paid calls, so the service sees up to this many times that."
        ),
    )
    deployment: str | None = Field(
        default=None,
        title="Deployment",
        description=(
            "A modify-video deployment, e.g. 'modify-video/modify-video-local': each video then runs as its own flow "
            "run of it, on the workers of its work pool; sources must be block:// references or URLs, and the "
            "output folder and result store block:// folders, which every machine reaches. Empty: the videos "
            "run in this process."
        ),
    )
    max_resubmits: int = Field(
        default=1,
        ge=0,
        le=5,
        title="Resubmits of a crashed video",
        description=(
            "With a deployment: times a video whose flow run crashed (its process or machine died) is submitted "
            "again; the new run reuses every segment the store holds."
        ),
    )
    poll_seconds: float = Field(
        default=5.0,
        gt=0,
        le=300,
        title="Poll interval (s)",
        description="With a deployment: seconds between checks of the videos' flow runs.",
    )
    max_source_bytes: int = Field(
        default=DEFAULT_MAX_BYTES, ge=1, description="Largest source file downloaded (10 GiB by default)."
    )
    work_dir: str | None = Field(
        default=None,
        description="Folder for downloaded sources and outputs on their way to a block; the system's temp folder when empty.",
    )

    @model_validator(mode="after")
    def _has_videos(self) -> "BatchParameters":
        if not self.sources and not self.folder:
            raise ValueError("give sources, a folder, or both")
        return self


class BatchVideoResult(BaseModel):
    """What happened to one video of a batch."""

    source: str = Field(description="The source as given.")
    output: str | None = Field(default=None, description="Where the output is (local path or block reference).")
    state: str = Field(description="Completed or Failed (with a deployment: its flow run's state, e.g. Crashed).")
    segments: int | None = None
    frames: int | None = None
    billed_calls: int | None = None
    free: bool = Field(default=False, description="Whether its backend costs nothing (its calls are not paid).")
    reused_segments: int | None = None
    cost_usd: float | None = None
    seconds: float | None = None
    error: str | None = Field(default=None, description="Why it failed: the error's type and first line.")
    flow_run_id: str | None = Field(default=None, description="With a deployment: the video's (last) flow run.")
    submissions: int | None = Field(
        default=None, description="With a deployment: flow runs submitted for the video (more than 1: resubmitted)."
    )


class BatchResult(BaseModel):
    """Every video of a batch, in the order given."""

    videos: list[BatchVideoResult]

    @property
    def failed(self) -> list[BatchVideoResult]:
        """The videos that failed."""
        return [v for v in self.videos if v.state != "Completed"]


class BatchFailedError(ModifyVideoError):
    """Raised at the end of a batch in which some videos failed; the message lists them."""


def batch_sources(params: BatchParameters) -> list[str]:
    """The batch's sources: those given, then the folder's videos, each once, in that order."""
    sources = [s.strip() for s in params.sources if s.strip()]
    if params.folder:
        sources += list_videos(params.folder, recursive=params.recursive)
    seen: set[str] = set()
    return [s for s in sources if not (s in seen or seen.add(s))]


def output_names(sources: list[str]) -> list[str]:
    """``<stem>.modified<ext>`` for each source, made unique (``-2``, ``-3``...) among the batch."""
    names: list[str] = []
    used: set[str] = set()
    for index, source in enumerate(sources):
        name = default_output_path(Path(location_name(source) or f"video-{index:03d}.mp4")).name
        stem, _, extension = name.rpartition(".modified")
        candidate, k = name, 2
        while candidate.lower() in used:
            candidate = f"{stem}-{k}.modified{extension}"
            k += 1
        used.add(candidate.lower())
        names.append(candidate)
    return names


def output_location(source: str, name: str, output_folder: str | None) -> str | None:
    """Where a video's output goes: in the output folder, else beside a block source, else ``None``
    (modify_video's default beside a local source).

    Raises:
        InvalidInputError: a URL source and no output folder.
    """
    if output_folder:
        return join_location(output_folder, name)
    if is_remote(source):
        return sibling_location(source, name)
    return None


def _error_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".strip()


def _video_task_name() -> str:
    """``video-003-beach``: the video's position in the batch and its name."""
    from prefect.runtime import task_run

    parameters = task_run.parameters
    return f"video-{parameters.get('index', 0):03d}-{video_run_name(parameters.get('source'))}"


@task(
    name="restyle-video",
    description="Fetches one source, restyles it with the modify-video flow (a child run), delivers the output.",
    task_run_name=_video_task_name,
    cache_policy=NO_CACHE,
)
def restyle_batch_video(
    index: int,
    source: str,
    output_name: str,
    output_folder: str | None,
    settings: dict[str, Any],
    explicitly_set: list[str],
    preset: Any,
    work_root: str,
    max_source_bytes: int,
) -> BatchVideoResult:
    """Runs one video of a batch; raises whatever made it fail.

    Args:
        index: Position of the video in the batch.
        source: Local path, URL or ``block://`` reference.
        output_name: File name of the output.
        output_folder: The batch's output folder (``None``: beside the source).
        settings: The shared settings, as given (``exclude_unset``).
        explicitly_set: Names of the settings the batch set, which a preset does not override.
        preset: The loaded ``ModifyVideoPreset``, or ``None``.
        work_root: The batch's work folder; this video uses ``<work_root>/<index>``.
        max_source_bytes: Largest download accepted.
    """
    logger = get_run_logger()
    started = time.monotonic()
    work = Path(work_root) / f"{index:03d}"
    try:
        destination = output_location(source, output_name, output_folder)
        local_source = fetch_source(source, work / "source", max_bytes=max_source_bytes)
        if is_remote(source):
            logger.info("%s: fetched to %s", source, local_source)
        deliver = destination is not None and is_remote(destination)
        local_output = str(work / "output" / output_name) if deliver else destination
        params = ModifyVideoParameters(source=str(local_source), output=local_output, **settings)
        if preset is not None:
            params = preset.apply(params, explicitly_set={*explicitly_set, "source", "output"})
        if params.first_frame and is_remote(params.first_frame):  # a preset's first frame may be a URL or block
            first_frame = fetch_source(params.first_frame, work / "first-frame", kind="image")
            params = params.model_copy(update={"first_frame": str(first_frame)})
        result = modify_video(**flow_arguments(params))
        location = deliver_output(Path(result.output), destination) if deliver else result.output
        if deliver:
            Path(result.output).unlink(missing_ok=True)
            logger.info("%s: output delivered to %s", source, location)
        return BatchVideoResult(
            source=source,
            output=location,
            state="Completed",
            segments=result.segments,
            frames=result.frames,
            billed_calls=result.billed_calls,
            free=result.free,
            reused_segments=result.reused_segments,
            cost_usd=result.cost_usd,
            seconds=time.monotonic() - started,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def child_parameters(params: BatchParameters, sources: list[str], names: list[str]) -> list[dict[str, Any]]:
    """The parameters of each video's flow run of ``params.deployment``, as JSON (``flow_arguments``).

    Every location must be one that any machine reaches: a worker may run on another machine,
    where the batch's local paths mean nothing (and a result store local to each worker would
    make each machine pay for a segment again).

    Raises:
        InvalidInputError: a source, the folder, the output folder, the result store or a
            preset's first frame is a local path; naming it and what to give instead.
    """
    where = f"the workers of deployment {params.deployment} may run on other machines"

    def refuse(location: str, what: str, advice: str) -> InvalidInputError:
        return InvalidInputError(f"{location}: {what} is a local path, which {where} cannot reach; {advice}")

    block_folder = "give a block:// folder, e.g. block://remote-file-system/s3-videos/out/"
    if params.folder and not is_block_reference(params.folder):
        raise refuse(params.folder, "the folder", "put the videos in a storage block and " + block_folder)
    if params.output_folder and not is_block_reference(params.output_folder):
        raise refuse(params.output_folder, "the output folder", block_folder)
    settings = params.settings.model_dump(exclude_unset=True)
    children = []
    for source, name in zip(sources, names):
        if not is_remote(source):
            raise refuse(source, "the source", "upload it to a storage block and give block://<block-type-slug>/"
                         "<block-name>/<path>, or an http(s) URL")
        child = ModifyVideoParameters(
            source=source, output=output_location(source, name, params.output_folder), preset=params.preset, **settings
        )
        children.append(flow_arguments(child, mode="json"))
    resolved = apply_preset(child)  # the same preset and settings for every video: checked once
    if not resolved.store_dir or not is_block_reference(resolved.store_dir):
        raise InvalidInputError(
            f"{resolved.store_dir or 'store_dir is empty (a folder under each worker’s PREFECT_HOME)'}: the result "
            f"store must be shared by every machine ({where}), else each pays for segments another one stored; "
            "give store_dir a block:// folder, e.g. block://remote-file-system/s3-videos/store/"
        )
    if resolved.first_frame and not is_remote(resolved.first_frame):
        raise refuse(resolved.first_frame, "the preset's first frame", "put it in a storage block and give its "
                     "block:// reference")
    return children


@dataclass
class _Child:
    """One video of a dispatched batch: its flow run's parameters and its submissions so far."""

    index: int
    source: str
    params: dict[str, Any]
    submissions: int = 0
    flow_run_id: UUID | None = None
    started: float | None = None


def _check_deployment(client, name: str) -> None:
    """Refuses a deployment that does not exist or is not one of the ``modify-video`` flow."""
    from prefect.exceptions import ObjectNotFound

    try:
        deployment = client.read_deployment_by_name(name)
    except (ObjectNotFound, ValueError) as error:
        raise InvalidInputError(
            f"{name}: no such deployment; deploy the modify-video flow (prefect deploy) and give "
            "'modify-video/<deployment-name>'"
        ) from error
    flow_name = client.read_flow(deployment.flow_id).name
    if flow_name != modify_video.name:
        raise InvalidInputError(f"{name}: a deployment of the {flow_name} flow; give one of {modify_video.name}")


def dispatch_videos(
    params: BatchParameters, sources: list[str], children: list[dict[str, Any]]
) -> list[BatchVideoResult]:
    """Runs each video as a flow run of ``params.deployment`` and follows them to the end.

    At most ``max_concurrent_videos`` runs are in flight; the others wait here (not in the work
    pool's queue, so the batch's cap holds whatever the pool's). Each run is created with the
    idempotency key ``<batch run>:<video>:<submission>``: a retried batch run gets its earlier
    runs back instead of new ones. A run that ends Crashed is submitted again, at most
    ``max_resubmits`` times; the new run reuses what the shared store holds.

    Args:
        params: The batch's parameters (deployment, caps, poll interval).
        sources: The sources, in order.
        children: Each video's parameters for the deployment (``child_parameters``).

    Returns:
        One result per video, in order: state, cost and output read from its run's segment table.
    """
    from prefect.deployments import run_deployment
    from prefect.runtime import flow_run as current_run

    logger = get_run_logger()
    batch_run = current_run.id or "no-run"
    waiting = deque(_Child(i, source, child) for i, (source, child) in enumerate(zip(sources, children)))
    in_flight: dict[int, _Child] = {}
    results: dict[int, BatchVideoResult] = {}
    with get_client(sync_client=True) as client:
        _check_deployment(client, params.deployment)
        while waiting or in_flight:
            while waiting and len(in_flight) < params.max_concurrent_videos:
                child = waiting.popleft()
                child.submissions += 1
                run = run_deployment(
                    params.deployment,
                    parameters=child.params,
                    timeout=0,
                    idempotency_key=f"{batch_run}:{child.index:03d}:{child.submissions}",
                    tags=["modify-video-batch"],
                )
                child.flow_run_id = run.id
                child.started = child.started or time.monotonic()
                in_flight[child.index] = child
                logger.info("%s: flow run %s (%s) submitted%s", child.source, run.name, run.id,
                            f" again (submission {child.submissions})" if child.submissions > 1 else "")
            time.sleep(params.poll_seconds)
            for index, child in list(in_flight.items()):
                run = client.read_flow_run(child.flow_run_id)
                if run.state is None or not run.state.is_final():
                    continue
                del in_flight[index]
                if run.state.is_crashed() and child.submissions <= params.max_resubmits:
                    logger.warning("%s: flow run %s crashed (%s); submitting it again", child.source, run.name,
                                   _first_line(run.state.message))
                    waiting.appendleft(child)
                    continue
                results[index] = _child_result(client, child, run)
                logger.info("%s: %s", child.source, results[index].state)
    return [results[index] for index in range(len(sources))]


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else ""


def _child_result(client, child: _Child, run) -> BatchVideoResult:
    """What a finished flow run of a video did, from its state and its segment table artifact (a failed run's
    table too: the segments it paid for before failing were billed)."""
    common = dict(
        source=child.source,
        state=run.state.name,
        flow_run_id=str(run.id),
        submissions=child.submissions,
        seconds=time.monotonic() - (child.started or time.monotonic()),
    )
    completed = run.state.is_completed()
    artifacts = client.read_artifacts(
        artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]), key=ArtifactFilterKey(any_=["modify-video-segments"])
        )
    )
    rows = json.loads(artifacts[0].data) if artifacts else []
    paid = [row for row in rows if row.get("paid") is True]
    return BatchVideoResult(
        **common,
        output=child.params.get("output") if completed else None,
        error=None if completed else f"{run.state.name}: {_first_line(run.state.message)}",
        segments=len(rows) if artifacts else None,
        billed_calls=len(paid) if artifacts else None,
        reused_segments=sum(1 for row in rows if row.get("paid") is False and row.get("state") == "done")
        if artifacts else None,
        cost_usd=sum(row.get("cost_usd") or 0.0 for row in paid) if artifacts else None,
    )


def _batch_run_name() -> str:
    """``batch-holidays``: after the batch's folder, else its first video (``batch-beach-and-2-more``)."""
    from prefect.runtime import flow_run

    params = flow_run.parameters.get("params")
    get = params.get if isinstance(params, dict) else lambda name: getattr(params, name, None)
    if get("folder"):
        return f"batch-{location_name(str(get('folder')).rstrip('/')) or 'folder'}"
    sources = list(get("sources") or [])
    more = f"-and-{len(sources) - 1}-more" if len(sources) > 1 else ""
    return f"batch-{video_run_name(sources[0] if sources else None)}{more}"


@flow(
    name="modify-video-batch",
    description="Restyles many videos, each as a child modify-video run.",
    flow_run_name=_batch_run_name,
)
def modify_video_batch(params: BatchParameters) -> BatchResult:
    """Restyles every video of a list and/or a folder, ``max_concurrent_videos`` at a time.

    With ``params.deployment`` each video is a flow run of that deployment (``dispatch_videos``).
    Otherwise they run in this process: URL and ``block://`` sources are downloaded first; outputs
    for a ``block://`` folder are written through the block. Each video's ``modify-video`` run is a
    child of this run. A video that fails does not stop the others; the batch then ends Failed,
    listing them.

    Args:
        params: Sources, output folder, shared settings and preset, concurrency.

    Returns:
        One result per video, in order (when every video was restyled).

    Raises:
        BatchFailedError: some videos failed (after the others finished); one line per video.
        InvalidInputError: the folder, preset or sources cannot be used at all.

    Example:
        ```python
        from prefect_modify_video.flows.batch import BatchParameters, modify_video_batch

        modify_video_batch(BatchParameters(
            folder="block://remote-file-system/s3-videos/in/",
            output_folder="block://remote-file-system/s3-videos/out/",
            preset="colour-grading",
        ))
        ```

        Each video as a flow run on the workers of a work pool (every location a block):

        ```python
        modify_video_batch(BatchParameters(
            folder="block://remote-file-system/s3-videos/in/",
            output_folder="block://remote-file-system/s3-videos/out/",
            settings={"prompt": "warm vintage film", "store_dir": "block://remote-file-system/s3-videos/store/"},
            deployment="modify-video/modify-video-pool",
            max_concurrent_videos=8,
        ))
        ```
    """
    logger = get_run_logger()
    sources = batch_sources(params)
    if not sources:
        raise InvalidInputError(f"{params.folder}: no video files found; check the folder and the file extensions")
    preset = None
    if params.preset:
        from prefect_modify_video.blocks.presets import load_preset

        preset = load_preset(params.preset)
        logger.info("preset %s fills: %s", params.preset,
                    ", ".join(preset.applied_fields(params.settings)) or "nothing (all set here)")
    names = output_names(sources)
    if params.settings.max_cost_usd is not None and not params.settings.budget:
        # One budget for the whole batch, kept in the store every video (and machine) shares.
        params.settings.budget = f"batch-{flow_run.get_id() or uuid.uuid4()}"
        logger.info("max_cost_usd $%.2f is the batch's budget %s: every video reserves from it",
                    params.settings.max_cost_usd, params.settings.budget)
    settings = params.settings.model_dump(exclude_unset=True)
    explicitly_set = sorted(params.settings.model_fields_set)
    logger.info("%d videos, %d at a time", len(sources), params.max_concurrent_videos)
    if params.deployment:
        children = child_parameters(params, sources, names)
        results = dispatch_videos(params, sources, children)
        return _finish(results)

    work_parent = Path(params.work_dir).expanduser() if params.work_dir else None
    if work_parent:
        work_parent.mkdir(parents=True, exist_ok=True)
    # A marked scratch folder: a later batch removes it if this one is killed.
    remove_dead_runs_folders(f"{BATCH_PREFIX}*", work_parent)
    work_root = make_scratch_dir(BATCH_PREFIX, work_parent)
    results: list[BatchVideoResult] = []
    try:
        with ThreadPoolTaskRunner(max_workers=params.max_concurrent_videos) as runner:
            futures = [
                runner.submit(
                    restyle_batch_video,
                    parameters={
                        "index": index,
                        "source": source,
                        "output_name": names[index],
                        "output_folder": params.output_folder,
                        "settings": settings,
                        "explicitly_set": explicitly_set,
                        "preset": preset,
                        "work_root": str(work_root),
                        "max_source_bytes": params.max_source_bytes,
                    },
                )
                for index, source in enumerate(sources)
            ]
            for source, future in zip(sources, futures):
                try:
                    results.append(future.result())
                except Exception as error:  # noqa: BLE001 - one video's failure is reported, not raised
                    logger.error("%s: failed: %s", source, _error_line(error))
                    # What it paid before failing was billed: it counts in the batch's paid calls and cost.
                    results.append(BatchVideoResult(
                        source=source, state="Failed", error=_error_line(error),
                        billed_calls=getattr(error, "billed_calls", None), cost_usd=getattr(error, "cost_usd", None),
                    ))
    finally:
        shutil.rmtree(work_root, ignore_errors=True)
    return _finish(results)


def _finish(results: list[BatchVideoResult]) -> BatchResult:
    """Reports the videos; raises ``BatchFailedError`` listing the failed ones, if any."""
    _report(results)
    failed = [r for r in results if r.state != "Completed"]
    if failed:
        raise BatchFailedError(
            f"{len(failed)} of {len(results)} videos failed (the others are done; a re-run pays only for "
            f"what is not stored; {sum(r.billed_calls or 0 for r in results if not r.free)} paid calls in all, "
            f"${sum(r.cost_usd or 0.0 for r in results):.2f}):\n" + "\n".join(f"{r.source}: {r.error}" for r in failed)
        )
    return BatchResult(videos=results)


def _report(results: list[BatchVideoResult]) -> None:
    table = [
        {
            "source": r.source,
            "output": r.output,
            "state": r.state,
            "segments": r.segments,
            "billed_calls": r.billed_calls,
            "reused_segments": r.reused_segments,
            "cost_usd": None if r.cost_usd is None else round(r.cost_usd, 4),
            "seconds": None if r.seconds is None else round(r.seconds, 1),
            "error": r.error,
            "flow_run_id": r.flow_run_id,
            "submissions": r.submissions,
        }
        for r in results
    ]
    create_table_artifact(table=table, key="modify-video-batch", description="Videos of the batch.")
    done = [r for r in results if r.state == "Completed"]
    lines = [
        "# Modify video batch",
        "",
        f"- **Videos**: {len(results)} ({len(done)} done, {len(results) - len(done)} failed)",
        f"- **Paid calls**: {sum(r.billed_calls or 0 for r in results if not r.free)}",
        *([f"- **Restyled free**: {sum(r.billed_calls or 0 for r in done if r.free)}"] if any(r.free for r in done) else []),
        f"- **Cost**: ${sum(r.cost_usd or 0.0 for r in results):.2f}",
    ]
    failed = [r for r in results if r.state != "Completed"]
    if failed:
        lines += ["", "## Failed", "", *[f"- `{r.source}`: {r.error}" for r in failed]]
    create_markdown_artifact(markdown="\n".join(lines), key="modify-video-batch-summary", description="Batch summary.")
