"""media.files: files written whole or not at all, and the one media sniffer."""

from __future__ import annotations

import pytest

from prefect_modify_video.media.files import atomic_copy, atomic_write, sha256_of_file, sniff_media


def test_a_failed_write_leaves_nothing_and_the_old_file_untouched(tmp_path):
    target = tmp_path / "out" / "plan.json"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as partial:
            partial.write_text("half")
            raise RuntimeError("crash")
    assert list((tmp_path / "out").iterdir()) == [], "the folder is made, nothing is left in it"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as partial:
            partial.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"


def test_a_write_goes_through_a_hidden_file_beside_with_the_same_extension(tmp_path):
    target = tmp_path / "clip.mp4"
    target.write_text("old")
    with atomic_write(target) as partial:
        assert partial.parent == target.parent and partial.suffix == ".mp4" and partial.name.startswith(".")
        partial.write_text("new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_a_copy_has_the_same_content_and_leaves_no_temporary_file(tmp_path):
    source = tmp_path / "a.bin"
    source.write_bytes(bytes(range(256)) * 5000)
    copy = atomic_copy(source, tmp_path / "sub" / "b.bin")
    assert sha256_of_file(copy) == sha256_of_file(source)
    assert [p.name for p in copy.parent.iterdir()] == ["b.bin"]


@pytest.mark.parametrize(
    "head, media_format",
    [
        (b"\0\0\0\x18ftypisom" + b"\0" * 8, "mp4"),
        (b"\0\0\0\x20uuid" + b"\0" * 8, "mp4"),  # a vendor box first, as some cameras write
        (b"\0\0\0\x08wide\0\0\0\x10mdat", "mp4"),
        (b"RIFF\0\0\0\0AVI LIST", "avi"),
        (b"RIFF\0\0\0\0WEBPVP8 ", "webp"),
        (b"RIFF\0\0\0\0WAVEfmt ", None),
        (b"GIF89a" + b"\0" * 300, "gif"),
        (b"\x47" + b"\0" * 187 + b"\x47", "mpegts"),
        (b"", None),
    ],
)
def test_one_sniffer_names_containers_and_images(head, media_format):
    assert sniff_media(head) == media_format


def test_check_free_space_refuses_a_folder_without_room(tmp_path):
    from prefect_modify_video.errors import InvalidInputError
    from prefect_modify_video.media.files import check_free_space

    check_free_space({tmp_path / "not-yet" / "there": 1, tmp_path: 1})
    with pytest.raises(InvalidInputError, match="needs about .* GB here .* free"):
        # Two folders on one file system: their needs add up.
        check_free_space({tmp_path / "a": 10**18 // 2, tmp_path / "b": 10**18 // 2 + 1})
