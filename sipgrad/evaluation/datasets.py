"""Box-annotated data sets: ImageNet (ILSVRC XML), Pascal VOC XML, COCO JSON, CSV/JSONL.

Every loader returns ``Case`` objects (image, class, boxes of that class), sorted by
image then class, so runs are deterministic and can be sharded and resumed. Class
labels are resolved through the model's class names (index, name or wnid). Paths
inside annotation files are resolved against the data root and may not escape it.
"""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

from sipgrad.errors import SipgradError
from sipgrad.evaluation.cases import Box, Case, safe_join
from sipgrad.models.classes import ClassNames

FORMATS = ("imagenet", "voc", "coco", "csv")


def _cases_from(grouped: dict[Path, dict[int, list[Box]]], root: Path) -> list[Case]:
    cases = []
    for image in sorted(grouped):
        for target in sorted(grouped[image]):
            relative = image.relative_to(root) if image.is_relative_to(root) else image.name
            cases.append(Case(f"{relative}#{target}", image, target, tuple(grouped[image][target])))
    return cases


def _parse_voc_style(xml_path: Path) -> tuple[str | None, list[tuple[str, Box]]]:
    """(filename, [(label, box)]) from an ILSVRC or VOC annotation; 1-based inclusive pixel corners."""
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as error:
        raise SipgradError(f"{xml_path}: malformed XML ({error})") from None
    filename = root.findtext("filename")
    objects = []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        name = obj.findtext("name")
        if box is None or name is None:
            continue
        xmin, ymin, xmax, ymax = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        objects.append((name.strip(), (xmin - 1.0, ymin - 1.0, xmax, ymax)))
    return filename, objects


def _find_image(images: Path, stem: str | None, filename: str | None) -> Path | None:
    if filename:
        candidate = safe_join(images, filename)
        if candidate.suffix and candidate.is_file():
            return candidate
        stem = Path(filename).stem if not stem else stem
    for extension in (".JPEG", ".jpg", ".jpeg", ".png"):
        candidate = safe_join(images, f"{stem}{extension}")
        if candidate.is_file():
            return candidate
    return None


def load_xml_dataset(images: Path, annotations: Path, classes: ClassNames,
                     label_map: dict[str, str] | None = None) -> list[Case]:
    """ILSVRC or VOC: one XML per image in ``annotations`` (a folder, searched recursively)."""
    xml_files = sorted(annotations.rglob("*.xml")) if annotations.is_dir() else [annotations]
    if not xml_files or not xml_files[0].is_file():
        raise SipgradError(f"{annotations}: no XML annotation files")
    grouped: dict[Path, dict[int, list[Box]]] = defaultdict(lambda: defaultdict(list))
    for xml_path in xml_files:
        filename, objects = _parse_voc_style(xml_path)
        image = _find_image(images, xml_path.stem, filename)
        if image is None:
            raise SipgradError(f"{xml_path}: its image {filename or xml_path.stem} is not in {images}")
        for label, box in objects:
            grouped[image][classes.index((label_map or {}).get(label, label))].append(box)
    return _cases_from(grouped, images.resolve())


def load_coco(images: Path, annotations: Path, classes: ClassNames,
              label_map: dict[str, str] | None = None) -> list[Case]:
    """COCO instances JSON: ``bbox`` is [x, y, width, height] in 0-based continuous pixels."""
    try:
        document = json.loads(annotations.read_text(encoding="utf-8"))
        categories = {c["id"]: c["name"] for c in document["categories"]}
        files = {im["id"]: im["file_name"] for im in document["images"]}
        grouped: dict[Path, dict[int, list[Box]]] = defaultdict(lambda: defaultdict(list))
        for ann in document["annotations"]:
            x, y, w, h = ann["bbox"]
            name = categories[ann["category_id"]]
            image = safe_join(images, files[ann["image_id"]])
            grouped[image][classes.index((label_map or {}).get(name, name))].append((x, y, x + w, y + h))
    except (KeyError, TypeError, ValueError) as error:
        raise SipgradError(f"{annotations}: not a COCO instances file ({error})") from None
    return _cases_from(grouped, images.resolve())


def load_table(images: Path, annotations: Path, classes: ClassNames,
               label_map: dict[str, str] | None = None) -> list[Case]:
    """CSV (header ``image,label,x0,y0,x1,y1``) or JSONL (objects with those keys), original pixels."""
    if annotations.suffix.lower() == ".jsonl":
        rows = [json.loads(line) for line in annotations.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        with annotations.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    grouped: dict[Path, dict[int, list[Box]]] = defaultdict(lambda: defaultdict(list))
    for number, row in enumerate(rows, 1):
        try:
            box = tuple(float(row[k]) for k in ("x0", "y0", "x1", "y1"))
            image = safe_join(images, str(row["image"]))
            label = row["label"]
        except (KeyError, ValueError) as error:
            raise SipgradError(f"{annotations}: row {number}: need image,label,x0,y0,x1,y1 ({error})") from None
        if not (box[2] > box[0] and box[3] > box[1]):
            raise SipgradError(f"{annotations}: row {number}: empty box {box}")
        label = label if isinstance(label, int) else (label_map or {}).get(str(label), str(label))
        grouped[image][classes.index(label)].append(box)
    return _cases_from(grouped, images.resolve())


def load_dataset(format: str, images: str | Path, boxes: str | Path, classes: ClassNames,
                 label_map: dict[str, str] | None = None) -> list[Case]:
    """Cases of a data set in ``format`` (one of ``FORMATS``).

    ``label_map`` renames annotation labels to the model's classes first (e.g. VOC's
    ``"cat"`` to ``"tabby"``); labels not in it are used as they are.
    """
    images, boxes = Path(images), Path(boxes)
    if not images.is_dir():
        raise SipgradError(f"{images}: images folder not found")
    if not boxes.exists():
        raise SipgradError(f"{boxes}: annotations not found")
    if format in ("imagenet", "voc"):
        return load_xml_dataset(images, boxes, classes, label_map)
    if format == "coco":
        return load_coco(images, boxes, classes, label_map)
    if format == "csv":
        return load_table(images, boxes, classes, label_map)
    raise SipgradError(f"unknown box format {format!r}; choose from {', '.join(FORMATS)}")
