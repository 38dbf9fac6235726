"""prefect.yaml deploys against the test server, and its deployment runs on a process worker."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL

from prefect_modify_video.media.probe import probe_video
from prefect_modify_video.testing.servers import PREFECT

pytestmark = pytest.mark.slow  # run by `make test-slow` (CI runs both)

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict:
    return {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}


async def _ensure_pool() -> None:
    async with get_client() as client:
        names = {pool.name for pool in await client.read_work_pools()}
        if "modify-video" not in names:
            await client.create_work_pool(WorkPoolCreate(name="modify-video", type="process"))


async def _deployment():
    async with get_client() as client:
        return await client.read_deployment_by_name("modify-video/modify-video-local")


async def _flow_run(flow_run_id):
    async with get_client() as client:
        return await client.read_flow_run(flow_run_id)


def test_deploy_from_prefect_yaml_and_run_on_a_worker(sample_video, tmp_path):
    asyncio.run(_ensure_pool())
    deployed = subprocess.run(
        [PREFECT, "--no-prompt", "deploy", "--all"], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    deployment = asyncio.run(_deployment())
    schema = deployment.parameter_openapi_schema
    mode = schema["properties"]["mode"]
    assert len(mode["enum"]) == 9 and mode["title"] == "Mode"

    output = tmp_path / "deployed.mp4"
    # As `prefect deployment run ... --param source=... --param output=...`: the deployment's prompt and mode stay.
    flow_run = run_deployment(
        "modify-video/modify-video-local",
        parameters={
            "source": str(sample_video),
            "output": str(output),
            "store": {"store_dir": str(tmp_path / "store")},
            "limits": {"max_segment_seconds": 3},
        },
        timeout=0,
    )
    assert (flow_run.parameters["prompt"], flow_run.parameters["mode"]) == ("warm vintage film with grain", "flex_2")
    worker = subprocess.run(
        [PREFECT, "worker", "start", "--pool", "modify-video", "--run-once"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300,
    )
    state = asyncio.run(_flow_run(flow_run.id)).state
    assert state.is_completed(), worker.stdout[-3000:] + worker.stderr[-3000:]
    assert probe_video(output).frames == probe_video(sample_video).frames
