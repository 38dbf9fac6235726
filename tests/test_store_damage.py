"""A result link that is gone, and damaged store files: nothing paid for is bought blindly again.

Real HTTP against the fake service (fal), real ffmpeg; billed jobs counted at the server.
"""

from __future__ import annotations

import pytest

from prefect_modify_video.flows import BackendSpec, ModifyVideoParameters, SegmentsFailedError, modify_video
from prefect_modify_video.parameters import flow_arguments
from prefect_modify_video.media.probe import probe_video
from prefect_modify_video.media.sample import make_sample_video
from prefect_modify_video.testing import FakeModifyServer, Fault


@pytest.fixture(scope="module")
def server():
    with FakeModifyServer(polls_to_complete=1) as fake:
        yield fake


@pytest.fixture(autouse=True)
def fresh_server(server, monkeypatch):
    server.reset()
    monkeypatch.setenv("FAL_KEY", "sk-test-0123456789abcdef")
    yield
    server.wait_idle(30)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("one")
    return make_sample_video(folder / "one.mp4", seconds=2, width=320, height=180, fps=30, scenes=1)


def run(source, tmp_path, server, output="out.mp4"):
    return modify_video(**flow_arguments(ModifyVideoParameters(
        source=str(source), prompt="watercolour", output=str(tmp_path / output), store_dir=str(tmp_path / "store"),
        backend=BackendSpec(name="fal", base_url=server.base_url, poll_interval_seconds=0.05),
        retry_delay_seconds=0.05,
    )))


def test_a_result_link_that_answers_404_is_never_bought_again(source, tmp_path, server):
    server.script("fal", [Fault.NOT_FOUND], on="download")
    with pytest.raises(SegmentsFailedError, match="ResultUnavailableError.*was billed.*answers 404") as caught:
        run(source, tmp_path, server)
    job_id = server.received("fal") and next(iter((tmp_path / "store" / "jobs").glob("*.json"))).read_text()
    assert '"billed": true' in job_id
    assert server.stats("fal").calls == 1 and server.stats("fal").billed == 1
    # The re-run fetches the answer of the same job: nothing is bought again.
    again = run(source, tmp_path, server, "again.mp4")
    assert server.stats("fal").calls == 1 and server.stats("fal").billed == 1
    assert again.billed_calls == 0
    assert probe_video(again.output).frames == probe_video(source).frames
    assert "job" in str(caught.value)


def test_a_damaged_stored_clip_is_set_aside_not_reused(source, tmp_path, server):
    run(source, tmp_path, server)
    (clip,) = (tmp_path / "store" / "clips").glob("*.mp4")
    data = bytearray(clip.read_bytes())
    data[len(data) // 2: len(data) // 2 + 4096] = bytes(4096)  # damaged frames in the middle
    clip.write_bytes(bytes(data))
    again = run(source, tmp_path, server, "again.mp4")
    assert again.billed_calls == 1 and server.stats("fal").billed == 2
    assert list((tmp_path / "store" / "clips").glob("*.mp4.damaged-*")), "the damaged clip is kept, set aside"
    assert probe_video(again.output).frames == probe_video(source).frames


def test_a_damaged_record_is_set_aside_and_the_segment_sent_again(source, tmp_path, server):
    run(source, tmp_path, server)
    (record,) = (tmp_path / "store" / "clips").glob("*.json")
    record.write_text('{"covered_frames": 6')  # cut short
    again = run(source, tmp_path, server, "again.mp4")
    assert again.billed_calls == 1 and server.stats("fal").billed == 2
    assert list((tmp_path / "store" / "clips").glob("*.json.damaged-*"))


def test_a_damaged_job_record_is_not_sent_blindly(source, tmp_path, server):
    run(source, tmp_path, server)
    clips = tmp_path / "store" / "clips"
    (record,) = clips.glob("*.json")
    key = record.stem
    for stored in clips.iterdir():
        stored.unlink()
    jobs = tmp_path / "store" / "jobs"
    jobs.mkdir(exist_ok=True)
    (jobs / f"{key}.json").write_text("\x00\x00 not json")
    with pytest.raises(SegmentsFailedError, match="DamagedStoreError.*may have been accepted and billed"):
        run(source, tmp_path, server, "second.mp4")
    assert server.stats("fal").billed == 1, "nothing sent in place of a job that may have been paid"
    third = run(source, tmp_path, server, "third.mp4")
    assert third.billed_calls == 1 and server.stats("fal").billed == 2


def test_an_answer_downloaded_before_a_crash_is_used_without_any_request(source, tmp_path, server):
    """The answer lands in the store's incoming folder first: a run that died before storing it
    leaves it there, and the re-run uses it (no create, no download)."""
    import json

    first = run(source, tmp_path, server)
    store = tmp_path / "store"
    assert not list((store / "incoming").glob("*")), "a stored answer leaves nothing in incoming"
    (clip,) = (store / "clips").glob("*.mp4")
    record = json.loads(clip.with_suffix(".json").read_text())
    key = clip.stem
    # What a run killed between the download and the store leaves behind:
    clip.replace(store / "incoming" / f"{key}.mp4")
    clip.with_suffix(".json").unlink()
    (store / "jobs").mkdir(exist_ok=True)
    (store / "jobs" / f"{key}.json").write_text(json.dumps(
        {"provider": "fal", "job_id": record["job_id"], "state": "completed", "billed": True, "extra": {}}
    ))
    calls, downloads = server.stats("fal").calls, server.stats("fal").downloads
    again = run(source, tmp_path, server, "again.mp4")
    assert (server.stats("fal").calls, server.stats("fal").downloads) == (calls, downloads)
    assert again.billed_calls == 0 and server.stats("fal").billed == first.billed_calls == 1
    assert probe_video(again.output).frames == probe_video(source).frames
