"""The preview flow: tiles in order, frame counts and sizes, costs, and reuse of the preview by the full run."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import numpy as np
import pytest
from prefect.filesystems import LocalFileSystem

from conftest import saturation
from plans import plan_segments
from prefect_modify_video.errors import InvalidInputError
from prefect_modify_video.flows import ModifyVideoParameters, modify_video
from prefect_modify_video.flows import preview as preview_module
from prefect_modify_video.parameters import BackendSpec, flow_arguments
from prefect_modify_video.flows.preview import PreviewParameters, choose_excerpt, preview_modes
from prefect_modify_video.media.ffmpeg import FFPROBE, run_ffmpeg
from prefect_modify_video.media.preview import grid_shape
from prefect_modify_video.media.probe import probe_video
from prefect_modify_video.media.sample import make_sample_video


@pytest.fixture(scope="module")
def film(tmp_path_factory) -> Path:
    """4 s, 320x180, 30 fps, with a tone: planned under 2.5 s it is two segments of 60 frames."""
    return make_sample_video(tmp_path_factory.mktemp("preview") / "film.mp4", seconds=4, width=320, height=180, fps=30)


async def _summary(flow_run_id) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    async with get_client() as client:
        artifacts = await client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]), key=ArtifactFilterKey(any_=["modify-video-preview"])
        ))
    return artifacts[0].data


def read_image(path: Path) -> np.ndarray:
    size = run_ffmpeg(
        ["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height", "-of", "csv=p=0", str(path)],
        program=FFPROBE,
    )
    width, height = (int(v) for v in size.decode().strip().split(","))
    raw = run_ffmpeg(["-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-frames:v", "1", "-"])
    return np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3).astype(np.float64)


def source_frame(path: Path, index: int) -> np.ndarray:
    info = probe_video(path)
    raw = run_ffmpeg(["-i", str(path), "-vf", f"select=eq(n\\,{index})", "-frames:v", "1",
                      "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
    return np.frombuffer(raw, dtype=np.uint8).reshape(info.height, info.width, 3).astype(np.float64)


def params(film, store_dir, tmp_path, **overrides) -> PreviewParameters:
    values = dict(
        source=str(film), prompt="black and white", backend=BackendSpec(name="local"),
        max_segment_seconds=2.5, store_dir=str(store_dir), output_folder=str(tmp_path / "previews"),
    )
    return PreviewParameters(**{**values, **overrides})


@pytest.mark.slow
def test_preview_of_the_first_segment_is_reused_by_the_full_run(film, tmp_path, store_dir):
    result = preview_modes(params(film, store_dir, tmp_path, end_s=None, modes=["flex_2", "reimagine_3"]))
    assert result.reusable_by_full_run and result.excerpt_frames == 60 and result.excerpt_start_s == 0
    assert result.billed_calls == 2 and [m.paid for m in result.modes] == [True, True]
    assert result.tile_order == ["source", "flex_2", "reimagine_3"]

    sheet = read_image(Path(result.contact_sheet))
    assert sheet.shape == (180, 3 * 320, 3), "one row: source + 2 modes, each at the source's size"
    tiles = [sheet[:, k * 320:(k + 1) * 320] for k in range(3)]
    assert saturation(tiles[0]) > 40 > 3 > saturation(tiles[2]), "source first, the strongest mode last"
    middle = source_frame(film, 30)[40:, :]  # below the label
    assert np.abs(tiles[0][40:, :] - middle).mean() < 6, "the source tile is the excerpt's middle frame"

    grid = probe_video(result.grid_video)
    assert (grid.width, grid.height) == (2 * 320, 2 * 180) and grid_shape(3) == (2, 2)
    assert grid.frames == 60 and grid.frame_rate == "30/1"
    assert len(grid.audio_streams) == 1, "the source's audio for the excerpt"

    full = modify_video(**flow_arguments(ModifyVideoParameters(
        source=str(film), prompt="black and white", mode="flex_2", backend=BackendSpec(name="local"),
        max_segment_seconds=2.5, store_dir=str(store_dir), output=str(tmp_path / "full.mp4"),
    )))
    assert full.segments == 2 and full.reused_segments == 1 and full.billed_calls == 1

    again = preview_modes(params(film, store_dir, tmp_path, end_s=None, modes=["flex_2", "reimagine_3"]))
    assert again.billed_calls == 0 and again.preview_cost_usd == 0


def test_an_end_on_the_first_segment_is_reusable_and_another_is_not(film):
    info = probe_video(film)
    plan = plan_segments(info.frames, info.frame_rate, 2.5)
    segment, reusable = choose_excerpt(info, plan, 0.0, 2.0, 2.5)
    assert reusable and segment == plan.segments[0]
    segment, reusable = choose_excerpt(info, plan, 0.0, 1.5, 2.5)
    assert not reusable and segment.frames == 45
    segment, reusable = choose_excerpt(info, plan, 1.0, None, 2.5)
    assert not reusable and (segment.first_frame, segment.frames) == (30, 60)
    with pytest.raises(InvalidInputError, match="not under the 2.5 s"):
        choose_excerpt(info, plan, 0.0, 3.0, 2.5)
    with pytest.raises(InvalidInputError, match="holds no frame"):
        choose_excerpt(info, plan, 9.0, 10.0, 2.5)
    with pytest.raises(InvalidInputError, match="at least 1 s"):
        choose_excerpt(info, plan, 1.0, 1.5, 2.5)


def test_a_later_excerpt_is_frame_exact_and_not_reused(film, tmp_path, store_dir, monkeypatch):
    # Without drawtext or a font the tiles are unlabelled; the order is the same.
    monkeypatch.setattr(preview_module, "label_font", lambda: None)
    result = preview_modes(params(film, store_dir, tmp_path, start_s=1.5, end_s=2.5, modes=["reimagine_3"]))
    assert not result.reusable_by_full_run and result.excerpt_frames == 30
    assert result.modes[0].full_render_remaining_usd == result.modes[0].full_render_estimate_usd
    assert probe_video(result.grid_video).frames == 30
    sheet = read_image(Path(result.contact_sheet))
    assert sheet.shape == (180, 640, 3)
    # The middle frame of frames 45..74 is 60, the first of a new shot: one frame off is another picture.
    source_tile = sheet[:, :320]
    assert np.abs(source_tile - source_frame(film, 60)).mean() < 6 < np.abs(source_tile - source_frame(film, 59)).mean()
    assert saturation(sheet[:, :320]) > 40 > 3 > saturation(sheet[:, 320:])
    full = modify_video(**flow_arguments(ModifyVideoParameters(
        source=str(film), prompt="black and white", mode="reimagine_3", backend=BackendSpec(name="local"),
        max_segment_seconds=2.5, store_dir=str(store_dir), output=str(tmp_path / "full.mp4"),
    )))
    assert full.reused_segments == 0


def test_default_modes_from_and_into_a_storage_block(tmp_path, store_dir):
    storage = tmp_path / "storage"
    make_sample_video(storage / "in" / "short.mp4", seconds=2, width=160, height=90, fps=24, audio=False)
    block = f"preview-{uuid.uuid4().hex[:8]}"
    LocalFileSystem(basepath=str(storage)).save(block)
    state = preview_modes(PreviewParameters(
        source=f"block://local-file-system/{block}/in/short.mp4", prompt="warm", store_dir=str(store_dir),
        output_folder=f"block://local-file-system/{block}/previews/",
    ), return_state=True)
    result = state.result()
    summary = asyncio.run(_summary(state.state_details.flow_run_id))
    assert "![Side by side, left to right: source, adhere_3, flex_1, flex_3, reimagine_1](data:image/jpeg;base64," in summary
    assert result.tile_order == ["source", "adhere_3", "flex_1", "flex_3", "reimagine_1"]
    assert result.reusable_by_full_run, "the default 5 s covers this 2 s video: its only segment"
    assert result.contact_sheet.startswith(f"block://local-file-system/{block}/previews/short.preview.png")
    assert read_image(storage / "previews" / "short.preview.png").shape == (90, 5 * 160, 3)
    grid = probe_video(storage / "previews" / "short.preview.mp4")
    assert (grid.width, grid.height, grid.frames) == (3 * 160, 2 * 90, 48) and not grid.audio_streams
    assert result.preview_cost_usd == 0 and all(m.full_render_estimate_usd == 0 for m in result.modes)


def test_bad_inputs_fail_before_paying(film, tmp_path, store_dir):
    with pytest.raises(InvalidInputError, match="needs an output_folder"):
        preview_modes(params(film, store_dir, tmp_path, source="http://127.0.0.1:9/film.mp4", output_folder=None))
    with pytest.raises(InvalidInputError, match="not under"):
        preview_modes(params(film, store_dir, tmp_path, end_s=3.5))
    assert not store_dir.exists()
    assert PreviewParameters(source="x.mp4", modes=["flex_1", "flex_1", "adhere_1"]).modes == ["flex_1", "adhere_1"]
