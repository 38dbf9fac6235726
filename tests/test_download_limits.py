"""Issue 11, item 5: every download is bounded in size and in total time, on real HTTP servers on 127.0.0.1.

A result is at most what a clip of the request can be (``max_result_bytes``); a source at most
``max_source_bytes`` (settable; by default 10 GiB or half the free space); and a server that sends a
few bytes now and then (each read on time) fails the download at its deadline, naming the address.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from prefect_modify_video.errors import InvalidInputError, ProviderUnavailableError
from prefect_modify_video.flows import ModifyVideoParameters, modify_video
from prefect_modify_video.parameters import flow_arguments
from prefect_modify_video.limits import download_deadline_seconds
from prefect_modify_video.media.sample import make_sample_video
from prefect_modify_video.providers import http_client
from prefect_modify_video.providers.base import JobState, ModifyJob, ModifyRequest
from prefect_modify_video.providers.fal import FalBackend
from prefect_modify_video.providers.http_client import ResultTooLargeError, max_result_bytes
from prefect_modify_video.storage.download import DEFAULT_MAX_BYTES, default_max_source_bytes, fetch_source

MP4_HEAD = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"


class _Handler(BaseHTTPRequestHandler):
    """``/drip``: 16 bytes of an MP4 every 0.3 s, for ever; ``/endless``: an MP4 start then zeros, fast, for
    ever (chunked); ``/huge``: declares 10 GB and sends nothing more; ``/video``: the sample video."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        server = self.server
        path = self.path.split("?")[0]
        try:
            if path == "/video":
                body = Path(server.video).read_bytes()
                self.send_response(200)
                self.send_header("content-type", "video/mp4")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            self.send_response(200)
            self.send_header("content-type", "video/mp4")
            if path == "/huge":
                self.send_header("content-length", str(10 * 10**9))
                self.end_headers()
                self.wfile.flush()
                time.sleep(5)
                return
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            first = MP4_HEAD + b"\x00" * (512 - len(MP4_HEAD))
            pieces = [first[i:i + 16] for i in range(0, len(first), 16)] if path == "/drip" else [first]
            while True:
                data = pieces.pop(0) if pieces else (b"\x00" * 16 if path == "/drip" else b"\x00" * 65536)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
                with server.lock:
                    server.sent[path] = server.sent.get(path, 0) + len(data)
                if path == "/drip":
                    time.sleep(0.3)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def server(tmp_path):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.lock = threading.Lock()
    httpd.sent = {}
    httpd.video = make_sample_video(tmp_path / "source.mp4", seconds=2, width=160, height=90, fps=24)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = lambda path: f"http://127.0.0.1:{httpd.server_address[1]}{path}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _download(backend: FalBackend, url: str, destination: Path):
    job = ModifyJob(provider=backend.name, state=JobState.COMPLETED, job_id="job-1", result_url=url)

    async def go():
        async with backend:
            return await backend.download(job, destination)

    return asyncio.run(go())


def test_the_result_limit_is_declared_once():
    assert max_result_bytes(1_000) == 50_000_000 and max_result_bytes(30_000_000) == 120_000_000
    backend = FalBackend("key", "https://queue.test")
    # A job this backend did not send (saved by an earlier run): bounded by the largest clip the service takes.
    assert backend.result_limit_bytes() == max_result_bytes(backend.max_upload_bytes)
    assert backend._download_deadline() == download_deadline_seconds(backend.result_limit_bytes())


def test_the_result_limit_follows_the_clip_sent(tmp_path, monkeypatch):
    monkeypatch.setattr(http_client, "MIN_RESULT_BYTES", 1_000)
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(MP4_HEAD + b"\x00" * 2_000)
    backend = FalBackend("key", "https://queue.test")
    backend._check_request(ModifyRequest(clip=clip, prompt="x", mode="flex_1"))
    assert backend.result_limit_bytes() == 4 * clip.stat().st_size


def test_a_slow_drip_result_download_fails_at_its_deadline_naming_the_url(server, tmp_path):
    backend = FalBackend("key", "https://queue.test", max_retries=0)
    backend.download_deadline_seconds = 2.0
    started = time.monotonic()
    with pytest.raises(ProviderUnavailableError) as caught:
        _download(backend, server.url("/drip?signature=hunter2"), tmp_path / "out" / "answer.mp4")
    elapsed = time.monotonic() - started
    assert elapsed < 5, f"the deadline did not hold: {elapsed:.1f} s"
    message = str(caught.value)
    assert "127.0.0.1/drip" in message and "2 s deadline" in message and "hunter2" not in message
    assert caught.value.job_id == "job-1"
    assert not list((tmp_path / "out").iterdir()), "nothing is left of a failed download"


def test_an_endless_result_is_refused_without_filling_the_disk(server, tmp_path, monkeypatch):
    monkeypatch.setattr(http_client, "MIN_RESULT_BYTES", 2_000_000)
    backend = FalBackend("key", "https://queue.test")
    backend.max_upload_bytes = 100_000  # the limit is then max(4 x 100 kB, 2 MB) = 2 MB
    with pytest.raises(ResultTooLargeError, match=r"over the 2,000,000-byte limit.*Job job-1 stays saved") as caught:
        _download(backend, server.url("/endless"), tmp_path / "out" / "answer.mp4")
    assert caught.value.job_id == "job-1"
    assert not list((tmp_path / "out").iterdir()), "the refused body is not kept"
    time.sleep(0.3)
    with server.lock:
        sent = server.sent["/endless"]
    # Fatal, so not retried: about the limit was read once (plus what sat in the socket buffers).
    assert sent < 12_000_000, sent


def test_a_result_declaring_too_many_bytes_is_refused_before_reading(server, tmp_path):
    backend = FalBackend("key", "https://queue.test")
    started = time.monotonic()
    with pytest.raises(ResultTooLargeError, match=r"10,000,000,000 bytes, over the 400,000,000-byte limit"):
        _download(backend, server.url("/huge"), tmp_path / "out" / "answer.mp4")
    assert time.monotonic() - started < 4


def test_the_default_source_limit_is_under_the_free_space(tmp_path):
    limit = default_max_source_bytes(tmp_path / "not" / "made" / "yet")
    assert 0 < limit <= DEFAULT_MAX_BYTES and limit <= shutil.disk_usage(tmp_path).free // 2 + 1


def test_a_source_over_the_settable_limit_is_refused(server, tmp_path):
    size = Path(server.video).stat().st_size
    with pytest.raises(InvalidInputError, match=f"{size:,} bytes, over the 1,000-byte limit"):
        fetch_source(server.url("/video"), tmp_path, max_bytes=1000)
    assert fetch_source(server.url("/video"), tmp_path / "ok", max_bytes=size).stat().st_size == size
    # Through the run's parameters (the CLI's --max-source-bytes): refused before anything is paid.
    params = ModifyVideoParameters(
        source=server.url("/video"), output=str(tmp_path / "out.mp4"), max_source_bytes=1000,
        store_dir=str(tmp_path / "store"),
    )
    with pytest.raises(InvalidInputError, match="over the 1,000-byte limit"):
        modify_video(**flow_arguments(params))
    assert not (tmp_path / "out.mp4").exists()


def test_a_slow_drip_source_fails_at_its_deadline_naming_the_url(server, tmp_path):
    started = time.monotonic()
    with pytest.raises(InvalidInputError, match=r"/drip: the download did not finish within its 1.5 s deadline"):
        fetch_source(server.url("/drip"), tmp_path / "fetch", deadline_seconds=1.5)
    assert time.monotonic() - started < 5
    assert not [p for p in (tmp_path / "fetch").rglob("*") if p.is_file()], "nothing is left of a failed download"


def test_a_trickle_with_no_declared_length_fails_once_too_slow(server, tmp_path, monkeypatch):
    from prefect_modify_video import limits

    monkeypatch.setattr(limits, "DOWNLOAD_GRACE_SECONDS", 1.0)  # 120 s in real runs
    started = time.monotonic()
    with pytest.raises(InvalidInputError, match=r"/drip: the download did not finish .* too slow"):
        fetch_source(server.url("/drip"), tmp_path / "fetch")  # its deadline (10 GiB or half the disk) is hours
    assert time.monotonic() - started < 5


def test_the_source_deadline_follows_the_declared_length():
    assert download_deadline_seconds(100 * 2**20) == pytest.approx(120 + 400)
