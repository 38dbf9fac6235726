"""The batch flow: many sources (local, URL, block), bounded concurrency, child runs, failure isolation."""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import uuid
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
)
from prefect.filesystems import LocalFileSystem
from pydantic import ValidationError

from conftest import read_frames, saturation
from prefect_modify_video.blocks.presets import ModifyVideoPreset
from prefect_modify_video.flows.batch import BatchParameters, BatchSettings, modify_video_batch, output_names
from prefect_modify_video.media.probe import probe_video
from prefect_modify_video.media.sample import make_sample_video

pytestmark = pytest.mark.slow  # run by `make test-slow` (CI runs both)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("batch-src")
    return {
        name: make_sample_video(folder / f"{name}.mp4", seconds=seconds, width=160, height=90, fps=30)
        for name, seconds in (("a", 3), ("b", 2.5), ("c", 2))
    }


@pytest.fixture(scope="module")
def http_folder(videos):
    """The sample videos served over HTTP on 127.0.0.1."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(videos["a"].parent))
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def settings(store_dir: Path, **overrides):
    return BatchSettings(
        **{"prompt": "black and white", "mode": "reimagine_3", "backend": {"name": "local"},
           "max_segment_seconds": 2, "store_dir": str(store_dir), **overrides}
    )


async def _children(flow_run_id):
    async with get_client() as client:
        return await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
        )


async def _flow_run(flow_run_id):
    async with get_client() as client:
        return await client.read_flow_run(flow_run_id)


async def _artifact(flow_run_id, key):
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return next(a for a in artifacts if a.key == key)


def _max_overlap(runs) -> int:
    events = sorted([(r.start_time, 1) for r in runs] + [(r.end_time, -1) for r in runs], key=lambda e: (e[0], e[1]))
    current = peak = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


def test_one_bad_video_fails_alone(videos, http_folder, tmp_path, store_dir):
    storage = tmp_path / "storage"
    (storage / "in").mkdir(parents=True)
    (storage / "in" / "c.mp4").write_bytes(videos["c"].read_bytes())
    block = f"batch-{uuid.uuid4().hex[:8]}"
    LocalFileSystem(basepath=str(storage)).save(block)
    bad = tmp_path / "bad.mp4"
    bad.write_text("this is not a video")
    out = tmp_path / "out"
    params = BatchParameters(
        sources=[str(videos["a"]), str(bad), f"{http_folder}/b.mp4", f"block://local-file-system/{block}/in/c.mp4"],
        output_folder=str(out),
        settings=settings(store_dir),
        max_concurrent_videos=2,
        work_dir=str(tmp_path / "work"),
    )
    state = modify_video_batch(params, return_state=True)

    assert state.is_failed()
    assert "1 of 4 videos failed" in state.message and "bad.mp4: InvalidInputError" in state.message
    for name in ("a", "b", "c"):
        output = out / f"{name}.modified.mp4"
        assert probe_video(output).frames == probe_video(videos[name]).frames, name
        assert saturation(read_frames(output)) < 3 < 40 < saturation(read_frames(videos[name]))
    assert not (out / "bad.modified.mp4").exists()
    assert not any((tmp_path / "work").iterdir()), "downloads and staged outputs are cleaned up"

    flow_run_id = state.state_details.flow_run_id
    children = asyncio.run(_children(flow_run_id))
    assert len(children) == 4 and {c.flow_id for c in children} == {children[0].flow_id}
    assert sorted(c.state.type.value for c in children) == ["COMPLETED", "COMPLETED", "COMPLETED", "FAILED"]
    assert _max_overlap(children) <= 2

    table = json.loads(asyncio.run(_artifact(flow_run_id, "modify-video-batch")).data)
    rows = {row["source"]: row for row in table}
    assert [row["source"] for row in table] == params.sources, "rows in the order given"
    assert rows[str(bad)]["state"] == "Failed" and "not a readable video" in rows[str(bad)]["error"]
    assert rows[f"{http_folder}/b.mp4"]["output"] == str(out / "b.modified.mp4")
    assert all(rows[s]["state"] == "Completed" and rows[s]["billed_calls"] == rows[s]["segments"] == 2
               for s in params.sources if s != str(bad))


def test_block_folder_in_and_out_with_a_preset(videos, tmp_path, store_dir):
    storage = tmp_path / "storage"
    (storage / "in").mkdir(parents=True)
    for name in ("a", "c"):
        (storage / "in" / f"{name}.mp4").write_bytes(videos[name].read_bytes())
    (storage / "in" / ".partial.mp4").write_bytes(b"hidden")
    (storage / "in" / "a.modified.mp4").write_bytes(b"an earlier output")
    block = f"batch-{uuid.uuid4().hex[:8]}"
    LocalFileSystem(basepath=str(storage)).save(block)
    preset = f"preset-{uuid.uuid4().hex[:8]}"
    ModifyVideoPreset(mode="reimagine_3", prompt="black and white", max_segment_seconds=2).save(preset)

    params = BatchParameters(
        folder=f"block://local-file-system/{block}/in/",
        output_folder=f"block://local-file-system/{block}/out/",
        preset=preset,
        settings=BatchSettings(mode="adhere_1", backend={"name": "local"}, store_dir=str(store_dir)),
        max_concurrent_videos=1,
    )
    state = modify_video_batch(params, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert [v.source for v in result.videos] == [
        f"block://local-file-system/{block}/in/a.mp4", f"block://local-file-system/{block}/in/c.mp4"
    ]
    assert all(v.output.startswith(f"block://local-file-system/{block}/out/") for v in result.videos)
    for name in ("a", "c"):
        assert probe_video(storage / "out" / f"{name}.modified.mp4").frames == probe_video(videos[name]).frames

    children = asyncio.run(_children(state.state_details.flow_run_id))
    assert len(children) == 2 and _max_overlap(children) == 1
    assert sorted(child.name for child in children) == ["a-adhere_1", "c-adhere_1"], "children named after their video"
    assert asyncio.run(_flow_run(state.state_details.flow_run_id)).name == "batch-in"
    for child in children:
        given = child.parameters
        assert given["mode"] == "adhere_1", "the batch's explicit mode beats the preset's"
        assert given["prompt"] == "black and white" and given["limits"]["max_segment_seconds"] == 2, "the rest from the preset"
    # Same store: a second batch pays for nothing.
    again = modify_video_batch(params)
    assert [v.billed_calls for v in again.videos] == [0, 0] and [v.reused_segments for v in again.videos] == [2, 2]


def test_url_source_without_output_folder_fails_alone(videos, http_folder, tmp_path, store_dir):
    local = tmp_path / "a.mp4"
    local.write_bytes(videos["a"].read_bytes())
    state = modify_video_batch(
        BatchParameters(sources=[f"{http_folder}/c.mp4", str(local)], settings=settings(store_dir)),
        return_state=True,
    )
    assert state.is_failed() and "c.mp4: InvalidInputError" in state.message and "output folder" in state.message
    assert probe_video(tmp_path / "a.modified.mp4").frames == probe_video(local).frames, "beside a local source"


def test_output_names_are_unique():
    assert output_names(["/x/film.mp4", "https://h/y/film.mp4?s=1", "block://a/b/FILM.mp4", "/x/clip.avi"]) == [
        "film.modified.mp4", "film-2.modified.mp4", "FILM-3.modified.mp4", "clip.modified.mkv"
    ]


def test_parameters_need_videos_and_exclude_per_video_fields():
    with pytest.raises(ValidationError, match="give sources, a folder, or both"):
        BatchParameters()
    assert not {"source", "output", "first_frame"} & set(BatchSettings.model_fields)
    assert {"prompt", "mode", "backend", "max_segment_seconds", "store_dir"} <= set(BatchSettings.model_fields)
    schema = modify_video_batch.parameters.model_dump()
    assert "BatchSettings" in schema["definitions"] and "max_concurrent_videos" in json.dumps(schema)
