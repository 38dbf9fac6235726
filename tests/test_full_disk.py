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
