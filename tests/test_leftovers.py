"""What a killed run leaves is removed by the next run, and nothing else is.

A run SIGKILLed while it waits on the service leaves its hidden work folder beside the output
(``.<stem>.work-XXXX``) and its fetch folder in the temp folder (``modify-video-fetch-XXXX``, the
downloaded source): once, no later run removed them. Each folder now names its owner in a marker;
a run removes those whose owner is proven dead on this host, and keeps those of a live process,
of another host, or without a marker.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, replace
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL

from prefect_modify_video.flows import BackendSpec, ModifyVideoParameters, modify_video
from prefect_modify_video.parameters import flow_arguments
from prefect_modify_video.media.sample import make_sample_video
from prefect_modify_video.storage.scratch import (
    MARKER,
    Owner,
    current_owner,
    make_scratch_dir,
    owner_is_dead,
    process_start_time,
    read_owner,
    remove_dead_scratch_dirs,
)
from prefect_modify_video.testing import FakeModifyServer

# A child process that makes a scratch folder in each folder named on its command line, prints
# their paths as JSON, then sleeps until killed (or exits at once with "exit").
MAKER = """
import json, sys, time
from prefect_modify_video.storage.scratch import make_scratch_dir
made = [str(make_scratch_dir(prefix, parent)) for prefix, parent in zip(sys.argv[2::2], sys.argv[3::2])]
print(json.dumps(made), flush=True)
if sys.argv[1] != "exit":
    time.sleep(600)
"""


def maker(then: str, *prefix_and_parent: str) -> tuple[subprocess.Popen, list[Path]]:
    """Starts a child that makes scratch folders; returns it (running, or exited with ``then="exit"``) and them."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), *sys.path])}
    process = subprocess.Popen(
        [sys.executable, "-c", MAKER, then, *prefix_and_parent], stdout=subprocess.PIPE, text=True, env=env
    )
    assert process.stdout is not None
    made = [Path(p) for p in json.loads(process.stdout.readline())]
    if then == "exit":
        assert process.wait(timeout=30) == 0
    return process, made


def write_marker(folder: Path, owner: Owner) -> Path:
    folder.mkdir(parents=True)
    (folder / MARKER).write_text(json.dumps(asdict(owner)))
    (folder / "clip.mp4").write_bytes(b"\0" * 1000)
    return folder


def test_a_folder_names_its_owner_and_a_live_owner_keeps_it(tmp_path):
    folder = make_scratch_dir(".film.work-", tmp_path)
    assert folder.parent == tmp_path and folder.name.startswith(".film.work-")
    owner = read_owner(folder)
    assert owner == current_owner()
    assert owner.pid == os.getpid() and owner.host == socket.gethostname()
    if sys.platform.startswith("linux"):
        assert owner.started == process_start_time(os.getpid()) is not None and owner.boot
    assert not owner_is_dead(owner)
    assert remove_dead_scratch_dirs(".*.work-*", tmp_path) == []
    assert folder.is_dir()


def test_folders_of_an_exited_process_are_removed_and_of_a_running_one_kept(tmp_path):
    _, (dead_work, dead_fetch) = maker("exit", ".film.work-", str(tmp_path), "modify-video-fetch-", str(tmp_path))
    alive, (live_work,) = maker("sleep", ".film.work-", str(tmp_path))
    try:
        (dead_work / "extract").mkdir()
        (dead_work / "extract" / "s000.mp4").write_bytes(b"\0" * 10_000)
        assert remove_dead_scratch_dirs(".*.work-*", tmp_path) == [dead_work]
        assert not dead_work.exists() and live_work.is_dir()
        assert dead_fetch.is_dir(), "only the folders named by the pattern"
        assert remove_dead_scratch_dirs("modify-video-fetch-*", tmp_path) == [dead_fetch]
        assert live_work.is_dir()
    finally:
        alive.kill()
        alive.wait()
    # Its owner is gone now.
    assert remove_dead_scratch_dirs(".*.work-*", tmp_path) == [live_work]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process start times are read from /proc")
def test_a_reused_pid_is_told_apart_by_its_start_time(tmp_path):
    """A live pid whose start time is not the marker's belongs to another process: the owner is dead."""
    me = current_owner()
    reused = write_marker(tmp_path / ".a.work-reused", replace(me, started=str(int(me.started) - 1)))
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        other = replace(me, pid=sleeper.pid)
        reused_other = write_marker(tmp_path / ".b.work-reused", replace(other, started="1"))
        live_other = write_marker(tmp_path / ".c.work-live", replace(other, started=process_start_time(sleeper.pid)))
        assert remove_dead_scratch_dirs(".*.work-*", tmp_path) == [reused, reused_other]
        assert live_other.is_dir()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_unprovable_folders_are_kept(tmp_path):
    """Another host, another pid namespace, no marker, a broken marker, a file, a symlink: never touched."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = replace(current_owner(), pid=gone.pid)
    kept = [
        write_marker(tmp_path / ".a.work-host", replace(dead, host="render-02")),
        write_marker(tmp_path / ".b.work-ns", replace(dead, pid_namespace="pid:[1]")),
    ]
    (tmp_path / ".c.work-nomarker").mkdir()
    (tmp_path / ".c.work-nomarker" / "clip.mp4").write_bytes(b"x")
    broken = tmp_path / ".d.work-broken"
    broken.mkdir()
    (broken / MARKER).write_text("{not json")
    (tmp_path / ".e.work-file").write_text("a file")
    target = write_marker(tmp_path / "elsewhere", dead)
    (tmp_path / ".f.work-link").symlink_to(target)
    removed = write_marker(tmp_path / ".g.work-dead", dead)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert remove_dead_scratch_dirs(".*.work-*", tmp_path) == [removed]
    assert sorted(p.name for p in tmp_path.iterdir()) == [n for n in before if n != removed.name]
    assert all((folder / MARKER).is_file() for folder in kept) and (target / "clip.mp4").is_file()


def test_a_folder_from_before_a_reboot_is_removed(tmp_path):
    me = current_owner()
    if not me.boot:
        pytest.skip("no boot id on this system")
    # Its pid may well be alive now (our own): the boot tells it is another process.
    old = write_marker(tmp_path / ".a.work-old", replace(me, boot="00000000-0000-0000-0000-000000000000"))
    assert remove_dead_scratch_dirs(".*.work-*", tmp_path) == [old]


# A whole run killed with SIGKILL, then another run.


@pytest.fixture(scope="module")
def film(tmp_path_factory) -> Path:
    """7.5 s at 24 fps, served over HTTP so the run downloads it into its fetch folder."""
    folder = tmp_path_factory.mktemp("leftovers-film")
    return make_sample_video(folder / "film.mp4", seconds=7.5, width=160, height=90, fps=24, scenes=3)


@pytest.fixture(scope="module")
def film_url(film):
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            pass  # the killed run's connection is reset

    server = Server(("127.0.0.1", 0), functools.partial(Quiet, directory=str(film.parent)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{film.name}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("SEGMIND_API_KEY", "sk-leftovers-test")
    with FakeModifyServer(polls_to_complete=3) as fake:
        yield fake
        fake.wait_idle(30)


@pytest.mark.slow
def test_a_run_removes_what_a_killed_run_left_and_nothing_else(film, film_url, tmp_path, server, monkeypatch):
    temp, out = tmp_path / "tmp", tmp_path / "out"
    temp.mkdir()
    out.mkdir()
    env = {
        **os.environ, "TMPDIR": str(temp), "PREFECT_API_URL": PREFECT_API_URL.value(),
        "SEGMIND_API_KEY": "sk-leftovers-test",
    }
    killed = subprocess.Popen(
        [
            sys.executable, "-m", "prefect_modify_video.cli", "run", film_url, "--backend", "segmind-async",
            "--base-url", server.base_url, "--output", str(out / "film.mp4"), "--store", str(tmp_path / "store"),
            "--max-segment-seconds", "2.6", "--concurrency", "1", "--poll-interval-seconds", "0.2",
        ],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while server.stats("segmind").calls < 1 and time.monotonic() < deadline and killed.poll() is None:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(timeout=30) == -signal.SIGKILL, "the run ended before it could be killed"

    # What it left: the work folder with its clips, the fetch folder with the downloaded source.
    (work,) = [p for p in out.iterdir() if p.name.startswith(".film.work-")]
    (fetch,) = [p for p in temp.iterdir() if p.name.startswith("modify-video-fetch-")]
    assert any((work / "extract").iterdir())
    (downloaded,) = fetch.rglob("film.mp4")
    assert downloaded.read_bytes() == film.read_bytes()
    assert read_owner(work).pid == read_owner(fetch).pid == killed.pid

    # Beside them: folders of a live run (in both places), of another host, and one without a marker.
    alive, (live_work, live_fetch) = maker("sleep", ".other.work-", str(out), "modify-video-fetch-", str(temp))
    try:
        foreign = write_marker(out / ".film.work-foreign", replace(current_owner(), host="render-02"))
        unmarked = out / ".film.work-unmarked"
        unmarked.mkdir()

        monkeypatch.setattr(tempfile, "tempdir", str(temp))
        server.wait_idle(30)
        result = modify_video(**flow_arguments(ModifyVideoParameters(
            source=film_url, prompt="pencil sketch", output=str(out / "film.mp4"),
            backend=BackendSpec(name="segmind-async", base_url=server.base_url, poll_interval_seconds=0.1),
            max_segment_seconds=2.6, store_dir=str(tmp_path / "store"), retry_delay_seconds=0.05,
        )))
        assert Path(result.output) == out / "film.mp4"
        assert not work.exists() and not fetch.exists()
        assert live_work.is_dir() and live_fetch.is_dir() and foreign.is_dir() and unmarked.is_dir()
        assert sorted(p.name for p in temp.iterdir()) == [live_fetch.name]
        assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == sorted(
            [live_work.name, foreign.name, unmarked.name]
        )
    finally:
        alive.kill()
        alive.wait()


@pytest.mark.slow
def test_the_preview_and_the_batch_mark_their_scratch_folders_and_remove_dead_ones(tmp_path, monkeypatch):
    """The preview's temp folder and the batch's work folder carry their owner's marker while they run (seen from
    the HTTP server the source is downloaded from), and each flow removes the folders of its kind that a dead
    run left, keeping a live run's."""
    from prefect_modify_video.flows.batch import BATCH_PREFIX, BatchParameters, BatchSettings, modify_video_batch
    from prefect_modify_video.flows.preview import PREVIEW_PREFIX, PreviewParameters, preview_modes

    temp, work, site = tmp_path / "tmp", tmp_path / "batch-work", tmp_path / "site"
    for folder in (temp, work, site):
        folder.mkdir()
    make_sample_video(site / "clip.mp4", seconds=1.5, width=160, height=90, fps=24, scenes=1)
    seen: list[tuple[str, bool]] = []

    class Watching(SimpleHTTPRequestHandler):
        """Serves the clip, noting the scratch folders that exist (and whether they are marked) when it is asked."""

        def do_GET(self):
            for parent in (temp, work):
                seen.extend((p.name, (p / MARKER).is_file()) for p in parent.iterdir()
                            if p.name.startswith((PREVIEW_PREFIX, BATCH_PREFIX)))
            super().do_GET()

        def log_message(self, *args):
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Watching, directory=str(site)))
    threading.Thread(target=http.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{http.server_address[1]}/clip.mp4"
    _, (dead_preview, dead_batch) = maker("exit", PREVIEW_PREFIX, str(temp), BATCH_PREFIX, str(work))
    alive, (live_preview, live_batch) = maker("sleep", PREVIEW_PREFIX, str(temp), BATCH_PREFIX, str(work))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    try:
        preview_modes(PreviewParameters(
            source=url, prompt="warm", modes=["flex_1"], end_s=1.0, store_dir=str(tmp_path / "store"),
            output_folder=str(tmp_path / "previews"),
        ))
        assert not dead_preview.exists() and live_preview.is_dir() and dead_batch.exists()
        modify_video_batch(BatchParameters(
            sources=[url], output_folder=str(tmp_path / "outputs"), work_dir=str(work),
            settings=BatchSettings(prompt="warm", backend={"name": "local"}, store_dir=str(tmp_path / "store")),
        ))
        assert not dead_batch.exists() and live_batch.is_dir()
    finally:
        alive.kill()
        alive.wait()
        http.shutdown()
        http.server_close()
    ours = {name: marked for name, marked in seen if name not in (live_preview.name, live_batch.name)}
    assert any(n.startswith(PREVIEW_PREFIX) for n in ours) and any(n.startswith(BATCH_PREFIX) for n in ours), seen
    assert all(ours.values()), f"unmarked scratch folders: {ours}"
    assert sorted(p.name for p in temp.iterdir() if p.name.startswith(PREVIEW_PREFIX)) == [live_preview.name]
    assert sorted(p.name for p in work.iterdir()) == [live_batch.name]


def test_the_module_needs_no_prefect():
    code = (
        "import sys, prefect_modify_video.storage.scratch\n"
        "assert not [m for m in sys.modules if m == 'prefect' or m.startswith('prefect.')], 'prefect loaded'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
