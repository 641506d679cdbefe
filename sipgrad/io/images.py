"""Loading user images robustly.

Whatever Pillow can decode is accepted; everything is normalised to 8-bit RGB with
EXIF orientation applied, so that saliency maps line up with what an image viewer
shows. Every failure becomes one ``ImageLoadError`` line that names the file.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from sipgrad.errors import ImageLoadError, SipgradError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB; alpha is composited over white, 16-bit is rescaled.

    Floating-point images (mode ``F``) whose values all lie in [0, 1] are read on that scale
    (the scientific convention; read on 0..255 they came out black), others on 0..255 or,
    above 255, on 0..65535. An image that is already RGB is returned as it is (no copy).
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        if image.mode == "F" and not np.isfinite(array).all():  # one inf would set the scale: all black
            raise ImageLoadError("image holds NaN or infinite values")
        if image.mode == "F" and array.size and np.nanmin(array) >= 0 and np.nanmax(array) <= 1:
            high = 1.0
        else:
            high = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        array = np.rint(np.clip(array / high * 255.0, 0, 255)).astype(np.uint8)  # rounded, as array_to_rgb
        return Image.fromarray(array, mode="L").convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


PIXEL_LIMIT_VARIABLE = "SIPGRAD_MAX_PIXELS"


def array_to_rgb(array: np.ndarray) -> np.ndarray:
    """An image array as H x W x 3 uint8, the one convention for arrays everywhere.

    Accepts H x W (grey), H x W x 1/3/4 and channels-first 1/3/4 x H x W. A uint8 RGB array is
    returned as it is (no copy); other dtypes are read on [0, 1] when no value exceeds 1, else on
    0..255 (clipped and rounded); NaN or inf is refused. A fourth (alpha) channel is dropped.
    """
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channels-first array
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise SipgradError(f"cannot use an array of shape {array.shape} as an image (want H x W or H x W x 3)")
    if array.dtype != np.uint8:
        values = np.asarray(array, dtype=np.float64)
        if not np.isfinite(values).all():  # one inf would set the scale and turn the image black
            raise SipgradError("the image array holds NaN or infinite values")
        scale = 255.0 if values.max(initial=0) <= 1.0 else 1.0
        array = np.rint(np.clip(values * scale, 0, 255)).astype(np.uint8)  # rounded: x / 255 * 255 gives x back
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=2)
    return array[..., :3] if array.shape[-1] == 4 else array


def pixel_limit() -> int:
    """The most pixels an image may have: Pillow's guard against decompression bombs (about 89.5 MP), or
    the environment variable ``SIPGRAD_MAX_PIXELS`` where it is set (then applied to Pillow too)."""
    text = os.environ.get(PIXEL_LIMIT_VARIABLE)
    if text is None:
        return Image.MAX_IMAGE_PIXELS
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if limit < 1:
        raise ImageLoadError(f"{PIXEL_LIMIT_VARIABLE} must be a whole number of pixels, got {text!r}")
    Image.MAX_IMAGE_PIXELS = limit
    return limit


def load_image(path: str | os.PathLike) -> Image.Image:
    """Read ``path`` as an RGB PIL image, honouring EXIF orientation.

    Raises ``ImageLoadError`` (one line, naming the file) for missing, empty,
    truncated, non-image or oversized files: more pixels than ``pixel_limit()``.
    """
    path = Path(path)
    limit = pixel_limit()
    try:
        if path.is_dir():
            raise ImageLoadError(f"{path}: is a folder, not an image file")
        if not path.is_file():
            raise ImageLoadError(f"{path}: no such file")
        if path.stat().st_size == 0:
            raise ImageLoadError(f"{path}: empty file")
        with warnings.catch_warnings():
            # Pillow only *warns* between MAX_IMAGE_PIXELS and twice that; refuse both.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Pillow reads from our file object, so the decoded pixels outlive it; rotating in
            # place and returning an RGB image as it is keeps one full-size copy, not three.
            with open(path, "rb") as stream:
                image = Image.open(stream)
                image.load()
            ImageOps.exif_transpose(image, in_place=True)
            try:
                return to_rgb(image)
            except ImageLoadError as error:
                raise ImageLoadError(f"{path}: {error}") from None
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageLoadError(f"{path}: image has more than {limit:,} pixels, the limit against "
                             f"decompression bombs; set {PIXEL_LIMIT_VARIABLE} to a larger number of pixels to read "
                             f"it") from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"{path}: not an image file Pillow can read") from None
    except (OSError, ValueError, SyntaxError) as error:  # truncated data, bad headers, permissions
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ImageLoadError(f"{path}: cannot read image ({reason})") from None


def load_image_array(path: str | os.PathLike) -> np.ndarray:
    """``load_image`` as an H x W x 3 uint8 array (read-only), without keeping the PIL image.

    For a batch of large photos this halves what is held: the decoded PIL image is dropped
    once its pixels are in the array.
    """
    return np.asarray(load_image(path))


def find_images(paths: list[str | os.PathLike], exclude: str | os.PathLike | None = None,
                outputs: tuple[str, ...] = ()) -> list[Path]:
    """Expand files and folders (recursively, sorted) into a list of image paths.

    Files named explicitly are kept whatever their extension or name (so a bad file gets
    a clear error later); inside folders only known image extensions are taken.

    A run must not explain what an earlier run wrote. Inside folders, files whose names end
    with one of ``outputs`` (the suffixes of the files a run writes, e.g. ``.overlay.png``)
    are skipped wherever they lie, with one warning saying how many: the earlier run may
    have written to another output folder than this one. ``exclude`` is this run's output
    folder: where it lies inside a searched folder, nothing under it is taken. Where the
    searched folder is the output folder itself or lies inside it (``--out .``), skipping
    everything would find no images at all; there the name rule alone applies.

    A file reached twice (named and inside a named folder, or as ``x.jpg`` and ``./x.jpg``) is
    taken once, at its first place, with one warning: it would otherwise be explained twice
    under two output names.
    """
    skip = Path(exclude).resolve() if exclude is not None else None
    outputs = tuple(outputs)
    skipped_outputs = 0

    def wanted(path: Path, inside_output: bool) -> bool:
        nonlocal skipped_outputs
        if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
            return False
        if skip is not None and not inside_output and path.resolve().is_relative_to(skip):
            return False
        if outputs and path.name.endswith(outputs):
            skipped_outputs += 1
            return False
        return True

    found: list[Path] = []
    for given in paths:
        if not str(given).strip():  # Path("") is ".": an unset variable would explain the whole folder tree
            raise SipgradError("an image path is empty; name a file or a folder (\".\" for this one)")
        entry = Path(given)
        if entry.is_dir():
            inside_output = skip is not None and entry.resolve().is_relative_to(skip)
            found.extend(sorted(p for p in entry.rglob("*") if wanted(p, inside_output)))
        else:
            found.append(entry)
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    if len(unique) < len(found):
        warnings.warn(f"{len(found) - len(unique)} file(s) reached more than once (named twice, or named and "
                      f"inside a named folder); each is taken once", stacklevel=2)
        found = list(unique.values())
    if skipped_outputs:
        warnings.warn(f"skipped {skipped_outputs} file(s) named like the images this tool writes "
                      f"({', '.join('*' + s for s in outputs)}); name such a file itself to take it as an input",
                      stacklevel=2)
    return found
