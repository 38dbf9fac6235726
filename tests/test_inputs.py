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
from prefect_modify_video.flows.batch import BatchSettings
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
        modify_video(ModifyVideoParameters(source=str(source), output=output))
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
