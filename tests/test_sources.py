"""Sources and destinations: local paths, URLs on a real HTTP server on 127.0.0.1, storage blocks."""

from __future__ import annotations

import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from prefect.filesystems import LocalFileSystem, RemoteFileSystem

from prefect_modify_video.errors import InvalidInputError
from prefect_modify_video.media.probe import probe_video
from prefect_modify_video.media.sample import make_sample_video
from prefect_modify_video.media.files import sha256_of_file, sniff_media
from prefect_modify_video.storage.blocks import GenericStorage, deliver_output, signed_block_url, storage_for
from prefect_modify_video.storage.download import NEW_VIDEO_EVENT, emit_new_video_event, fetch_source, list_videos
from prefect_modify_video.testing.servers import free_port
from prefect_modify_video.storage.locations import (
    BlockReference,
    is_remote,
    join_location,
    location_name,
    parse_block_reference,
    sibling_location,
)


@pytest.fixture(scope="module")
def small_video(tmp_path_factory) -> Path:
    return make_sample_video(tmp_path_factory.mktemp("src") / "clip.mp4", seconds=2, width=160, height=90, fps=24)


@pytest.fixture(scope="module")
def http_server(small_video):
    """Serves the video, a 404, an HTML page, JSON, HTML disguised as octet-stream, and a redirect."""
    video = small_video.read_bytes()
    requests: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802
            requests.append(self.path)
            path = self.path.split("?")[0]
            if path == "/videos/clip.mp4":
                self._send(200, video, "video/mp4")
            elif path == "/download":
                self._send(200, video, "application/octet-stream",
                           {"Content-Disposition": 'attachment; filename="holiday film.mp4"'})
            elif path == "/noname":
                self._send(200, video, "application/octet-stream")
            elif path == "/chunked.mp4":
                # No Content-Length: the limit must be enforced while streaming.
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Connection", "close")
                self.end_headers()
                for start in range(0, len(video), 4096):
                    self.wfile.write(video[start:start + 4096])
            elif path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "/videos/clip.mp4")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif path == "/page.html":
                self._send(200, b"<html><body>Sign in to download</body></html>", "text/html; charset=utf-8")
            elif path == "/api.json":
                self._send(200, b'{"error": "not allowed"}', "application/json")
            elif path == "/disguised.mp4":
                self._send(200, b"<!doctype html><html>login</html>" * 20, "application/octet-stream")
            elif path == "/broken":
                self._send(500, b"oops", "text/plain")
            else:
                self._send(404, b"not found", "text/plain")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.requests = requests
    yield server
    server.shutdown()
    server.server_close()


def url(server, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


@pytest.fixture
def video_block(tmp_path, small_video):
    """A LocalFileSystem block over a tmp folder, saved under a fresh name, holding in/clip.mp4."""
    root = tmp_path / "storage"
    (root / "in").mkdir(parents=True)
    (root / "in" / "clip.mp4").write_bytes(small_video.read_bytes())
    name = f"videos-{uuid.uuid4().hex[:8]}"
    LocalFileSystem(basepath=str(root)).save(name)
    return name, root


# ------------------------------------------------------------------ references


def test_block_reference_syntax():
    ref = parse_block_reference("block://remote-file-system/s3-videos/in/sub/film.mp4")
    assert ref == BlockReference("remote-file-system", "s3-videos", "in/sub/film.mp4")
    assert ref.block_slug == "remote-file-system/s3-videos" and ref.name == "film.mp4"
    assert str(ref) == "block://remote-file-system/s3-videos/in/sub/film.mp4"
    assert str(ref.sibling("film.modified.mp4")) == "block://remote-file-system/s3-videos/in/sub/film.modified.mp4"
    folder = parse_block_reference("block://local-file-system/my-videos/out/")
    assert folder.is_folder and str(folder.joined("a.mp4")) == "block://local-file-system/my-videos/out/a.mp4"
    assert parse_block_reference("block://local-file-system/my-videos").path == ""
    for bad in ("block://Local/x/a.mp4", "block://local-file-system", "block://a/b/../../etc/passwd", "block:///x/y"):
        with pytest.raises(InvalidInputError, match="block"):
            parse_block_reference(bad)


def test_is_remote_and_locations():
    assert is_remote("https://x.org/a.mp4") and is_remote("HTTP://x.org/a.mp4") and is_remote("block://a/b/c.mp4")
    assert not is_remote("/data/a.mp4") and not is_remote("~/a.mp4") and not is_remote("file:///a.mp4")
    assert location_name("https://x.org/in/my%20film.mp4?sig=1") == "my film.mp4"
    assert location_name("block://a/b/in/film.mov") == "film.mov"
    assert join_location("block://a/b/out", "x.mp4") == "block://a/b/out/x.mp4"
    assert join_location("/tmp/out", "x.mp4") == "/tmp/out/x.mp4"
    assert sibling_location("/data/in/film.mp4", "film.modified.mp4") == "/data/in/film.modified.mp4"
    with pytest.raises(InvalidInputError, match="output folder"):
        sibling_location("https://x.org/film.mp4", "film.modified.mp4")


def test_sniff_media_knows_containers_and_images(small_video, tmp_path):
    assert sniff_media(small_video.read_bytes()[:512]) == "mp4"
    assert sniff_media(b"\x1a\x45\xdf\xa3" + b"\0" * 40) == "matroska"
    assert sniff_media(b"\x89PNG\r\n\x1a\n....") == "png"
    assert sniff_media(b"\xff\xd8\xff\xe0....") == "jpeg"
    assert sniff_media(b"<!doctype html>") is None
    assert sniff_media(b'{"a": 1}') is None


# ------------------------------------------------------------------ local


def test_local_path_is_returned_as_is(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert fetch_source("~/film.mp4", tmp_path / "work") == tmp_path / "film.mp4"
    assert fetch_source("/data/film.mp4", tmp_path / "work") == Path("/data/film.mp4")
    assert fetch_source("file:///data/my%20film.mp4", tmp_path / "work") == Path("/data/my film.mp4")
    assert not (tmp_path / "work").exists()
    with pytest.raises(InvalidInputError, match="unsupported scheme"):
        fetch_source("s3://bucket/film.mp4", tmp_path / "work")
    with pytest.raises(InvalidInputError, match="empty"):
        fetch_source("  ", tmp_path / "work")


# ------------------------------------------------------------------ http


def test_url_is_downloaded_with_its_name(http_server, small_video, tmp_path):
    path = fetch_source(url(http_server, "/videos/clip.mp4?X-Amz-Signature=secret"), tmp_path)
    assert path.name == "clip.mp4" and path.parent.parent == tmp_path
    assert sha256_of_file(path) == sha256_of_file(small_video)
    assert probe_video(path).frames == probe_video(small_video).frames
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "partial file left behind"


def test_url_name_from_content_disposition_redirects_and_sniffed_extension(http_server, small_video, tmp_path):
    assert fetch_source(url(http_server, "/download"), tmp_path).name == "holiday_film.mp4"
    assert fetch_source(url(http_server, "/redirect"), tmp_path).name == "clip.mp4"
    no_name = fetch_source(url(http_server, "/noname"), tmp_path)
    assert no_name.name == "noname.mp4" and sha256_of_file(no_name) == sha256_of_file(small_video)


@pytest.mark.parametrize(
    "path, message",
    [
        ("/missing.mp4", "answered 404 Not Found"),
        ("/broken", "answered 500"),
        ("/page.html", "sent text/html, not a video"),
        ("/api.json", "sent application/json"),
        ("/disguised.mp4", "no known media format, not a video"),
    ],
)
def test_bad_urls_are_refused_naming_the_url(http_server, tmp_path, path, message):
    address = url(http_server, path + "?token=hunter2")
    with pytest.raises(InvalidInputError, match=message) as caught:
        fetch_source(address, tmp_path)
    text = str(caught.value)
    assert url(http_server, path) in text and "hunter2" not in text, "the URL is named, its query is not"
    assert len(text.splitlines()) == 1
    assert not [p for p in tmp_path.rglob("*") if p.is_file()], "nothing kept of a refused download"


def test_a_video_is_not_an_image(http_server, tmp_path):
    with pytest.raises(InvalidInputError, match="a mp4 file, not a image"):
        fetch_source(url(http_server, "/videos/clip.mp4"), tmp_path, kind="image")


def test_size_limit_from_header_and_while_streaming(http_server, small_video, tmp_path):
    size = small_video.stat().st_size
    with pytest.raises(InvalidInputError, match="over the 1,000-byte limit"):
        fetch_source(url(http_server, "/videos/clip.mp4"), tmp_path, max_bytes=1000)
    with pytest.raises(InvalidInputError, match="passed the 5,000-byte limit"):
        fetch_source(url(http_server, "/chunked.mp4"), tmp_path, max_bytes=5000)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
    assert fetch_source(url(http_server, "/chunked.mp4"), tmp_path, max_bytes=size).stat().st_size == size


def test_connection_error_names_the_url(tmp_path):
    address = f"http://127.0.0.1:{free_port()}/film.mp4"  # nothing listens there
    with pytest.raises(InvalidInputError, match="could not be downloaded \\(ConnectError") as caught:
        fetch_source(address, tmp_path, timeout=5)
    assert address in str(caught.value)


# ------------------------------------------------------------------ blocks


def test_local_file_system_block_read_in_place(video_block, small_video, tmp_path):
    name, root = video_block
    path = fetch_source(f"block://local-file-system/{name}/in/clip.mp4", tmp_path / "work")
    assert path == (root / "in" / "clip.mp4").resolve()
    with pytest.raises(InvalidInputError, match="no such file"):
        fetch_source(f"block://local-file-system/{name}/in/other.mp4", tmp_path / "work")
    with pytest.raises(InvalidInputError, match="names a folder"):
        fetch_source(f"block://local-file-system/{name}/in/", tmp_path / "work")


def test_missing_block_is_named(tmp_path):
    with pytest.raises(InvalidInputError, match="no block 'never-saved' of type 'local-file-system'"):
        fetch_source("block://local-file-system/never-saved/in/clip.mp4", tmp_path)


def test_deliver_to_local_file_system_block(video_block, small_video, tmp_path):
    name, root = video_block
    where = deliver_output(small_video, f"block://local-file-system/{name}/out/sub/result.mp4")
    target = root / "out" / "sub" / "result.mp4"
    assert sha256_of_file(target) == sha256_of_file(small_video)
    assert where.startswith(f"block://local-file-system/{name}/out/sub/result.mp4") and str(target.resolve()) in where
    # A folder destination keeps the file's name; a second delivery replaces the first.
    deliver_output(small_video, f"block://local-file-system/{name}/out/")
    assert (root / "out" / "clip.mp4").is_file()
    assert not [p for p in root.rglob(".*")], "temporary files left behind"
    assert deliver_output(small_video, str(tmp_path / "local.mp4")) == str(tmp_path / "local.mp4")
    assert not (tmp_path / "local.mp4").exists(), "local destinations are the caller's"
    with pytest.raises(InvalidInputError, match="cannot write to a URL"):
        deliver_output(small_video, "https://example.com/out.mp4")


def test_remote_file_system_block_streams_both_ways(tmp_path, small_video):
    """A RemoteFileSystem over fsspec's in-memory store: the same code path as s3:// or gcs://, no cloud."""
    import fsspec

    memory = fsspec.filesystem("memory")
    bucket = f"bucket-{uuid.uuid4().hex[:8]}"
    memory.pipe(f"/{bucket}/videos/in/clip.mp4", small_video.read_bytes())
    memory.pipe(f"/{bucket}/videos/in/notes.txt", b"not a video")
    name = f"remote-{uuid.uuid4().hex[:8]}"
    RemoteFileSystem(basepath=f"memory://{bucket}/videos").save(name)

    fetched = fetch_source(f"block://remote-file-system/{name}/in/clip.mp4", tmp_path / "work")
    assert fetched.parent.parent == tmp_path / "work" and fetched.name == "clip.mp4"
    assert sha256_of_file(fetched) == sha256_of_file(small_video)
    with pytest.raises(InvalidInputError, match="over the 100-byte limit"):
        fetch_source(f"block://remote-file-system/{name}/in/clip.mp4", tmp_path / "work2", max_bytes=100)
    with pytest.raises(InvalidInputError, match="no such file"):
        fetch_source(f"block://remote-file-system/{name}/in/none.mp4", tmp_path / "work")

    where = deliver_output(fetched, f"block://remote-file-system/{name}/out/clip.modified.mp4")
    assert memory.cat(f"/{bucket}/videos/out/clip.modified.mp4") == small_video.read_bytes()
    assert where.startswith(f"block://remote-file-system/{name}/out/clip.modified.mp4")
    assert memory.ls(f"/{bucket}/videos/out", detail=False) == [f"/{bucket}/videos/out/clip.modified.mp4"]
    assert list_videos(f"block://remote-file-system/{name}/in/") == [f"block://remote-file-system/{name}/in/clip.mp4"]


def test_list_videos_in_folders_and_blocks(video_block, tmp_path):
    name, root = video_block
    for relative in ("in/b.MOV", "in/.hidden.mp4", "in/clip.modified.mp4", "in/readme.txt", "in/sub/c.mkv"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(b"x")
    base = f"block://local-file-system/{name}/in"
    assert list_videos(base + "/") == [f"{base}/b.MOV", f"{base}/clip.mp4"]
    assert list_videos(base, recursive=True) == [f"{base}/b.MOV", f"{base}/clip.mp4", f"{base}/sub/c.mkv"]
    assert list_videos(str(root / "in")) == [str(root / "in" / "b.MOV"), str(root / "in" / "clip.mp4")]
    with pytest.raises(InvalidInputError, match="no such folder"):
        list_videos(str(tmp_path / "nowhere"))


def test_s3_stand_in_through_remote_file_system(tmp_path, small_video, s3_server, s3_bucket_block):
    """s3:// through RemoteFileSystem and s3fs, against moto's S3 server on 127.0.0.1 (skipped without them)."""
    _, s3 = s3_server
    name, bucket = s3_bucket_block
    s3.put_object(Bucket=bucket, Key="in/clip.mp4", Body=small_video.read_bytes())

    fetched = fetch_source(f"block://remote-file-system/{name}/in/clip.mp4", tmp_path)
    assert sha256_of_file(fetched) == sha256_of_file(small_video)
    assert list_videos(f"block://remote-file-system/{name}/in/") == [f"block://remote-file-system/{name}/in/clip.mp4"]
    deliver_output(fetched, f"block://remote-file-system/{name}/out/clip.modified.mp4")
    body = s3.get_object(Bucket=bucket, Key="out/clip.modified.mp4")["Body"].read()
    assert body == small_video.read_bytes()
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="out/")["Contents"]] == ["out/clip.modified.mp4"]
    # A presigned URL reads the object without the block's credentials.
    url = signed_block_url(f"block://remote-file-system/{name}/out/clip.modified.mp4", 600)
    assert "Signature" in url and httpx.get(url).content == small_video.read_bytes()
    memory = f"memory-{uuid.uuid4().hex[:8]}"
    RemoteFileSystem(basepath="memory://nowhere").save(memory)
    with pytest.raises(InvalidInputError, match="cannot make URLs a service can read"):
        signed_block_url(f"block://remote-file-system/{memory}/x.mp4")


def test_new_video_event_names_the_video_as_its_resource():
    event = emit_new_video_event("block://remote-file-system/s3-videos/in/film.mp4", size=123)
    assert event.event == NEW_VIDEO_EVENT == "modify-video.source.created"
    assert event.resource.id == "block://remote-file-system/s3-videos/in/film.mp4"
    assert event.resource["prefect.resource.name"] == "film.mp4"
    assert event.payload == {"source": "block://remote-file-system/s3-videos/in/film.mp4", "size": 123}


class _BytesBlock:
    """A block with only ``read_path``/``write_path``, as prefect-aws's ``S3Bucket``."""

    def __init__(self):
        self.files: dict[str, bytes] = {}

    def read_path(self, path: str) -> bytes:
        if path not in self.files:
            raise FileNotFoundError(path)
        return self.files[path]

    def write_path(self, path: str, content: bytes) -> str:
        self.files[path] = content
        return f"memory://{path}"


def test_a_block_with_only_read_and_write_path_is_read_written_and_emptied(small_video, tmp_path):
    block = _BytesBlock()
    storage = storage_for(block)
    assert isinstance(storage, GenericStorage)
    ref = parse_block_reference("block://s3-bucket/videos/in/clip.mp4")
    assert storage.write(ref, small_video) == "memory://in/clip.mp4"
    assert storage.read(ref, tmp_path / "copy.mp4") is True
    assert sha256_of_file(tmp_path / "copy.mp4") == sha256_of_file(small_video)
    with pytest.raises(InvalidInputError, match="over the 100-byte limit"):
        storage.read(ref, tmp_path / "big.mp4", max_bytes=100)
    assert storage.read(parse_block_reference("block://s3-bucket/videos/in/missing.mp4"), tmp_path / "m.mp4") is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.mp4"], "nothing kept of a refused read"
    storage.delete(ref)
    assert block.files["in/clip.mp4"] == b""
    with pytest.raises(InvalidInputError, match="cannot list its files"):
        storage.list_files(parse_block_reference("block://s3-bucket/videos/in/"), recursive=False)
    with pytest.raises(InvalidInputError, match="cannot make URLs"):
        storage.sign(ref, 60)
