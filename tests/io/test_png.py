"""The streaming PNG writer: any split into row blocks decodes to exactly the pixels given."""

import os
import stat

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from sipgrad.errors import SipgradError
from sipgrad.io.png import write_png_rows


@settings(max_examples=25, deadline=None)
@given(height=st.integers(1, 40), width=st.integers(1, 23), cuts=st.lists(st.integers(1, 39), max_size=4),
       seed=st.integers(0, 2**16))
def test_blocks_decode_to_the_same_pixels(tmp_path_factory, height, width, cuts, seed):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    edges = sorted({c for c in cuts if c < height} | {0, height})
    path = tmp_path_factory.mktemp("png") / "rows.png"
    write_png_rows(path, width, height, (pixels[a:b] for a, b in zip(edges, edges[1:])))
    with Image.open(path) as decoded:
        assert decoded.mode == "RGB" and decoded.size == (width, height)
        assert np.array_equal(np.asarray(decoded), pixels)


def test_smooth_images_compress(tmp_path):
    ramp = np.broadcast_to(np.arange(256, dtype=np.uint8)[:, None, None], (256, 300, 3))
    write_png_rows(tmp_path / "ramp.png", 300, 256, [np.ascontiguousarray(ramp)])
    assert os.path.getsize(tmp_path / "ramp.png") < ramp.nbytes / 50  # the Up filter turns a ramp into constants


def test_wrong_blocks_are_refused_and_nothing_is_left(tmp_path):
    path = tmp_path / "bad.png"
    with pytest.raises(SipgradError, match="3 PNG rows for an image 4 rows high"):
        write_png_rows(path, 2, 4, [np.zeros((3, 2, 3), np.uint8)])
    with pytest.raises(SipgradError, match=r"shape \(rows, 2, 3\)"):
        write_png_rows(path, 2, 4, [np.zeros((4, 2, 4), np.uint8)])
    assert list(tmp_path.iterdir()) == []


def test_written_with_the_normal_file_mode(tmp_path):
    write_png_rows(tmp_path / "m.png", 1, 1, [np.zeros((1, 1, 3), np.uint8)])
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "m.png").stat().st_mode) == 0o666 & ~umask
