"""The prefect-modify-video command, run as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from prefect.settings import PREFECT_API_URL

from conftest import audio_md5
from prefect_modify_video.media.ffmpeg import run_ffmpeg
from prefect_modify_video.media.probe import probe_video


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    return subprocess.run(
        [sys.executable, "-m", "prefect_modify_video.cli", *args],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=300,
    )


@pytest.mark.slow  # a CLI run in its own process, about 11 s (the paid-service CLI run stays)
def test_run_prints_json_on_its_last_line(sample_video, tmp_path):
    out = tmp_path / "out.mp4"
    done = cli(
        "run", str(sample_video), "--prompt", "cool", "--mode", "flex_2", "--output", str(out),
        "--max-segment-seconds", "3", "--store", str(tmp_path / "store"), "--json",
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["output"] == str(out)
    # Four 1.5 s shots: two together would be 3 s, not under the 3 s cap, so one segment each.
    assert result["segments"] == 4 and result["billed_calls"] == 4
    assert result["frames"] == probe_video(sample_video).frames == probe_video(out).frames
    assert result["duration_s"] == pytest.approx(6.0)
    assert audio_md5(out) == audio_md5(sample_video)
    # The local backend is free: its work is "restyled", never "paid" (paid and reused mean money).
    assert result["free"] is True and "4 restyled, 0 reused, $0.00" in done.stdout
    assert "progress: 4/4 segments (4 restyled, 0 reused, 0 failed)" in done.stderr
    assert "restyling call(s), free" in done.stderr
    assert " paid" not in (done.stdout + done.stderr).lower(), [
        line for line in (done.stdout + done.stderr).splitlines() if " paid" in line.lower()]


def test_probe_and_plan_print_json(sample_video):
    probed = json.loads(cli("probe", str(sample_video), "--json").stdout)
    assert probed["frames"] == 180 and probed["frame_rate"] == "30/1"
    planned = json.loads(cli("plan", str(sample_video), "--max-segment-seconds", "2.5", "--json").stdout)
    assert [s["frames"] for s in planned["segments"]] == [45, 45, 45, 45]
    assert [s["cut_before"] for s in planned["segments"]] == [False, True, True, True]
    assert planned["estimated_cost_usd"] == 0


def test_sample_writes_a_video(tmp_path):
    done = cli("sample", str(tmp_path / "s.mp4"), "--seconds", "2", "--width", "160", "--height", "90")
    assert done.returncode == 0, done.stderr
    assert probe_video(tmp_path / "s.mp4").frames == 60


def _audio_only(d):
    run_ffmpeg(["-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", "-y", str(d / "tone.mp4")])
    return ["run", str(d / "tone.mp4")]


def _zero_length(d):
    (d / "zero.mp4").write_bytes(b"")
    return ["run", str(d / "zero.mp4")]


def _text(d):
    (d / "text.mp4").write_text("not a video at all")
    return ["run", str(d / "text.mp4")]


@pytest.mark.parametrize(
    "make_args, words",
    [
        (lambda d, s: ["run", str(d / "missing.mp4")], "no such file"),
        (lambda d, s: ["run", str(d)], "not a file"),
        (lambda d, s: _text(d), "not a readable video"),
        (lambda d, s: _audio_only(d), "no video stream"),
        (lambda d, s: _zero_length(d), "empty"),
        (lambda d, s: ["run", str(s), "--first-frame", str(s), "--output", str(d / "o.mp4")], "not an image"),
        (lambda d, s: ["run", str(s), "--mode", "ultra", "--output", str(d / "o.mp4")], "mode"),
        (lambda d, s: ["run", str(s), "--output", str(s)], "the source itself"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(sample_video, tmp_path, make_args, words):
    done = cli(*make_args(tmp_path, sample_video))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0]
    assert not (tmp_path / "o.mp4").exists()


def test_run_on_a_paid_service_with_the_key_from_the_environment(sample_video, tmp_path, monkeypatch):
    from prefect_modify_video.testing import FakeModifyServer

    monkeypatch.setenv("SEGMIND_API_KEY", "sk-cli-test")
    with FakeModifyServer() as server:
        done = cli(
            "run", str(sample_video), "--backend", "segmind", "--base-url", server.base_url,
            "--output", str(tmp_path / "paid.mp4"), "--store", str(tmp_path / "store"), "--json",
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert server.stats("segmind").billed == 1
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["billed_calls"] == 1 and result["frames"] == 180
    assert result["free"] is False and "1 paid calls, 0 reused" in done.stdout
    assert audio_md5(tmp_path / "paid.mp4") == audio_md5(sample_video)


def test_a_missing_key_names_the_variable_and_the_block(sample_video, tmp_path, monkeypatch):
    monkeypatch.delenv("FAL_KEY", raising=False)
    done = cli("run", str(sample_video), "--backend", "fal", "--output", str(tmp_path / "o.mp4"))
    assert done.returncode == 2
    assert "FAL_KEY" in done.stderr and "FalCredentials" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_progress_is_a_bar_on_a_terminal_and_lines_elsewhere(sample_video, tmp_path):
    import pty

    args = ["run", str(sample_video), "--max-segment-seconds", "3", "--store", str(tmp_path / "store")]
    piped = cli(*args, "--output", str(tmp_path / "piped.mp4"))
    assert piped.returncode == 0, piped.stderr[-2000:]
    assert "progress: 4/4 segments (4 restyled, 0 reused, 0 failed)" in piped.stderr

    leader, follower = pty.openpty()
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    process = subprocess.Popen(
        [sys.executable, "-m", "prefect_modify_video.cli", *args, "--output", str(tmp_path / "tty.mp4")],
        stdin=follower, stdout=follower, stderr=follower, env=env,
    )
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    assert process.wait(timeout=300) == 0
    text = shown.decode(errors="replace")
    assert "█" in text and "\r[" in text
    assert "4/4 segments (0 restyled, 4 reused, 0 failed)" in text
