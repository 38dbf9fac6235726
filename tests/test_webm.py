"""WebM in, WebM out: a run writes VP9 and Opus when asked for a .webm, copying Opus or Vorbis audio as it is."""

from __future__ import annotations

import pytest

from conftest import audio_md5
from prefect_modify_video.flows import ModifyVideoParameters, modify_video
from prefect_modify_video.parameters import flow_arguments
from prefect_modify_video.media.ffmpeg import run_ffmpeg
from prefect_modify_video.media.probe import probe_video
from prefect_modify_video.media.sample import make_sample_video


def _codecs(path) -> list[str]:
    out = run_ffmpeg(["-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0", str(path)], program="ffprobe")
    return out.decode().split()


@pytest.fixture(scope="module")
def mp4_source(tmp_path_factory):
    """1.5 s, 160x90, 24 fps, AAC audio."""
    return make_sample_video(tmp_path_factory.mktemp("webm") / "clip.mp4", seconds=1.5, width=160, height=90, fps=24,
                             scenes=1)


def _run(source, output, tmp_path):
    params = dict(source=str(source), prompt="warm", store_dir=str(tmp_path / "store"))
    return modify_video(**flow_arguments(ModifyVideoParameters(**params, **({"output": str(output)} if output else {}))))


def test_a_run_to_webm_writes_vp9_and_opus_with_the_source_frames_and_length(mp4_source, tmp_path):
    result = _run(mp4_source, tmp_path / "x.webm", tmp_path)
    source, out = probe_video(mp4_source), probe_video(result.output)
    assert result.output == str(tmp_path / "x.webm")
    assert _codecs(result.output) == ["vp9", "opus"], "AAC cannot go into WebM: encoded to Opus"
    assert out.frames == source.frames == 36
    assert out.duration_s == pytest.approx(source.duration_s, abs=0.03)


@pytest.mark.slow  # a second whole run (VP9 encoding is slow)
def test_a_webm_source_with_opus_gives_webm_with_its_audio_bit_identical(mp4_source, tmp_path):
    source = tmp_path / "film.webm"
    run_ffmpeg(["-i", str(mp4_source), "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8",
                "-c:a", "libopus", "-y", str(source)])
    result = _run(source, None, tmp_path)
    assert result.output == str(tmp_path / "film.modified.webm"), "WebM in, WebM out by default"
    assert _codecs(result.output) == ["vp9", "opus"]
    assert probe_video(result.output).frames == probe_video(source).frames == 36
    assert audio_md5(result.output) == audio_md5(source), "Opus is copied, not encoded again"
