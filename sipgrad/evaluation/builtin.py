"""Built-in offline benchmarks made from images that ship in installed packages.

``photos``: real photos (scikit-image, matplotlib, scikit-learn sample images) with boxes
drawn by hand around objects of ImageNet classes, several classes per photo where the
photo has them. ``composites``: crops of those objects pasted at random scale and
position onto background textures, so the boxes are exact (seeded, deterministic).
``cluttered-digits``: scikit-learn's digits on cluttered canvases, for the models trained by
``benchmarks/train_cluttered_digits.py``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from sipgrad.errors import SipgradError
from sipgrad.evaluation.cases import Case
from sipgrad.models.classes import ClassNames


def _skimage(name: str) -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data" / name


def _matplotlib(name: str) -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / name


def _sklearn(name: str) -> Path:
    import sklearn.datasets

    return Path(sklearn.datasets.__file__).parent / "images" / name


# (source, file, {class name: [boxes x0, y0, x1, y1 in original pixels]}); drawn by hand on a grid.
PHOTOS = (
    (_skimage, "camera.png", {"tripod": [(228, 205, 410, 505)], "trench coat": [(0, 105, 300, 512)]}),
    (_skimage, "coffee.png", {"espresso": [(172, 15, 412, 305)]}),
    (_skimage, "motorcycle_left.png", {"moped": [(90, 95, 685, 450)]}),
    (_skimage, "astronaut.png", {"space shuttle": [(350, 0, 470, 280)], "crash helmet": [(275, 340, 505, 512)]}),
    (_skimage, "rocket.jpg", {"missile": [(302, 125, 340, 405)]}),
    (_matplotlib, "grace_hopper.jpg", {"military uniform": [(20, 320, 512, 600)],
                                       "Windsor tie": [(200, 405, 300, 520)]}),
    (_sklearn, "flower.jpg", {"daisy": [(165, 85, 448, 360), (288, 372, 442, 427)]}),
    (_sklearn, "china.jpg", {"palace": [(60, 28, 372, 392)]}),
)
BACKGROUNDS = ((_skimage, "grass.png"), (_skimage, "gravel.png"), (_skimage, "brick.png"),
               (_skimage, "hubble_deep_field.jpg"), (_skimage, "moon.png"))
BUILTIN = ("photos", "composites", "cluttered-digits")


@lru_cache(maxsize=32)
def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _photo_loader(path: Path) -> Callable[[], Image.Image]:
    return lambda: Image.fromarray(_rgb(path))


def photo_cases(classes: ClassNames) -> list[Case]:
    """One case per (photo, class) with the hand-drawn boxes."""
    cases = []
    for source, name, objects in PHOTOS:
        path = source(name)
        for label, boxes in objects.items():
            target = classes.index(label)
            cases.append(Case(f"photos/{Path(name).stem}#{label}", path, target,
                              tuple(tuple(map(float, b)) for b in boxes), _photo_loader(path)))
    return cases


def _composite(background: np.ndarray, crop: np.ndarray, size: int, scale: float, fx: float, fy: float):
    """Paste ``crop`` (longest side = scale * size) on a ``size`` x ``size`` background at relative (fx, fy)."""
    canvas = np.asarray(Image.fromarray(background).resize((size, size), Image.BILINEAR)).copy()
    longest = max(crop.shape[:2])
    factor = scale * size / longest
    w, h = max(1, round(crop.shape[1] * factor)), max(1, round(crop.shape[0] * factor))
    pasted = np.asarray(Image.fromarray(crop).resize((w, h), Image.BILINEAR))
    x0, y0 = round(fx * (size - w)), round(fy * (size - h))
    canvas[y0:y0 + h, x0:x0 + w] = pasted
    return canvas, (float(x0), float(y0), float(x0 + w), float(y0 + h))


def composite_cases(classes: ClassNames, count: int = 240, size: int = 320, seed: int = 0) -> list[Case]:
    """``count`` composites: each object crop (first box of each photo class) on a background."""
    objects = []
    for source, name, labelled in PHOTOS:
        for label, boxes in labelled.items():
            objects.append((source(name), label, boxes[0]))
    rng = np.random.default_rng(seed)
    cases = []
    for index in range(count):
        path, label, box = objects[index % len(objects)]
        background = BACKGROUNDS[(index // len(objects)) % len(BACKGROUNDS)]
        scale, fx, fy = rng.uniform(0.3, 0.7), rng.uniform(0, 1), rng.uniform(0, 1)
        x0, y0, x1, y1 = map(int, box)

        def load(path=path, background=background, crop=(x0, y0, x1, y1), scale=scale, fx=fx, fy=fy):
            a, b, c, d = crop
            image, _ = _composite(_rgb(background[0](background[1])), _rgb(path)[b:d, a:c], size, scale, fx, fy)
            return Image.fromarray(image)

        crop = _rgb(path)[y0:y1, x0:x1]
        _, pasted_box = _composite(np.zeros((2, 2, 3), np.uint8), crop, size, scale, fx, fy)
        cases.append(Case(f"composites/{index:04d}#{label}", None, classes.index(label), (pasted_box,), load))
    return cases


def cluttered_digit_cases(count: int = 297, seed: int = 0) -> list[Case]:
    """The test split of the cluttered digits (see ``sipgrad.evaluation.cluttered``)."""
    from sipgrad.evaluation.cluttered import make_samples

    samples = make_samples("test", count, seed)
    return [Case(f"cluttered-digits/{i:04d}#{s.label}", None, s.label, (s.box,),
                 (lambda image=s.image: Image.fromarray(image))) for i, s in enumerate(samples)]


def builtin_cases(name: str, classes: ClassNames) -> list[Case]:
    if name == "cluttered-digits":
        if len(classes) != 10:
            raise SipgradError("the 'cluttered-digits' benchmark needs a 10-class digits model (digits_resnet, "
                               "digits_vgg)")
        return cluttered_digit_cases()
    if len(classes) != 1000:
        raise SipgradError(f"the {name!r} benchmark has ImageNet classes; use an ImageNet model")
    if name == "photos":
        return photo_cases(classes)
    if name == "composites":
        return composite_cases(classes)
    raise SipgradError(f"unknown built-in benchmark {name!r}; choose from {', '.join(BUILTIN)}")
