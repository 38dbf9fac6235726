"""A batch fanned out onto a work pool: each video one flow run of a deployment, run by a process worker.

The deployment is made from this checkout; the worker is ``prefect worker start`` in its own
process group, against the session's test server. Sources, outputs and the result store are
in a LocalFileSystem block (the shared store every "machine" reaches); the service is the
fake Segmind on 127.0.0.1, counting billed calls.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.filesystems import LocalFileSystem
from prefect.settings import PREFECT_API_URL

from prefect_modify_video.errors import InvalidInputError
from prefect_modify_video.flows.batch import (
    BatchParameters,
    BatchSettings,
    child_parameters,
    modify_video_batch,
    output_names,
)
from prefect_modify_video.flows.modify_video import modify_video
from prefect_modify_video.media.probe import probe_video
from prefect_modify_video.media.sample import make_sample_video
from prefect_modify_video.testing import FakeModifyServer
from prefect_modify_video.testing.servers import PREFECT

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fleet():
    """A process work pool, a modify-video deployment of this checkout on it, and one worker polling it."""
    pool = f"fleet-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    deployment_id = modify_video.from_source(
        source=str(ROOT), entrypoint="prefect_modify_video/flows/modify_video.py:modify_video"
    ).deploy(name=pool, work_pool_name=pool, print_next_steps=False)
    env = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PYTHONPATH": str(ROOT),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "SEGMIND_API_KEY": "fleet-key",
    }
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"{pool}-worker.log", "w")
    worker = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", pool, "--type", "process"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        yield f"modify-video/{pool}", deployment_id, log.name
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
        log.close()


@pytest.fixture
def shared(tmp_path):
    """A LocalFileSystem block holding two different 3 s videos in in/: (block name, its folder)."""
    storage = tmp_path / "shared"
    (storage / "in").mkdir(parents=True)
    for name, scenes in (("a", 2), ("b", 3)):
        make_sample_video(storage / "in" / f"{name}.mp4", seconds=3, width=160, height=90, fps=24, scenes=scenes)
    block = f"fleet-{uuid.uuid4().hex[:8]}"
    LocalFileSystem(basepath=str(storage)).save(block)
    return block, storage


def _params(deployment: str, block: str, server: FakeModifyServer, **overrides) -> BatchParameters:
    root = f"block://local-file-system/{block}"
    return BatchParameters(
        folder=f"{root}/in/",
        output_folder=f"{root}/out/",
        settings=BatchSettings(
            prompt="black and white",
            backend={"name": "segmind", "base_url": server.base_url},
            max_segment_seconds=2,
            overlap_frames=0,
            store_dir=f"{root}/store/",
        ),
        deployment=deployment,
        poll_seconds=0.5,
        **overrides,
    )


def _flow_runs(ids):
    with get_client(sync_client=True) as client:
        return [client.read_flow_run(uuid.UUID(i)) for i in ids]


@pytest.mark.slow  # a worker process and flow-run subprocesses: run by `make test-slow`
def test_each_video_runs_as_its_own_flow_run_of_the_deployment(fleet, shared):
    deployment, deployment_id, log = fleet
    block, storage = shared
    with FakeModifyServer() as server:
        state = modify_video_batch(_params(deployment, block, server), return_state=True)
        assert state.is_completed(), f"{state.message}\n{Path(log).read_text()[-3000:]}"
        result = state.result()
        billed = server.stats("segmind").billed

    assert [Path(v.source).name for v in result.videos] == ["a.mp4", "b.mp4"]
    runs = _flow_runs([v.flow_run_id for v in result.videos])
    assert len({r.id for r in runs}) == 2
    assert all(r.deployment_id == deployment_id and r.parent_task_run_id is not None for r in runs)
    assert all(r.state.is_completed() for r in runs)
    for video in result.videos:
        name = Path(video.source).stem
        assert video.output == f"block://local-file-system/{block}/out/{name}.modified.mp4"
        assert probe_video(storage / "out" / f"{name}.modified.mp4").frames == probe_video(
            storage / "in" / f"{name}.mp4").frames
        assert video.state == "Completed" and video.submissions == 1
        assert video.segments >= 2 and video.billed_calls == video.segments and video.cost_usd > 0
    assert billed == sum(v.segments for v in result.videos) == sum(v.billed_calls for v in result.videos)


def _kill_flow_run(flow_run_id: str) -> int:
    """SIGKILLs every process of a flow run (those carrying its id in their environment)."""
    marker = f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode()
    killed = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
        except (OSError, ProcessLookupError):
            continue
    return killed


@pytest.mark.slow
def test_a_crashed_video_is_submitted_again(fleet, shared):
    """The first video's flow run is killed as soon as it runs (before any paid call): Crashed, resubmitted once."""
    deployment, _, log = fleet
    block, storage = shared
    killed: list[str] = []

    def kill_first_running() -> None:
        deadline = time.monotonic() + 120
        with get_client(sync_client=True) as client:
            while time.monotonic() < deadline and not killed:
                for run in client.read_flow_runs():
                    if (run.deployment_id is not None and run.state is not None and run.state.is_running()
                            and run.parameters.get("source", "").endswith("/in/a.mp4")):
                        if _kill_flow_run(str(run.id)):
                            killed.append(str(run.id))
                        break
                time.sleep(0.1)

    with FakeModifyServer() as server:
        killer = threading.Thread(target=kill_first_running, daemon=True)
        killer.start()
        state = modify_video_batch(_params(deployment, block, server, max_concurrent_videos=1), return_state=True)
        killer.join(5)
        assert state.is_completed(), f"{state.message}\n{Path(log).read_text()[-3000:]}"
        result = state.result()
        billed = server.stats("segmind").billed

    assert killed, "the first video's flow run was killed"
    first, second = result.videos
    assert first.submissions == 2 and first.flow_run_id != killed[0] and second.submissions == 1
    crashed = _flow_runs(killed)[0]
    assert crashed.state.is_crashed()
    assert all(v.state == "Completed" and v.segments == v.billed_calls for v in result.videos)
    assert billed == sum(v.segments for v in result.videos), "the killed run paid for nothing"
    assert probe_video(storage / "out" / "a.modified.mp4").frames == probe_video(storage / "in" / "a.mp4").frames


def test_local_paths_are_refused_when_dispatching(tmp_path):
    root = "block://local-file-system/shared"
    local = tmp_path / "film.mp4"
    base = dict(deployment="modify-video/anything", settings=BatchSettings(store_dir=f"{root}/store/"))
    cases = [
        (BatchParameters(sources=[str(local)], output_folder=f"{root}/out/", **base), f"{local}: the source is a local path"),
        (BatchParameters(sources=[f"{root}/in/a.mp4"], output_folder=str(tmp_path), **base),
         f"{tmp_path}: the output folder is a local path"),
        (BatchParameters(folder=str(tmp_path), output_folder=f"{root}/out/", **base), f"{tmp_path}: the folder is a local path"),
        (BatchParameters(sources=[f"{root}/in/a.mp4"], deployment="modify-video/anything",
                         settings=BatchSettings(store_dir=str(tmp_path / "store"))),
         f"{tmp_path / 'store'}: the result store must be shared by every machine"),
        (BatchParameters(sources=[f"{root}/in/a.mp4"], deployment="modify-video/anything"), "store_dir is empty"),
        (BatchParameters(sources=["https://example.com/film.mp4"], **base), "https://example.com/film.mp4: nothing can be"),
    ]
    for params, message in cases:
        sources = [s for s in params.sources] or [str(tmp_path / "a.mp4")]
        with pytest.raises(InvalidInputError) as error:
            child_parameters(params, sources, output_names(sources))
        assert str(error.value).startswith(message), str(error.value)
        assert "block://" in str(error.value)


def test_each_video_gets_its_own_block_output_and_the_shared_settings():
    root = "block://local-file-system/shared"
    params = BatchParameters(
        sources=[f"{root}/in/a.mp4", f"{root}/in/sub/a.mp4"], output_folder=f"{root}/out/", deployment="modify-video/x",
        settings=BatchSettings(prompt="pastel", anchor_strength=0.5, store_dir=f"{root}/store/"),
    )
    children = child_parameters(params, params.sources, output_names(params.sources))
    assert [c["output"] for c in children] == [f"{root}/out/a.modified.mp4", f"{root}/out/a-2.modified.mp4"]
    # The flow's flat arguments; what the batch leaves unset (the preset here) keeps the deployment's value.
    assert children[0] == {"source": f"{root}/in/a.mp4", "output": f"{root}/out/a.modified.mp4", "prompt": "pastel",
                           "store": {"store_dir": f"{root}/store/"}, "seams": {"anchor_strength": 0.5}}
