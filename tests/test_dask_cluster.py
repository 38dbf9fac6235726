"""One film's segment tasks on a Dask cluster of processes (prefect-dask's task runner), a worker killed mid-call.

The flow runs here; extract → modify → conform of each segment run in the cluster's worker
processes, the paid answers and claims go through the store (an S3 block on moto's server), and
what each segment billed reaches the run's report from the process that booked it. Marked
``slow`` and ``machines``.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from prefect_modify_video.media.probe import probe_video
from prefect_modify_video.testing import FakeModifyServer
from conftest import audio_md5

pytestmark = [pytest.mark.slow, pytest.mark.machines]

distributed = pytest.importorskip("distributed")
prefect_dask = pytest.importorskip("prefect_dask")


@pytest.mark.timeout(600)
def test_a_dask_worker_killed_with_a_create_in_flight_pays_nothing_twice(
    sample_video, s3_bucket_block, s3_server, tmp_path, monkeypatch
):
    from prefect_modify_video.flows.modify_video import modify_video
    from prefect_modify_video.parameters import ModifyVideoParameters, flow_arguments

    block, bucket = s3_bucket_block
    s3 = s3_server[1]
    # The worker processes inherit these (the claim lease is short so that a dead holder's claim is seen soon).
    monkeypatch.setenv("LUMAAI_API_KEY", "sk-dask-0123456789")
    monkeypatch.setenv("PREFECT_MODIFY_VIDEO_CLAIM_LEASE_SECONDS", "2")
    monkeypatch.setenv("PREFECT_MODIFY_VIDEO_GENERATION_LEASE_SECONDS", "60")
    segments = 4
    with FakeModifyServer(seconds_to_complete=4.0, polls_to_complete=10_000) as fake, distributed.LocalCluster(
        processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None, host="127.0.0.1"
    ) as cluster, distributed.Client(cluster) as client:
        workers = set(client.run(os.getpid).values())
        params = ModifyVideoParameters(
            source=str(sample_video), prompt="charcoal sketch", mode="flex_1", output=str(tmp_path / "out.mp4"),
            store_dir=f"block://remote-file-system/{block}/store", max_segment_seconds=2.5, concurrency=4,
            backend={"name": "luma", "base_url": fake.base_url, "upload_url": fake.base_url,
                     "poll_interval_seconds": 0.2, "account": "dask", "account_concurrency": 10},
        )
        on_cluster = modify_video.with_options(
            task_runner=prefect_dask.DaskTaskRunner(address=cluster.scheduler_address)
        )
        killed: list[int] = []
        shared_seen: set[str] = set()

        def kill_a_holder():
            """SIGKILLs the worker process holding the claim of a segment whose create is unanswered."""
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                stats = fake.stats("luma")
                shared_seen.update(o["Key"].split("/work/", 1)[-1].split("/", 2)[1] for o in s3.list_objects_v2(
                    Bucket=bucket, Prefix="store/work/").get("Contents", []) if o["Key"].count("/") >= 3)
                if stats.calls > stats.billed:
                    for obj in s3.list_objects_v2(Bucket=bucket, Prefix="store/claims/").get("Contents", []):
                        claim = json.loads(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
                        if claim.get("state") in ("sending", "submitted") and claim.get("pid") in workers:
                            os.kill(claim["pid"], signal.SIGKILL)
                            killed.append(claim["pid"])
                            return
                time.sleep(0.05)

        import threading

        killer = threading.Thread(target=kill_a_holder, daemon=True)
        killer.start()
        result = on_cluster(**flow_arguments(params))
        killer.join(5)
        fake.wait_idle(30)
        stats = fake.stats("luma")
    assert killed, "a worker was killed while it held a create in flight"
    assert stats.billed == segments, f"{stats.billed} billed for {segments} segments"
    assert result.billed_calls == stats.billed, "the run reports what its worker processes booked"
    output = probe_video(tmp_path / "out.mp4")
    assert output.frames == probe_video(sample_video).frames
    assert audio_md5(tmp_path / "out.mp4") == audio_md5(sample_video)
    assert not s3.list_objects_v2(Bucket=bucket, Prefix="store/claims/").get("Contents"), "no claim left behind"
    assert {"extract"} <= shared_seen, f"the clips went through the store's block ({shared_seen})"
    assert not s3.list_objects_v2(Bucket=bucket, Prefix="store/work/").get("Contents"), "the shared work files are removed"
    assert not s3.list_objects_v2(Bucket=bucket, Prefix="store/billing/").get("Contents"), "the billing records, added up, are removed"
