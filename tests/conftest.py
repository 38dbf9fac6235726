"""Shared fixtures: one Prefect test server for the whole run, small generated videos."""

from __future__ import annotations

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Retried polls, downloads and uploads wait 0.05 s, then 0.1 s... instead of 1 s, 2 s...: the
# paths are the same, the waits are not what the tests measure (workers started by tests inherit it).
os.environ.setdefault("PREFECT_MODIFY_VIDEO_RETRY_BACKOFF_SECONDS", "0.05")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from prefect_modify_video.media.ffmpeg import run_ffmpeg  # noqa: E402
from prefect_modify_video.media.sample import make_sample_video  # noqa: E402
from prefect_modify_video.testing.servers import free_port  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def prefect_server():
    """One temporary Prefect API and database for every test."""
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def sample_video(media_dir) -> Path:
    """6 s, 320x180, 30 fps, four shots with hard cuts at 1.5 s, 3 s and 4.5 s, a 440 Hz tone."""
    return make_sample_video(media_dir / "sample.mp4", seconds=6, width=320, height=180, fps=30)


@pytest.fixture(scope="session")
def first_frame_image(media_dir) -> Path:
    """A warm orange image standing for a restyled first frame."""
    path = media_dir / "first_frame.png"
    run_ffmpeg(["-f", "lavfi", "-i", "color=c=0xd08030:size=320x180", "-frames:v", "1", "-y", str(path)])
    return path


@pytest.fixture
def store_dir(tmp_path) -> Path:
    """A fresh result store, so each test pays for its own calls."""
    return tmp_path / "store"


def read_frames(path: Path, *, width: int = 64, height: int = 36) -> np.ndarray:
    """Every frame of a video, scaled small, as an array (frames, height, width, 3) of RGB."""
    raw = run_ffmpeg(
        ["-i", str(path), "-vf", f"scale={width}:{height}", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    )
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, height, width, 3).astype(np.float64)


def saturation(frames: np.ndarray) -> float:
    """Mean of (max - min) over RGB channels: 0 for grey pictures."""
    return float((frames.max(axis=-1) - frames.min(axis=-1)).mean())


def audio_md5(path: Path) -> list[str]:
    """The md5 of every audio stream's packets, copied without decoding."""
    from prefect_modify_video.media.probe import probe_video

    info = probe_video(path)
    return [
        run_ffmpeg(["-i", str(path), "-map", f"0:{a.index}", "-c", "copy", "-f", "md5", "-"]).decode().strip()
        for a in info.audio_streams
    ]


@pytest.fixture(scope="session")
def s3_server():
    """Moto's S3 server on 127.0.0.1 (an in-process S3 stand-in): ``(endpoint, boto3 client)``.

    Skipped where moto or s3fs is not installed.
    """
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    import boto3

    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        yield endpoint, boto3.client(
            "s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
            region_name="us-east-1",
        )
    finally:
        server.stop()


@pytest.fixture
def s3_bucket_block(s3_server, prefect_server):
    """A fresh bucket on the S3 stand-in and a saved RemoteFileSystem block on it: ``(block name, bucket)``."""
    import uuid

    from prefect.filesystems import RemoteFileSystem

    endpoint, s3 = s3_server
    bucket = f"bucket-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    name = f"s3-{uuid.uuid4().hex[:8]}"
    client = {"endpoint_url": endpoint, "region_name": "us-east-1"}
    RemoteFileSystem(
        basepath=f"s3://{bucket}", settings={"key": "testing", "secret": "testing", "client_kwargs": client}
    ).save(name)
    return name, bucket
