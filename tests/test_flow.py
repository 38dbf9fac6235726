"""The modify-video flow end to end on the local backend, against the test Prefect server."""

from __future__ import annotations

import asyncio
import time

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName
from pydantic import ValidationError

from conftest import audio_md5, read_frames, saturation
from prefect_modify_video.errors import InvalidInputError
from prefect_modify_video.flows import BackendSpec, ModifyVideoParameters, modify_video
from prefect_modify_video.media.sample import make_sample_video
from prefect_modify_video.testing import FakeModifyServer, Fault
from prefect_modify_video.parameters import flow_arguments
from prefect_modify_video.media.files import sha256_of_file
from prefect_modify_video.media.probe import probe_video


def params(source, tmp_path, store_dir, **overrides) -> ModifyVideoParameters:
    values = dict(
        source=str(source),
        prompt="black and white",
        mode="reimagine_3",
        output=str(tmp_path / "out.mp4"),
        max_segment_seconds=2.5,
        store_dir=str(store_dir),
    )
    return ModifyVideoParameters(**{**values, **overrides})


async def _artifact_keys() -> set[str]:
    async with get_client() as client:
        return {a.key for a in await client.read_artifacts() if a.key}


async def _last_progress():
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    async with get_client() as client:
        (artifact,) = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["modify-video-progress"])),
            sort=ArtifactSort.UPDATED_DESC, limit=1,
        )
        return artifact


def test_output_matches_the_source_in_everything_but_the_look(sample_video, tmp_path, store_dir):
    before = sha256_of_file(sample_video)
    result = modify_video(**flow_arguments(params(sample_video, tmp_path, store_dir)))
    source, out = probe_video(sample_video), probe_video(result.output)
    # Seams on the sample's three cuts: one 1.5 s shot per segment.
    assert result.segments == 4 and result.billed_calls == 4 and result.reused_segments == 0
    assert out.frames == source.frames == result.frames
    assert out.frame_rate == source.frame_rate
    assert (out.width, out.height) == (source.width, source.height)
    assert abs(out.duration_s - source.duration_s) <= 1 / source.fps
    assert audio_md5(result.output) == audio_md5(sample_video)
    assert saturation(read_frames(result.output)) < 3 < 40 < saturation(read_frames(sample_video))
    assert sha256_of_file(sample_video) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "work files left behind"
    assert {
        "modify-video-segments", "modify-video-summary", "modify-video-progress", "modify-video-seams"
    } <= asyncio.run(_artifact_keys())
    progress = asyncio.run(_last_progress())  # updated at most every 2 s, and always for the last segment
    assert progress.data == 100 and progress.description.startswith("4/4 segments"), progress
    sheet = tmp_path / "out.seams.png"
    assert sheet.is_file() and sheet.stat().st_size > 1000  # the seam contact sheet, beside the output


def test_a_second_run_pays_for_nothing(sample_video, tmp_path, store_dir):
    first = modify_video(**flow_arguments(params(sample_video, tmp_path, store_dir, output=str(tmp_path / "a.mp4"))))
    second = modify_video(**flow_arguments(params(sample_video, tmp_path, store_dir, output=str(tmp_path / "b.mp4"))))
    assert first.billed_calls == 4
    assert second.billed_calls == 0 and second.reused_segments == 4
    assert probe_video(second.output).frames == probe_video(sample_video).frames
    refreshed = modify_video(**flow_arguments(params(sample_video, tmp_path, store_dir, output=str(tmp_path / "c.mp4"), refresh=True)))
    assert refreshed.billed_calls == 4


def test_a_local_run_restyles_from_the_source_without_an_upload_clip(sample_video, tmp_path, store_dir, monkeypatch):
    """Issue 15: the local backend reads each segment from the source (``reads_source``): no upload clip is
    encoded, and the output is the source's in frames, rate, size, duration and audio, restyled. With colour
    anchoring on, the finish step reads the source statistics from the source instead of from the clips."""
    from prefect_modify_video.media import extract
    from prefect_modify_video.tasks import seams as seam_tasks

    encodes, statistics = [], []
    write, read_sums = extract._write_segment, seam_tasks.sent_frame_sums

    def counted(info, segment, *args, **kwargs):
        encodes.append(segment.index)
        return write(info, segment, *args, **kwargs)

    monkeypatch.setattr(extract, "_write_segment", counted)
    monkeypatch.setattr(seam_tasks, "sent_frame_sums", lambda sent: statistics.append(sent.segment.index) or read_sums(sent))
    result = modify_video(**flow_arguments(params(
        sample_video, tmp_path, store_dir, prompt="warm", mode="flex_1", seams={"anchor_colours": True},
    )))
    assert encodes == [], "no upload clip was encoded"
    assert sorted(statistics) == [0, 1, 2, 3], "the source statistics were read from the source"
    source, out = probe_video(sample_video), probe_video(result.output)
    assert (out.frames, out.frame_rate, out.width, out.height) == (source.frames, source.frame_rate, source.width, source.height)
    assert abs(out.duration_s - source.duration_s) <= 1 / source.fps
    assert audio_md5(result.output) == audio_md5(sample_video)
    warm, plain = read_frames(result.output), read_frames(sample_video)
    assert (warm[..., 0] - warm[..., 2]).mean() > (plain[..., 0] - plain[..., 2]).mean() + 3, "restyled warmer"


@pytest.mark.slow
def test_another_prompt_is_another_paid_call(sample_video, tmp_path, store_dir):
    modify_video(**flow_arguments(params(sample_video, tmp_path, store_dir, output=str(tmp_path / "a.mp4"))))
    other = modify_video(**flow_arguments(params(sample_video, tmp_path, store_dir, output=str(tmp_path / "b.mp4"), prompt="warm")))
    assert other.billed_calls == 4


def test_first_frame_colour_transfer_through_the_flow(sample_video, tmp_path, store_dir, first_frame_image):
    result = modify_video(
        **flow_arguments(params(sample_video, tmp_path, store_dir, prompt="grade", mode="flex_3", first_frame=str(first_frame_image)))
    )
    target = read_frames(first_frame_image).mean(axis=(0, 1, 2))
    source = read_frames(sample_video).mean(axis=(0, 1, 2))
    out = read_frames(result.output).mean(axis=(0, 1, 2))
    assert abs(out - target).sum() < abs(source - target).sum()


@pytest.mark.parametrize(
    "make_source, message",
    [
        (lambda d, s: d / "missing.mp4", "no such file"),
        (lambda d, s: d, "not a file"),
        (lambda d, s: (d / "t.mp4").write_text("text") and d / "t.mp4", "not a readable video"),
    ],
)
def test_bad_source_fails_before_any_work(sample_video, tmp_path, store_dir, make_source, message):
    source = make_source(tmp_path, sample_video)
    with pytest.raises(InvalidInputError, match=message):
        modify_video(**flow_arguments(params(source, tmp_path, store_dir, output=str(tmp_path / "never.mp4"))))
    assert not (tmp_path / "never.mp4").exists()
    assert not store_dir.exists()


def test_output_equal_to_source_is_refused(sample_video, tmp_path, store_dir):
    before = sha256_of_file(sample_video)
    with pytest.raises(InvalidInputError, match="the source itself"):
        modify_video(**flow_arguments(params(sample_video, tmp_path, store_dir, output=str(sample_video))))
    assert sha256_of_file(sample_video) == before


def test_first_frame_that_is_not_an_image_is_refused(sample_video, tmp_path, store_dir):
    with pytest.raises(InvalidInputError, match="not an image"):
        modify_video(**flow_arguments(params(sample_video, tmp_path, store_dir, first_frame=str(sample_video))))


def test_unknown_mode_is_refused(sample_video, tmp_path, store_dir):
    with pytest.raises(ValidationError, match="mode"):
        params(sample_video, tmp_path, store_dir, mode="adhere_4")


def test_parameters_schema_offers_the_nine_modes():
    schema = modify_video.parameters.model_dump()
    mode = schema["properties"]["mode"]
    assert mode["enum"] == [
        "adhere_1", "adhere_2", "adhere_3", "flex_1", "flex_2", "flex_3", "reimagine_1", "reimagine_2", "reimagine_3",
    ]
    assert mode["description"]


def test_a_segment_is_finished_while_later_segments_still_wait_on_the_service(tmp_path, monkeypatch):
    """Segment 0's final encode (``finish-00000``) starts once segments 0 and 1 are conformed, before the last
    create has its answer: the final encodes go on while the service works, not all after it."""
    monkeypatch.setenv("SEGMIND_API_KEY", "sk-finish-test")
    source = make_sample_video(tmp_path / "shot.mp4", seconds=7.5, width=160, height=90, fps=24, scenes=1)
    wall, monotonic = time.time(), time.monotonic()
    with FakeModifyServer() as server:
        server.script("segmind", [Fault.latency(3)] * 6)
        result = modify_video(**flow_arguments(ModifyVideoParameters(
            source=str(source), prompt="pencil sketch", output=str(tmp_path / "out.mp4"), max_segment_seconds=2.6,
            backend=BackendSpec(name="segmind", base_url=server.base_url), concurrency=1,
            store_dir=str(tmp_path / "store"),
        )))
        spans = server.create_spans("segmind")
    assert result.segments >= 3 and result.billed_calls == len(spans) == result.segments
    assert probe_video(result.output).frames == probe_video(source).frames
    last_answer = wall + max(end for _, end in spans) - monotonic

    async def finish_starts():
        async with get_client() as client:
            runs = await client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=["finish-00000"])))
            return [run.start_time.timestamp() for run in runs if run.start_time and run.start_time.timestamp() > wall]

    (started,) = asyncio.run(finish_starts())
    assert started < last_answer - 0.5, (started - wall, last_answer - wall)
