"""The run's summary as a user meets it on the run page: where the output is, a link, the pictures inline."""

from __future__ import annotations

import asyncio
import base64
import re
import subprocess
import urllib.request

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

from prefect_modify_video.flows import ModifyVideoParameters, modify_video
from prefect_modify_video.parameters import flow_arguments
from prefect_modify_video.media.probe import probe_video
from prefect_modify_video.media.sample import make_sample_video


@pytest.fixture(scope="module")
def two_shots(tmp_path_factory):
    """2 s, 160x90, two shots: one seam, so a contact sheet."""
    return make_sample_video(tmp_path_factory.mktemp("two") / "two.mp4", seconds=2, width=160, height=90, fps=30,
                             scenes=2)


async def _markdown(flow_run_id, key):
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]), key=ArtifactFilterKey(any_=[key])
            )
        )
    return artifacts[0].data


def _run(**values):
    state = modify_video(
        **flow_arguments(ModifyVideoParameters(prompt="black and white", max_segment_seconds=2, **values)), return_state=True
    )
    assert state.is_completed(), state.message
    return state.result(), asyncio.run(_markdown(state.state_details.flow_run_id, "modify-video-summary"))


@pytest.mark.slow  # a whole run (or two) against the server: over ~20 s on a loaded machine
def test_summary_gives_the_absolute_output_and_shows_the_contact_sheet(two_shots, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a deployment's default output is relative to the worker's folder
    result, markdown = _run(source=str(two_shots), output="out/film.mp4", store_dir="store")
    assert result.output == str(tmp_path / "out" / "film.mp4") and result.mode == "flex_1"
    assert f"`{tmp_path / 'out' / 'film.mp4'}`" in markdown
    assert result.contact_sheet == str(tmp_path / "out" / "film.seams.png")
    found = re.search(r"!\[[^\]]*\]\(data:image/jpeg;base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert found, markdown[:2000]
    jpeg = tmp_path / "inline.jpg"
    jpeg.write_bytes(base64.b64decode(found.group(1)))
    width = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=width,codec_name", "-of", "csv=p=0", str(jpeg)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert width.startswith("mjpeg,") and int(width.split(",")[1]) > 100, width
    assert jpeg.stat().st_size < 100_000, "a small JPEG of the contact sheet"


@pytest.mark.slow
def test_an_s3_output_gets_a_presigned_link(two_shots, tmp_path, s3_bucket_block):
    block, bucket = s3_bucket_block
    result, markdown = _run(
        source=str(two_shots), output=f"block://remote-file-system/{block}/out/film.mp4", store_dir=str(tmp_path / "s")
    )
    link = re.search(r"\[download the output\]\((http[^)]+)\)", markdown)
    assert link and "Signature=" in link.group(1), markdown[:2000]
    with urllib.request.urlopen(link.group(1), timeout=30) as response:
        (tmp_path / "got.mp4").write_bytes(response.read())
    assert probe_video(tmp_path / "got.mp4").frames == probe_video(two_shots).frames
