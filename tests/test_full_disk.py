"""Issue 11, item 2, on a really full file system: a run whose files cannot fit is refused before it pays.

The output folder is a small tmpfs mounted in a private mount namespace (``unshare -rm``), and the CLI
runs inside it against the fake service on 127.0.0.1; billed calls are counted at the fake server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL

from prefect_modify_video.media.sample import make_sample_video
from prefect_modify_video.testing import FakeModifyServer

ROOT = Path(__file__).resolve().parents[1]


def _unshare_works(folder: Path) -> str | None:
    """Why a private tmpfs cannot be mounted here, or ``None`` when it can."""
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    tried = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=16k tmpfs '{folder}'"],
        capture_output=True, text=True, timeout=30,
    )
    return None if tried.returncode == 0 else f"unshare -rm cannot mount a tmpfs here: {tried.stderr.strip()}"


def _run_on_small_disk(disk: Path, size_kib: int, *cli_args: str, env: dict) -> subprocess.CompletedProcess:
    """Runs the CLI with ``disk`` a ``size_kib`` tmpfs of its own (private mount namespace)."""
    script = f'mount -t tmpfs -o size={size_kib}k tmpfs "{disk}" && exec "$@"'
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, "sh", sys.executable, "-m", "prefect_modify_video.cli", *cli_args],
        capture_output=True, text=True, env=env, timeout=300,
    )


@pytest.mark.slow  # a CLI run in a private mount namespace
def test_an_output_disk_too_small_is_refused_before_anything_is_paid(tmp_path, monkeypatch):
    disk = tmp_path / "small-disk"
    disk.mkdir()
    if reason := _unshare_works(disk):
        pytest.skip(reason)
    source = make_sample_video(tmp_path / "film.mp4", seconds=2, width=160, height=90, fps=24, scenes=1)
    assert source.stat().st_size > 32 * 1024, "the run's estimate must not fit in the 32 KiB disk"
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "SEGMIND_API_KEY": "sk-full-disk",
           "PYTHONPATH": str(ROOT)}
    with FakeModifyServer(polls_to_complete=1) as server:
        done = _run_on_small_disk(
            disk, 32, "run", str(source), "--backend", "segmind-async", "--base-url", server.base_url,
            "--output", str(disk / "out.mp4"), "--store", str(tmp_path / "store"), "--poll-interval-seconds", "0.1",
            env=env,
        )
        assert done.returncode == 2, done.stderr[-2000:]
        last = done.stderr.strip().splitlines()[-1]
        assert str(disk) in last and "free some space" in last and "nothing was sent" in last, done.stderr
        assert " MB here " in last and "0.03 MB are free" in last, last
        assert "Traceback" not in done.stderr
        assert server.stats("segmind").calls == 0 and server.stats("segmind").billed == 0
    assert list(disk.iterdir()) == [], "the mount was private to the run: nothing written here"


@pytest.mark.slow
def test_a_store_that_fills_up_during_the_run_loses_nothing_paid(tmp_path):
    """The store's disk fills up once the job is saved: the run stops without paying again, and a
    re-run on the store's contents (space freed) pays nothing more and writes the whole video."""
    disk = tmp_path / "store-disk"
    disk.mkdir()
    if reason := _unshare_works(disk):
        pytest.skip(reason)
    source = make_sample_video(tmp_path / "film.mp4", seconds=2, width=160, height=90, fps=24, scenes=1)
    saved = tmp_path / "store-saved"
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "FAL_KEY": "sk-full-disk", "PYTHONPATH": str(ROOT)}
    with FakeModifyServer(polls_to_complete=6) as server:
        args = ["run", str(source), "--backend", "fal", "--base-url", server.base_url, "--poll-interval-seconds", "0.3",
                "--segment-retries", "0", "--json"]
        # In a private mount namespace: a 4 MiB store; once a job is saved, a filler takes every free byte;
        # when the run ends, the store is copied out (what an operator does after freeing space).
        script = (
            f'mount -t tmpfs -o size=4m tmpfs "{disk}" && '
            f'( while [ -z "$(ls "{disk}/store/jobs" 2>/dev/null)" ]; do sleep 0.05; done; '
            f'dd if=/dev/zero of="{disk}/filler" bs=4k 2>/dev/null; true ) & '
            f'"$@" --store "{disk}/store" --output "{tmp_path}/first.mp4"; code=$?; '
            f'cp -a "{disk}/store" "{saved}"; exit $code'
        )
        first = subprocess.run(
            ["unshare", "-rm", "sh", "-c", script, "sh", sys.executable, "-m", "prefect_modify_video.cli", *args],
            capture_output=True, text=True, env=env, timeout=300,
        )
        assert first.returncode != 0, "the full store must stop the run"
        assert "No space left" in first.stderr or "space" in first.stderr.strip().splitlines()[-1], first.stderr[-2000:]
        assert "Traceback" not in first.stderr.strip().splitlines()[-1]
        server.wait_idle(30)
        assert server.stats("fal").calls == 1
        assert list((saved / "jobs").glob("*.json")), "the job id was saved before the disk filled up"
        assert not list(saved.rglob("*.partial*")), "no half-written file is left in the store"

        second = subprocess.run(
            [sys.executable, "-m", "prefect_modify_video.cli", *args, "--store", str(saved),
             "--output", str(tmp_path / "second.mp4")],
            capture_output=True, text=True, env=env, timeout=300,
        )
        assert second.returncode == 0, second.stderr[-3000:]
        assert server.stats("fal").calls == 1 and server.stats("fal").billed == 1, "the re-run paid nothing"
        from prefect_modify_video.media.probe import probe_video

        assert probe_video(tmp_path / "second.mp4").frames == probe_video(source).frames
