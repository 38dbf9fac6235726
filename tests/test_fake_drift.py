"""The fake server's drift option: each answer gets its own colour cast, as real answers do."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import httpx
import numpy as np
import pytest

from plans import plan_segments
from prefect_modify_video.media.anchor import plan_anchors, segment_statistics
from prefect_modify_video.media.conform import conform_clip
from prefect_modify_video.media.extract import extract_segment
from prefect_modify_video.media.join import join_segments
from prefect_modify_video.media.ffmpeg import run_ffmpeg
from prefect_modify_video.media.finish import finish_clip
from prefect_modify_video.media.probe import probe_video
from prefect_modify_video.media.seams import measure_seams
from prefect_modify_video.testing import FakeModifyServer
from prefect_modify_video.testing.fake.render import (
    DRIFT_BRIGHTNESS,
    DRIFT_CHANNEL_GAIN,
    drift_filter,
    render_modified_clip,
)

SEGMIND = {"x-api-key": "fake-key"}


@pytest.fixture(scope="module")
def segments(tmp_path_factory) -> dict:
    """A 4 s single shot cut into two 2 s segments, as the pipeline extracts them."""
    workdir = tmp_path_factory.mktemp("drift")
    source = workdir / "shot.mp4"
    run_ffmpeg([
        "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30:duration=4",
        "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-y", str(source),
    ])  # fmt: skip
    info = probe_video(source)
    plan = plan_segments(info.frames, info.frame_rate, 2.5)
    clips = [extract_segment(info, s, workdir / f"x{s.name}.mp4") for s in plan.segments]
    return {"source": source, "info": info, "plan": plan, "clips": clips, "dir": workdir}


def mean_yuv(data: bytes, tmp_path: Path) -> np.ndarray:
    path = tmp_path / f"clip{abs(hash(data))}.mp4"
    path.write_bytes(data)
    raw = run_ffmpeg(
        ["-i", str(path), "-vf", "scale=64:36,format=yuv444p", "-f", "rawvideo", "-pix_fmt", "yuv444p", "-"]
    )
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3, 64 * 36).mean(axis=(0, 2))


def segmind_answer(server: FakeModifyServer, clip: bytes) -> bytes:
    uri = "data:video/mp4;base64," + base64.b64encode(clip).decode()
    response = httpx.post(
        f"{server.base_url}/v1/modify-video",
        headers=SEGMIND,
        json={"video_url": uri, "prompt": "warm", "mode": "flex_1"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return response.content


def test_no_drift_by_default():
    assert FakeModifyServer().drift == 0.0
    assert drift_filter(0.0, cast=3) is None
    assert drift_filter(-1.0, cast=3) is None


def cast_numbers(cast: str) -> tuple[list[float], float]:
    numbers = [float(v) for v in re.findall(r"=(-?[0-9.]+)", cast)]
    return numbers[:3], numbers[3]


def test_any_two_of_four_consecutive_casts_move_two_channels_opposite_ways():
    casts = [drift_filter(1.0, cast=k) for k in range(20)]
    assert len(set(casts)) == 20
    assert drift_filter(1.0, cast=3) == casts[3]
    for k, cast in enumerate(casts):
        gains, brightness = cast_numbers(cast)
        assert all(0.5 * DRIFT_CHANNEL_GAIN <= abs(g - 1) <= DRIFT_CHANNEL_GAIN + 1e-4 for g in gains)
        assert 0.5 * DRIFT_BRIGHTNESS <= abs(brightness) <= DRIFT_BRIGHTNESS + 1e-4
        assert (brightness > 0) == (gains[1] > 1)
        for other in casts[k + 1 : k + 4]:
            other_gains, _ = cast_numbers(other)
            assert sum((g > 1) != (o > 1) for g, o in zip(gains, other_gains)) == 2, (cast, other)
    half_gains, _ = cast_numbers(drift_filter(0.5, cast=1))
    assert all(abs(g - 1) <= 0.5 * DRIFT_CHANNEL_GAIN + 1e-4 for g in half_gains)


def test_zero_drift_renders_exactly_as_before(segments):
    clip = segments["clips"][0].read_bytes()
    assert render_modified_clip(clip, drift=0.0, cast=7) == render_modified_clip(clip)


def test_the_server_answers_each_segment_with_its_own_cast(segments, tmp_path):
    first, second = (c.read_bytes() for c in segments["clips"])
    with FakeModifyServer() as server:
        plain = [mean_yuv(segmind_answer(server, clip), tmp_path) for clip in (first, second)]
        server.drift = 1.0
        drifted_bytes = segmind_answer(server, first)
        assert segmind_answer(server, first) == drifted_bytes  # same segment, same cast
        drifted = [mean_yuv(drifted_bytes, tmp_path), mean_yuv(segmind_answer(server, second), tmp_path)]
        assert server.stats("segmind").billed == 5
    shifts = [d - p for d, p in zip(drifted, plain)]
    assert all(np.abs(s).max() > 2 for s in shifts), shifts  # each answer visibly cast...
    assert np.abs(shifts[0] - shifts[1]).max() > 2, shifts  # ...each its own way


def test_drifting_answers_make_a_seam_that_anchoring_removes(segments, tmp_path):
    info, plan = segments["info"], segments["plan"]
    conformed = []
    for segment, clip in zip(plan.segments, segments["clips"]):
        answer = tmp_path / f"a{segment.name}.mp4"
        answer.write_bytes(render_modified_clip(clip.read_bytes(), drift=1.0, cast=segment.index))
        conformed.append(conform_clip(answer, info, segment, tmp_path / f"c{segment.name}.mp4"))
    seams = [s.first_frame for s in plan.segments[1:]]
    naive = join_segments(conformed, info, tmp_path / "naive.mp4")
    (before,) = measure_seams(segments["source"], naive, seams)
    assert not before.passed, before

    steps = plan_anchors(
        [segment_statistics(c) for c in conformed],
        [s.cut_before for s in plan.segments],
        [segment_statistics(c) for c in segments["clips"]],
    )
    anchored = [
        c if step.is_identity else finish_clip(
            c, tmp_path / f"n{step.index}.mp4", transfer=step.transfer, weights=step.weights(probe_video(c).frames)
        )
        for c, step in zip(conformed, steps)
    ]  # fmt: skip
    fixed = join_segments(anchored, info, tmp_path / "fixed.mp4")
    (after,) = measure_seams(segments["source"], fixed, seams)
    assert after.passed and after.ratio < before.ratio / 3, (before, after)
