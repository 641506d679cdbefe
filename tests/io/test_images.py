import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sipgrad.errors import ImageLoadError
from sipgrad.io import atomic_write, find_images, load_image


def _save(path, image, **kwargs):
    image.save(path, **kwargs)
    return path


def test_modes_are_converted_to_rgb(tmp_path):
    gray = _save(tmp_path / "g.png", Image.new("L", (5, 4), 77))
    rgba = _save(tmp_path / "a.png", Image.new("RGBA", (5, 4), (255, 0, 0, 0)))  # fully transparent red
    palette = _save(tmp_path / "p.png", Image.new("RGB", (5, 4), (0, 0, 255)).convert("P"))
    deep = _save(tmp_path / "d.png", Image.fromarray(np.full((4, 5), 65535, dtype=np.uint16)))
    assert load_image(gray).getpixel((0, 0)) == (77, 77, 77)
    assert load_image(rgba).getpixel((0, 0)) == (255, 255, 255)  # composited over white
    assert load_image(palette).getpixel((0, 0)) == (0, 0, 255)
    assert load_image(deep).getpixel((0, 0)) == (255, 255, 255)  # 16-bit full scale -> 255
    assert all(load_image(p).mode == "RGB" and load_image(p).size == (5, 4) for p in (gray, rgba, palette, deep))


def test_exif_orientation_is_honoured(tmp_path):
    image = Image.new("RGB", (6, 3), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    path = tmp_path / "rot.jpg"
    image.save(path, exif=exif)
    assert load_image(path).size == (3, 6)


@pytest.mark.parametrize("content, reason", [
    (b"", "empty file"),
    (b"this is not an image", "not an image"),
])
def test_bad_files_get_one_line_errors(tmp_path, content, reason):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert str(path) in str(info.value) and reason in str(info.value) and "\n" not in str(info.value)


def test_truncated_and_missing_files(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageLoadError, match="cut.png: cannot read image"):
        load_image(truncated)
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "missing.png")


def test_decompression_bombs_are_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("SIPGRAD_MAX_PIXELS", raising=False)
    path = _save(tmp_path / "big.png", Image.new("RGB", (100, 100)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100 - 1)  # between the warning and the error limit
    with pytest.raises(ImageLoadError, match="more than 9,999 pixels, the limit .* set SIPGRAD_MAX_PIXELS"):
        load_image(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # beyond twice the limit: Pillow's own error
    with pytest.raises(ImageLoadError, match="more than 1,000 pixels"):
        load_image(path)


def test_the_pixel_limit_can_be_raised_from_the_environment(tmp_path, monkeypatch):
    path = _save(tmp_path / "big.png", Image.new("RGB", (100, 100)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # restored after the test, whatever the variable sets
    monkeypatch.setenv("SIPGRAD_MAX_PIXELS", "10000")
    assert load_image(path).size == (100, 100)
    monkeypatch.setenv("SIPGRAD_MAX_PIXELS", "9999")
    with pytest.raises(ImageLoadError, match="more than 9,999 pixels"):
        load_image(path)
    monkeypatch.setenv("SIPGRAD_MAX_PIXELS", "lots")
    with pytest.raises(ImageLoadError, match="SIPGRAD_MAX_PIXELS must be a whole number of pixels, got 'lots'"):
        load_image(path)


def test_find_images_walks_folders_sorted(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("sub/b.png", "a.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    found = find_images([tmp_path, tmp_path / "notes.txt"])
    assert [p.name for p in found] == ["a.jpg", "b.png", "notes.txt"]


def test_a_file_reached_twice_is_taken_once_at_its_first_place(tmp_path, monkeypatch):
    (tmp_path / "imgs").mkdir()
    for name in ("a.png", "b.png"):
        (tmp_path / "imgs" / name).write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "imgs")
    monkeypatch.chdir(tmp_path)
    # The same file as a relative path, inside a named folder, as an absolute path and through a link.
    with pytest.warns(UserWarning, match=r"3 file\(s\) reached more than once"):
        found = find_images(["imgs/b.png", "imgs", str(tmp_path / "imgs" / "b.png"), "link/b.png"])
    assert found == [Path("imgs/b.png"), Path("imgs/a.png")]


def test_find_images_skips_an_output_folder_inside_the_input_but_not_the_input_itself(tmp_path):
    for name in ("a.jpg", "a.grad.overlay.png", "out/old.png", "out/b.grad.overlay.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "earlier").mkdir()
    (tmp_path / "earlier" / "c.grad.overlay.png").write_bytes(b"x")
    suffixes = (".overlay.png",)
    # --out is a subfolder of the input: nothing under it is an input; outputs of an earlier run to another
    # folder are skipped too, with one warning counting them.
    with pytest.warns(UserWarning, match=r"skipped 2 file\(s\) named like the images this tool writes \(\*\.overlay"):
        inside = find_images([tmp_path], exclude=tmp_path / "out", outputs=suffixes)
    assert [p.name for p in inside] == ["a.jpg"]
    # --out is the input folder (``--out .``): only files named like outputs are skipped, not every image.
    with pytest.warns(UserWarning, match="skipped 3 file"):
        same = find_images([tmp_path], exclude=tmp_path, outputs=suffixes)
    assert [p.name for p in same] == ["a.jpg", "old.png"]
    # the input lies inside --out: the same rule.
    with pytest.warns(UserWarning, match="skipped 1 file"):
        below = find_images([tmp_path / "out"], exclude=tmp_path, outputs=suffixes)
    assert [p.name for p in below] == ["old.png"]
    # a file named like an output but given by name is taken, without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        named = find_images([tmp_path / "a.grad.overlay.png", tmp_path / "out"], exclude=tmp_path / "elsewhere")
    assert [p.name for p in named] == ["a.grad.overlay.png", "b.grad.overlay.png", "old.png"]


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash")
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


def test_rgb_images_are_not_copied_and_arrays_are_rgb(tmp_path):
    from sipgrad.io.images import load_image_array, to_rgb

    image = Image.new("RGB", (5, 4), (10, 20, 30))
    assert to_rgb(image) is image
    image.save(tmp_path / "p.png")
    array = load_image_array(tmp_path / "p.png")
    assert array.shape == (4, 5, 3) and array.dtype == np.uint8 and tuple(array[3, 4]) == (10, 20, 30)


def test_a_folder_given_as_an_image_is_named_as_one(tmp_path):
    with pytest.raises(ImageLoadError, match="is a folder, not an image file"):
        load_image(tmp_path)
    with pytest.raises(ImageLoadError, match="missing.png: no such file"):
        load_image(tmp_path / "missing.png")


def test_32_bit_images_in_the_8_bit_range_are_not_rescaled_as_16_bit():
    """Mode "I" with values up to 255 is 8-bit data (kept); above 255 it is taken as 16-bit (scaled down)."""
    from sipgrad.io.images import to_rgb

    eight = Image.fromarray(np.array([[0, 128, 255]], dtype=np.int32), mode="I")
    assert [to_rgb(eight).getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (128, 128, 128), (255, 255, 255)]
    sixteen = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.int32), mode="I")
    assert [to_rgb(sixteen).getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_float_images_in_0_1_are_read_on_that_scale(tmp_path):
    """A float TIFF in [0, 1] (the scientific convention) came out black when read on 0..255."""
    from sipgrad.io.images import load_image_array, to_rgb

    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F")
    assert [to_rgb(unit).getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]  # 127.5 rounded, as for arrays
    unit.save(tmp_path / "unit.tif")
    assert load_image_array(tmp_path / "unit.tif")[0].tolist() == [[0, 0, 0], [128, 128, 128], [255, 255, 255]]
    wide = Image.fromarray(np.array([[0.0, 2.0, 255.0]], dtype=np.float32), mode="F")  # beyond 1: the 0..255 scale
    assert [to_rgb(wide).getpixel((x, 0))[0] for x in range(3)] == [0, 2, 255]


def test_find_images_takes_upper_case_extensions_in_folders(tmp_path):
    for name in ("B.JPG", "a.Png", "c.TIFF", "notes.TXT"):
        (tmp_path / name).write_bytes(b"x")
    assert find_images([tmp_path]) == [tmp_path / "B.JPG", tmp_path / "a.Png", tmp_path / "c.TIFF"]


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), -float("inf")])
def test_a_float_image_or_array_with_a_non_finite_value_is_refused(tmp_path, bad):
    """One +inf set the scale (0..65535 or 0..255 instead of [0, 1]) and the whole image came out black."""
    from sipgrad.errors import SipgradError
    from sipgrad.io.images import array_to_rgb

    values = np.full((4, 5), 0.5, dtype=np.float32)
    values[0, 0] = bad
    Image.fromarray(values, mode="F").save(tmp_path / "bad.tif")
    with pytest.raises(ImageLoadError, match=r"bad.tif: image holds NaN or infinite values"):
        load_image(tmp_path / "bad.tif")
    with pytest.raises(SipgradError, match="the image array holds NaN or infinite values"):
        array_to_rgb(np.dstack([values] * 3))
    assert array_to_rgb(np.full((4, 5, 3), 0.5))[0, 0].tolist() == [128, 128, 128]
