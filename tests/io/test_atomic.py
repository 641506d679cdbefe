"""atomic_write: whole files or nothing, with the mode a normal write gives."""

import os
import stat
from pathlib import Path

import pytest

from sipgrad.errors import SipgradError
from sipgrad.io.atomic import atomic_write
from sipgrad.io.names import case_file, output_stems, unique_stems


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_files_get_the_umask_mode_not_mkstemps_0600(tmp_path, umask, expected):
    previous = os.umask(umask)
    try:
        with atomic_write(tmp_path / "out.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "out.txt") == expected and (tmp_path / "out.txt").read_text() == "x"


def test_a_replaced_file_keeps_its_mode(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    target.chmod(0o640)
    with atomic_write(target) as tmp:
        tmp.write_text("new")
    assert _mode(target) == 0o640 and target.read_text() == "new"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_a_file_in_the_way_is_a_one_line_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(SipgradError, match="is a file, not a folder"):
        with atomic_write(tmp_path / "file" / "out.txt"):
            pass
    (tmp_path / "folder").mkdir()
    with pytest.raises(SipgradError, match="is a folder"):
        with atomic_write(tmp_path / "folder"):
            pass


def test_stems_are_unique_even_against_generated_names():
    assert unique_stems(["a.jpg", "a.png", "a-2.jpg", "A.jpg", "we ird.jpg"]) == ["a", "a-2", "a-2-2", "A-3",
                                                                                    "we_ird"]
    assert output_stems(["x/pic.jpg", "y/pic.jpg", "z/other.png"]) == ["pic", "pic-2", "other"]


@pytest.mark.parametrize("error, reason", [
    (OSError(28, "No space left on device"), "(No space left on device)"),
    (OSError("50176 requested and 29664 written"), "(50176 requested and 29664 written; is the disk full?)")])
def test_a_full_disk_is_one_line_naming_the_file(tmp_path, error, reason):
    # The second is numpy's short write, which carries no errno; neither named the file before.
    target = tmp_path / "out.npy"
    with pytest.raises(SipgradError) as raised:
        with atomic_write(target) as tmp:
            tmp.write_text("half")
            raise error
    assert str(raised.value) == f"{target}: cannot be written {reason}"
    assert list(tmp_path.iterdir()) == []  # no temporary left behind


def test_case_files_are_one_per_case_id_and_stay_inside_their_folder():
    """`sub/x.jpg#285` and `sub_x.jpg#285` used to share one saved map (the slug made both sub_x.jpg_285)."""
    ids = ["sub/x.jpg#285", "sub_x.jpg#285", "0.png#285", "photos/chelsea#285", "a b.jpg#1", "a_b.jpg#1",
           "../x.jpg#1", "_/x.jpg#1", "composites/0001#Egyptian cat", "composites/0001#Egyptian_cat",
           "x.jpg#a b", "x.jpg#a_b", "x#1_2", "x_1#2"]
    paths = [case_file("maps", "grad/topq:0.25", case, ".npy") for case in ids]
    assert len(set(paths)) == len(ids)
    assert paths[0] == Path("maps/grad_topq_0.25/sub/x.jpg_285.npy")
    assert paths[1] == Path("maps/grad_topq_0.25/sub_x.jpg_285.npy")
    assert paths[2] == Path("maps/grad_topq_0.25/0.png_285.npy")  # a plain id keeps its plain name
    assert paths[8].parent == Path("maps/grad_topq_0.25/composites")
    assert paths[8].name.startswith("0001_Egyptian_cat-") and paths[8].suffix == ".npy"
    assert all(".." not in path.parts for path in paths)
    assert case_file("m", "c", "a b.jpg#1", ".npy") == case_file("m", "c", "a b.jpg#1", ".npy")  # stable on resume
