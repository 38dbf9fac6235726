"""The single-video flow in pipelines: URL and storage-block sources and outputs, presets, and a
deployment started by an event that names a new video."""

from __future__ import annotations

import asyncio
import functools
import http.server
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.filesystems import LocalFileSystem
from prefect.settings import PREFECT_API_URL

from conftest import audio_md5, read_frames, saturation
from prefect_modify_video.blocks.presets import ModifyVideoPreset
from prefect_modify_video.flows import ModifyVideoParameters, modify_video
from prefect_modify_video.parameters import flow_arguments
from prefect_modify_video.media.probe import probe_video
from prefect_modify_video.storage.download import emit_new_video_event

pytestmark = pytest.mark.slow  # run by `make test-slow` (CI runs both)

ROOT = Path(__file__).resolve().parents[1]


def test_url_source_and_block_output(sample_video, tmp_path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(sample_video.parent))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    LocalFileSystem(basepath=str(tmp_path / "bucket")).save("pipeline-out", overwrite=True)
    try:
        result = modify_video(
            **flow_arguments(ModifyVideoParameters(
                source=f"http://127.0.0.1:{server.server_port}/{sample_video.name}",
                prompt="black and white",
                mode="reimagine_3",
                output="block://local-file-system/pipeline-out/restyled/out.mp4",
                max_segment_seconds=3,
                store_dir=str(tmp_path / "store"),
            ))
        )
    finally:
        server.shutdown()
        server.server_close()
    written = tmp_path / "bucket" / "restyled" / "out.mp4"
    assert "pipeline-out" in result.output
    assert probe_video(written).frames == probe_video(sample_video).frames
    assert audio_md5(written) == audio_md5(sample_video)
    assert saturation(read_frames(written)) < 3


def test_a_preset_fills_what_the_run_did_not_set(sample_video, tmp_path):
    ModifyVideoPreset(mode="reimagine_3", prompt="black and white", max_segment_seconds=3).save(
        "test-noir", overwrite=True
    )
    result = modify_video(
        **flow_arguments(ModifyVideoParameters(
            source=str(sample_video), preset="test-noir", output=str(tmp_path / "a.mp4"), store_dir=str(tmp_path / "s")
        ))
    )
    assert result.segments == 4  # the preset's 3 s cap: the four 1.5 s shots cannot pair under it
    assert saturation(read_frames(result.output)) < 3
    overridden = modify_video(
        **flow_arguments(ModifyVideoParameters(
            source=str(sample_video), preset="test-noir", prompt="warm", output=str(tmp_path / "b.mp4"),
            store_dir=str(tmp_path / "s"),
        ))
    )
    assert saturation(read_frames(overridden.output)) > 20


async def _flow_runs_of(deployment_name: str):
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(deployment_name)
        runs = await client.read_flow_runs()
        return [r for r in runs if r.deployment_id == deployment.id]


def test_an_event_naming_a_new_video_starts_the_deployment_with_it(sample_video, tmp_path):
    async def ensure_pool():
        async with get_client() as client:
            if "modify-video" not in {p.name for p in await client.read_work_pools()}:
                await client.create_work_pool(WorkPoolCreate(name="modify-video", type="process"))

    asyncio.run(ensure_pool())
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    deployed = subprocess.run(
        [str(Path(sys.executable).with_name("prefect")), "--no-prompt", "deploy", "--all"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    LocalFileSystem(basepath=str(sample_video.parent)).save("incoming-videos", overwrite=True)
    reference = f"block://local-file-system/incoming-videos/{sample_video.name}"
    emit_new_video_event(reference)
    deadline = time.monotonic() + 90
    runs = []
    while time.monotonic() < deadline and not runs:
        runs = asyncio.run(_flow_runs_of("modify-video/modify-video-on-new-video"))
        time.sleep(1)
    assert runs, "no flow run was started by the event"
    assert runs[0].parameters["source"] == reference
    assert (runs[0].parameters["prompt"], runs[0].parameters["mode"]) == ("warm vintage film with grain", "flex_2"), (
        "the trigger gives source and output; the deployment's other parameters stay"
    )
    # The output goes to another block, which the trigger's pattern does not match.
    assert runs[0].parameters["output"] == f"block://local-file-system/restyled-videos/{sample_video.name}"
