"""Inputs a user can get wrong or an attacker can abuse, refused before any work (issue 11, items 3, 9, 10).

Each test runs what a user runs (the CLI as a subprocess, or the flow) on real files and checks
the outcome a user would: the exit status, one line on stderr, the source's bytes unchanged,
and no call billed at the fake service.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pytest
from prefect.filesystems import LocalFileSystem
from pydantic import ValidationError

from prefect_modify_video.errors import InvalidInputError
from prefect_modify_video.flows import ModifyVideoParameters, modify_video
from prefect_modify_video.parameters import flow_arguments
from prefect_modify_video.flows.batch import BatchParameters, BatchSettings
from prefect_modify_video.flows.preview import PreviewParameters
from prefect_modify_video.media.sample import make_sample_video
from prefect_modify_video.storage.identity import check_output_is_not_source, location_identities
from test_cli import cli


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """2 s, 320x180, 30 fps with a tone: one segment."""
    return make_sample_video(
        tmp_path_factory.mktemp("clip") / "clip.mp4", seconds=2, width=320, height=180, fps=30, scenes=1
    )


@pytest.fixture
def source(tmp_path, clip) -> Path:
    """A copy of the clip in its own folder ``videos/film.mp4``, which a test may try to overwrite."""
    folder = tmp_path / "videos"
    folder.mkdir()
    path = folder / "film.mp4"
    path.write_bytes(clip.read_bytes())
    return path


def local_block(basepath: Path) -> str:
    """Saves a LocalFileSystem block over ``basepath``; returns its name."""
    name = f"videos-{uuid.uuid4().hex[:8]}"
    LocalFileSystem(basepath=str(basepath)).save(name)
    return name


# ------------------------------------------------------------------ item 3: the source as output


def _dotdot(source: Path, tmp_path: Path) -> str:
    (tmp_path / "elsewhere").mkdir()
    return str(tmp_path / "elsewhere" / ".." / "videos" / "film.mp4")


def _symlink(source: Path, tmp_path: Path) -> str:
    link = tmp_path / "link.mp4"
    link.symlink_to(source)
    return str(link)


def _linked_folder(source: Path, tmp_path: Path) -> str:
    (tmp_path / "videos-link").symlink_to(source.parent, target_is_directory=True)
    return str(tmp_path / "videos-link" / "film.mp4")


def _hard_link(source: Path, tmp_path: Path) -> str:
    os.link(source, tmp_path / "hard.mp4")
    return str(tmp_path / "hard.mp4")


def _file_url(source: Path, tmp_path: Path) -> str:
    return source.as_uri()


def _block(source: Path, tmp_path: Path) -> str:
    return f"block://local-file-system/{local_block(source.parent)}/film.mp4"


def _block_through_a_link(source: Path, tmp_path: Path) -> str:
    (tmp_path / "root").symlink_to(source.parent, target_is_directory=True)
    return f"block://local-file-system/{local_block(tmp_path / 'root')}/./film.mp4"


SPELLINGS = [_dotdot, _symlink, _linked_folder, _hard_link, _file_url, _block, _block_through_a_link]


@pytest.mark.parametrize("spell", SPELLINGS, ids=lambda f: f.__name__.strip("_"))
def test_every_spelling_of_the_source_as_output_is_refused_by_the_cli(source, tmp_path, spell):
    before = sha256(source)
    output = spell(source, tmp_path)
    done = cli("run", str(source), "--output", output)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "the source itself" in lines[0], lines
    assert sha256(source) == before
    assert sorted(p.name for p in source.parent.iterdir()) == ["film.mp4"]


def test_a_block_source_with_its_local_path_as_output_is_refused(source, tmp_path):
    block_source = f"block://local-file-system/{local_block(source.parent)}/film.mp4"
    before = sha256(source)
    done = cli("run", block_source, "--output", str(source))
    assert done.returncode == 2 and "the source itself" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert sha256(source) == before


def test_the_flow_itself_refuses_a_block_output_naming_its_source(source):
    """Callers that skip the CLI's checks (deployments, Python) are refused by the flow before any work."""
    before = sha256(source)
    output = f"block://local-file-system/{local_block(source.parent)}/film.mp4"
    with pytest.raises(InvalidInputError, match="the source itself"):
        modify_video(**flow_arguments(ModifyVideoParameters(source=str(source), output=output)))
    assert sha256(source) == before
    assert sorted(p.name for p in source.parent.iterdir()) == ["film.mp4"]


def test_other_outputs_are_not_the_source(source, tmp_path):
    check_output_is_not_source(str(source), str(source.with_name("film.modified.mp4")))
    check_output_is_not_source(str(source), f"block://local-file-system/{local_block(source.parent)}/other.mp4")
    check_output_is_not_source("https://example.com/a/film.mp4", str(source))


def test_case_insensitive_spellings_are_the_same_file_where_the_file_system_folds_case(source):
    upper = source.with_name("FILM.MP4")
    folds_case = upper.exists()
    assert bool(location_identities(str(source)) & location_identities(str(upper))) == folds_case


def test_an_object_store_url_and_the_block_naming_the_same_object_are_one_file(s3_server, s3_bucket_block, clip):
    endpoint, s3 = s3_server
    name, bucket = s3_bucket_block
    s3.put_object(Bucket=bucket, Key="in/film.mp4", Body=clip.read_bytes())
    block_output = f"block://remote-file-system/{name}/in/film.mp4"
    for url in (
        f"{endpoint}/{bucket}/in/film.mp4",
        f"{endpoint}/{bucket}/in/film.mp4?X-Amz-Signature=abc",
        f"{endpoint.replace('http://', 'https://')}/{bucket}/in/%66ilm.mp4",
    ):
        with pytest.raises(InvalidInputError, match="the source itself"):
            check_output_is_not_source(url, block_output)
    check_output_is_not_source(f"{endpoint}/{bucket}/in/other.mp4", block_output)
    # Amazon's own addresses of an object name it whatever the style.
    s3_object = ("object", "s3", "my-bucket/in/film.mp4")
    for url in (
        "https://my-bucket.s3.amazonaws.com/in/film.mp4",
        "https://my-bucket.s3.eu-west-1.amazonaws.com/in/film.mp4",
        "https://s3.eu-west-1.amazonaws.com/my-bucket/in/film.mp4?X-Amz-Signature=abc",
    ):
        assert s3_object in location_identities(url)


# ------------------------------------------------------------------ item 9: no credentials in parameters


@pytest.mark.parametrize(
    "values, field",
    [
        ({"source": "https://user:hunter2@example.com/x.mp4"}, "source"),
        ({"source": "https://hunter2@example.com/x.mp4"}, "source"),
        ({"source": "a.mp4", "first_frame": "https://u:hunter2@example.com/f.png"}, "first_frame"),
        ({"source": "https://example.com/x.mp4?api_key=hunter2"}, "source"),
        ({"source": "a.mp4", "backend": {"name": "fal", "base_url": "https://u:hunter2@proxy.example"}}, "backend.base_url"),
        (
            {"source": "a.mp4", "backend": {"name": "luma", "upload_url": "https://u:hunter2@put.example/up/"}},
            "backend.upload_url",
        ),
        ({"source": "a.mp4", "backend": {"name": "luma", "upload_url": "https://put.example/?password=hunter2"}},
         "backend.upload_url"),
    ],
)
def test_credentials_in_addresses_are_refused_as_parameters(values, field):
    with pytest.raises(ValidationError) as raised:
        ModifyVideoParameters(**values)
    error = raised.value
    assert [".".join(map(str, e["loc"])) for e in error.errors()] == [field]
    assert "credentials block or a Secret block" in str(error)
    assert "hunter2" not in str(error) and "hunter2" not in repr(error.errors(include_input=False))


def test_credentials_are_refused_in_the_batch_settings_too():
    with pytest.raises(ValidationError) as raised:
        BatchSettings(backend={"name": "fal", "base_url": "https://u:hunter2@proxy.example"})
    assert "credentials block" in str(raised.value) and "hunter2" not in str(raised.value)


@pytest.mark.parametrize(
    "model, values, field",
    [
        (BatchParameters, {"sources": ["a.mp4", "https://me:hunter2@example.com/x.mp4"]}, "sources.1"),
        (BatchParameters, {"folder": "https://example.com/in/?api_key=hunter2"}, "folder"),
        (BatchParameters, {"sources": ["a.mp4"], "output_folder": "s3://me:hunter2@bucket/out/"}, "output_folder"),
        (PreviewParameters, {"source": "https://me:hunter2@example.com/x.mp4"}, "source"),
        (PreviewParameters, {"source": "a.mp4", "output_folder": "https://u:hunter2@example.com/o/"}, "output_folder"),
    ],
)
def test_the_batch_and_the_preview_refuse_credentials_without_echoing_them(model, values, field):
    with pytest.raises(ValidationError) as raised:
        model(**values)
    error = raised.value
    assert [".".join(map(str, e["loc"])) for e in error.errors()] == [field]
    assert "credentials block or a Secret block" in str(error)
    assert "hunter2" not in str(error) and "hunter2" not in repr(error.errors(include_input=False))


def test_addresses_without_credentials_are_accepted():
    params = ModifyVideoParameters(
        source="https://bucket.s3.amazonaws.com/in/x.mp4?X-Amz-Credential=AKIA%2F&X-Amz-Signature=abc",
        first_frame="block://local-file-system/frames/f@2x.png",
        output="/tmp/out@home/x.mp4",
        backend={"name": "luma", "base_url": "http://127.0.0.1:8765/luma", "upload_url": "https://put.example/up/"},
    )
    assert params.source.startswith("https://bucket")


def test_the_cli_refuses_a_source_with_a_password_in_one_line_without_it(tmp_path):
    done = cli("run", "https://me:hunter2@example.com/x.mp4", "--output", str(tmp_path / "o.mp4"))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "source" in lines[0] and "credentials block" in lines[0]
    assert "hunter2" not in done.stderr + done.stdout


# ------------------------------------------------------------------ item 10: errors, names, estimates


@pytest.fixture(scope="module")
def http_server(clip):
    """Serves the clip, a 404, a redirect to a ``data:`` URL, a video that is cut short and an undecodable one."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    video = clip.read_bytes()
    undecodable = video.replace(b"avc1", b"xxxx")

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
            path = self.path.split("?")[0]
            if path == "/film.mp4":
                self._send(200, video, "video/mp4")
            elif path == "/cut.mp4":
                self._send(200, video[:600], "video/mp4")
            elif path == "/codec.mp4":
                self._send(200, undecodable, "video/mp4")
            elif path == "/to-data":
                self._send(302, b"", "text/plain", {"Location": "data:video/mp4;base64,AAAAIGZ0eXBpc29t"})
            else:
                self._send(404, b"not found", "text/plain")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def undecodable(clip, tmp_path_factory) -> Path:
    """The clip with its codec renamed to one no ffmpeg decodes: its headers read, its frames do not."""
    path = tmp_path_factory.mktemp("codec") / "codec.mp4"
    path.write_bytes(clip.read_bytes().replace(b"avc1", b"xxxx"))
    return path


@pytest.mark.parametrize(
    "make_args, words",
    [
        (lambda url, d, u: ["run", f"{url}/missing.mp4?sig=abc"], ["/missing.mp4", "404"]),
        (lambda url, d, u: ["run", f"{url}/to-data"], ["/to-data", "could not be downloaded"]),
        (lambda url, d, u: ["run", f"{url}/cut.mp4?sig=abc"], ["/cut.mp4", "not a readable video"]),
        (lambda url, d, u: ["run", f"{url}/codec.mp4"], ["/codec.mp4", "cannot be decoded"]),
        (lambda url, d, u: ["run", str(u)], ["codec.mp4", "cannot be decoded"]),
        (lambda url, d, u: ["run", "block://local-file-system/no-such-block-x1/film.mp4"], ["no-such-block-x1"]),
        (lambda url, d, u: ["run", f"{url}/film.mp4", "--first-frame", f"block://local-file-system/no-such-block-x2/f.png"],
         ["no-such-block-x2"]),
        (lambda url, d, u: ["run", f"{url}/film.mp4", "--output", "/sys/modify-video-test/out.mp4"],
         ["/sys", "cannot write"]),
    ],
    ids=["404", "redirect-to-data", "cut-short", "url-codec", "local-codec", "missing-block", "missing-frame-block",
         "read-only-output"],
)
def test_errors_found_inside_the_flow_are_one_line_with_exit_2(http_server, tmp_path, undecodable, make_args, words):
    args = make_args(http_server, tmp_path, undecodable)
    if "--output" not in args:
        args += ["--output", str(tmp_path / "o.mp4")]
    done = cli(*args)
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and all(w in lines[0] for w in words), lines[0]
    # The download is named by its address (query left out), never by a temporary copy that is gone.
    assert "modify-video-fetch" not in lines[0] and "sig=abc" not in lines[0]
    assert not (tmp_path / "o.mp4").exists()


def test_a_failed_extract_reports_its_cause(short_video_and_server, tmp_path, monkeypatch):
    """A step that fails makes the steps after it never run: the segment's failure names the step's own error."""
    from prefect_modify_video.errors import FfmpegError
    from prefect_modify_video.flows import SegmentsFailedError
    from prefect_modify_video.tasks import media as media_tasks

    source, server = short_video_and_server

    def failing_extract(*args, **kwargs):
        raise FfmpegError(["ffmpeg", "-i", "x"], 1, "Invalid data found when processing input")

    monkeypatch.setattr(media_tasks, "extract_segment", failing_extract)
    with pytest.raises(SegmentsFailedError) as raised:
        paid_run(source, tmp_path, server)
    message = str(raised.value)
    assert "extract failed: FfmpegError" in message and "Invalid data found" in message
    assert "UnfinishedRun" not in message and "PENDING" not in message
    assert server.stats("segmind").billed == 0


@pytest.fixture(scope="module")
def short_video_and_server(tmp_path_factory):
    from prefect_modify_video.testing import FakeModifyServer

    folder = tmp_path_factory.mktemp("short")
    video = make_sample_video(folder / "short.mp4", seconds=4, width=320, height=180, fps=30, scenes=2)
    with FakeModifyServer(polls_to_complete=1) as server:
        yield video, server


@pytest.fixture(autouse=True)
def fake_keys(monkeypatch):
    monkeypatch.setenv("SEGMIND_API_KEY", "sk-test-0123456789abcdef")


def paid_run(source, tmp_path, server, **overrides):
    values = dict(
        source=str(source),
        prompt="watercolour painting",
        output=str(tmp_path / "out.mp4"),
        backend={"name": "segmind", "base_url": server.base_url, "poll_interval_seconds": 0.05},
        max_segment_seconds=2.5,
        store_dir=str(tmp_path / "store"),
        retry_delay_seconds=0.05,
        segment_retries=0,
    )
    values.update(overrides)
    return modify_video(**flow_arguments(ModifyVideoParameters(**values)))


def test_line_breaks_in_file_names_are_joined_after_paying_once(short_video_and_server, tmp_path):
    """ffmpeg's concat list cannot hold a line break: the clips are joined under plain names."""
    from conftest import audio_md5
    from prefect_modify_video.media.probe import probe_video

    video, server = short_video_and_server
    server.reset()
    folder = tmp_path / "my\nfolder"
    folder.mkdir()
    source = folder / "holiday\nfilm 'one'.mp4"
    source.write_bytes(video.read_bytes())
    result = paid_run(source, tmp_path, server, output=None)
    assert result.output == str(folder / "holiday\nfilm 'one'.modified.mp4")
    assert result.billed_calls == 2 and server.stats("segmind").billed == 2
    assert probe_video(result.output).frames == probe_video(video).frames
    assert audio_md5(Path(result.output)) == audio_md5(video)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [source.name, "holiday\nfilm 'one'.modified.mp4", "holiday\nfilm 'one'.modified.seams.png"]
    )


def test_a_first_frame_over_the_services_limit_is_refused_before_any_call(
    short_video_and_server, tmp_path, monkeypatch
):
    from prefect_modify_video.media.ffmpeg import run_ffmpeg
    from prefect_modify_video.providers.registry import backend_class

    video, server = short_video_and_server
    server.reset()
    image = tmp_path / "big.png"
    run_ffmpeg(["-f", "lavfi", "-i", "nullsrc=s=640x360,geq=random(1)*255:128:128", "-frames:v", "1", "-y", str(image)])
    monkeypatch.setattr(backend_class("segmind"), "max_upload_bytes", image.stat().st_size - 1)
    with pytest.raises(InvalidInputError, match="the first frame is .* bytes; segmind takes at most"):
        paid_run(video, tmp_path, server, first_frame=str(image))
    stats = server.stats("segmind")
    assert stats.calls == 0 and stats.billed == 0


def test_file_urls_are_sources(source, tmp_path):
    done = cli("run", source.as_uri(), "--max-segment-seconds", "3", "--store", str(tmp_path / "store"), "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (source.parent / "film.modified.mp4").is_file()


@pytest.mark.slow
def test_plan_and_probe_fetch_url_and_block_sources(http_server, source, clip):
    import json

    block = f"block://local-file-system/{local_block(source.parent)}/film.mp4"
    for reference in (f"{http_server}/film.mp4?sig=abc", block, source.as_uri()):
        probed = cli("probe", reference, "--json")
        assert probed.returncode == 0, probed.stderr[-2000:]
        info = json.loads(probed.stdout)
        assert info["frames"] == 60 and "modify-video-probe" not in info["path"] and "sig=abc" not in info["path"]
        planned = cli("plan", reference, "--backend", "segmind", "--json")
        assert planned.returncode == 0, planned.stderr[-2000:]
        assert json.loads(planned.stdout)["estimated_cost_usd"] > 0
    missing = cli("plan", f"{http_server}/missing.mp4")
    assert missing.returncode == 2 and "404" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------ issue 13, item 8: input errors are one line


def _run_logs(flow_run_id) -> list:
    """The flow run's logs as the Prefect server keeps them (the UI's log view), once its end is there."""
    import asyncio
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    async def read():
        async with get_client() as client:
            return await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))

    deadline = time.monotonic() + 20
    while True:
        APILogHandler().flush()
        logs = asyncio.run(read())
        if any("Finished in state" in log.message and log.task_run_id is None for log in logs) or time.monotonic() > deadline:
            return logs
        time.sleep(0.2)


def test_a_missing_source_is_one_line_in_the_log_and_the_state_without_traceback(tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO)
    missing = tmp_path / "missing.mp4"
    state = modify_video(**flow_arguments(ModifyVideoParameters(source=str(missing), output=str(tmp_path / "o.mp4"))), return_state=True)
    assert state.is_failed()
    assert state.message.count("\n") == 0 and f"{missing}: no such file; check the path" in state.message
    ours = [r for r in caplog.records if r.name.startswith("prefect.")]
    assert not [r for r in ours if r.exc_info], "no traceback for an input error"
    errors = [r for r in ours if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "no such file; check the path" in errors[0].getMessage()
    logs = _run_logs(state.state_details.flow_run_id)
    text = "\n".join(log.message for log in logs)
    assert "Traceback" not in text and str(missing) in text
    assert sum(len(log.message.splitlines()) for log in logs) <= 5, text


def test_a_bug_keeps_its_traceback(caplog):
    """Only input errors lose their traceback: a bug's stays in the log."""
    import logging

    from prefect import flow

    import prefect_modify_video.flows  # noqa: F401  (installs the filter)

    @flow
    def buggy():
        raise ZeroDivisionError("a bug")

    caplog.set_level(logging.INFO)
    state = buggy(return_state=True)
    assert state.is_failed()
    assert [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], ZeroDivisionError)]
