"""Box-annotated data sets: ImageNet (ILSVRC XML), Pascal VOC XML, COCO JSON, CSV/JSONL.

Every loader returns ``Case`` objects (image, class, boxes of that class), sorted by
image then class, so runs are deterministic and can be sharded and resumed. Class
labels are resolved through the model's class names (index, name or wnid). Paths
inside annotation files are resolved against the data root and may not escape it.

Box conventions, all turned into continuous pixel coordinates (``cases.Box``: pixel column
j spans [j, j + 1)):

- ILSVRC and VOC XML: 1-based inclusive corners, the first and last pixel of the object;
  (xmin, ymin, xmax, ymax) becomes (xmin - 1, ymin - 1, xmax, ymax), so xmin == xmax is a
  box one pixel wide, and only xmax < xmin (or ymax < ymin) is refused.
- COCO: ``bbox`` = [x, y, width, height], 0-based continuous; a one-pixel box has width 1,
  and width or height 0 is empty and refused.
- CSV/JSONL: x0, y0, x1, y1 are already continuous (0-based, x1 the right edge); a
  one-pixel box at column c is x0 = c, x1 = c + 1, and x1 <= x0 is refused.

Bad annotations are one-line ``SipgradError``s naming the file and the line, object or
annotation id and the field: missing or non-finite coordinates, empty or inverted boxes,
JSONL lines that are not objects, XML objects without a ``name`` or ``bndbox`` (refused, not
skipped), COCO images or categories whose id is not an integer or whose ``file_name`` or
``name`` is not a non-empty string (a category name may also be a class index). Boxes are then checked against their image's size (read
from the file header): a box reaching past the image is clipped, one wholly outside it is
dropped, and a case left without boxes is left out, each with a ``BoxWarning`` naming the
case. An image that cannot be read is not checked here; its case fails when loaded.
"""

from __future__ import annotations

import csv
import json
import warnings
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

from sipgrad.errors import SipgradError
from sipgrad.evaluation.cases import (
    Box,
    BoxWarning,
    Case,
    finite_numbers,
    fit_boxes,
    image_size,
    make_box,
    safe_join,
)
from sipgrad.models.classes import ClassNames

FORMATS = ("imagenet", "voc", "coco", "csv")


def _cases_from(grouped: dict[Path, dict[int, list[Box]]], root: Path) -> list[Case]:
    """Cases sorted by image then class, with boxes fitted to their image (see the module docstring)."""
    cases = []
    for image in sorted(grouped):
        size = image_size(image)
        for target in sorted(grouped[image]):
            relative = image.relative_to(root) if image.is_relative_to(root) else image.name
            case_id = f"{relative}#{target}"
            boxes = fit_boxes(case_id, grouped[image][target], size)
            if not boxes:
                warnings.warn(f"case {case_id}: no box left inside the image; the case is left out", BoxWarning,
                              stacklevel=2)
                continue
            cases.append(Case(case_id, image, target, boxes))
    return cases


def _parse_voc_style(xml_path: Path) -> tuple[str | None, list[tuple[str, Box, str]]]:
    """(filename, [(label, box, where)]) from an ILSVRC or VOC annotation; 1-based inclusive pixel corners.

    The file's (xmin, ymin, xmax, ymax) name the first and last pixel columns and rows of the
    object, counted from 1, so the continuous box is (xmin - 1, ymin - 1, xmax, ymax) and a box
    with xmin == xmax is one pixel wide.

    ``where`` (``FILE: object N (label)``) prefixes any later error about that object, e.g. an unknown label.
    """
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as error:
        raise SipgradError(f"{xml_path}: malformed XML ({error})") from None
    filename = root.findtext("filename")
    objects = []
    for number, obj in enumerate(root.iter("object"), 1):
        # An object without a name or a box is refused, not skipped: dropping it would silently
        # leave out one of the file's boxes (or a whole case) from the evaluation.
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise SipgradError(f"{xml_path}: object {number}: name is missing")
        where = f"{xml_path}: object {number} ({name})"
        box = obj.find("bndbox")
        if box is None:
            raise SipgradError(f"{where}: bndbox is missing")
        keys = ("xmin", "ymin", "xmax", "ymax")
        xmin, ymin, xmax, ymax = finite_numbers([box.findtext(k) for k in keys], where, keys)
        # Inclusive corners: xmin == xmax is a box one pixel wide, not an empty one. Only an
        # inverted box (xmax < xmin) is refused, with the values as written in the file; the
        # continuous box (xmin - 1, ymin - 1, xmax, ymax) is then at least one pixel each way.
        if xmax < xmin or ymax < ymin:
            raise SipgradError(f"{where}: inverted box (xmin={xmin:g}, ymin={ymin:g}, xmax={xmax:g}, "
                               f"ymax={ymax:g}); 1-based inclusive corners need xmax >= xmin and ymax >= ymin")
        objects.append((name, (xmin - 1.0, ymin - 1.0, xmax, ymax), where))
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
        for label, box, where in objects:
            grouped[image][_class_index(classes, (label_map or {}).get(label, label), where)].append(box)
    return _cases_from(grouped, images.resolve())


def load_coco(images: Path, annotations: Path, classes: ClassNames,
              label_map: dict[str, str] | None = None) -> list[Case]:
    """COCO instances JSON: ``bbox`` is [x, y, width, height] in 0-based continuous pixels."""
    try:
        document = json.loads(annotations.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise SipgradError(f"{annotations}: not UTF-8 text ({error.reason})") from None
    except ValueError as error:
        raise SipgradError(f"{annotations}: not a COCO instances file (not valid JSON: {error})") from None
    if not isinstance(document, dict):
        raise SipgradError(f"{annotations}: not a COCO instances file (expected a JSON object with images, "
                           f"annotations and categories, got {type(document).__name__})")
    categories = _coco_table(document, "categories", "category", "name", annotations)
    files = _coco_table(document, "images", "image", "file_name", annotations)
    grouped: dict[Path, dict[int, list[Box]]] = defaultdict(lambda: defaultdict(list))
    for number, ann in enumerate(_coco_list(document, "annotations", annotations), 1):
        if not isinstance(ann, dict):
            raise SipgradError(f"{annotations}: annotation number {number}: expected a JSON object, "
                               f"got {type(ann).__name__}")
        where = f"{annotations}: annotation {ann.get('id', f'number {number}')}"
        absent = [key for key in ("bbox", "category_id", "image_id") if key not in ann]
        if absent:
            raise SipgradError(f"{where}: field {absent[0]} is missing")
        bbox = ann["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise SipgradError(f"{where}: bbox must be [x, y, width, height], got {bbox!r}")
        x, y, w, h = finite_numbers(bbox, where, ("x", "y", "width", "height"))
        if not (w > 0 and h > 0):
            raise SipgradError(f"{where}: empty box (width={w:g}, height={h:g}); both must be > 0")
        try:
            name = categories[ann["category_id"]]
        except (KeyError, TypeError):
            raise SipgradError(f"{where}: category_id {ann['category_id']!r} is not among the categories") from None
        try:
            file_name = files[ann["image_id"]]
        except (KeyError, TypeError):
            raise SipgradError(f"{where}: image_id {ann['image_id']!r} is not among the images") from None
        image = _joined(images, file_name, where)
        grouped[image][_class_index(classes, (label_map or {}).get(name, name), where)].append((x, y, x + w, y + h))
    return _cases_from(grouped, images.resolve())


def _coco_table(document: dict, key: str, entry: str, field: str, annotations: Path) -> dict[int, str | int]:
    """``{id: field}`` for the entries of ``document[key]`` (COCO ``images`` or ``categories``), each checked.

    Checked here, naming the file, the entry (``image 7``, or ``image number 2`` before its id is
    known) and the field, because a bad value would otherwise fail much later and without a
    name: a null or numeric ``file_name`` in the path join, a null category ``name`` in the
    class lookup, an empty ``file_name`` as "is a folder" when the image is read. Ids must be
    integers (as COCO writes them) so that an annotation's ``image_id`` or ``category_id`` can
    only match them exactly. A category name may also be a class index, which
    ``ClassNames.index`` takes like the other formats' labels.
    """
    table: dict[int, str | int] = {}
    for number, item in enumerate(_coco_list(document, key, annotations), 1):
        where = f"{annotations}: {entry} number {number}"
        if not isinstance(item, dict):
            raise SipgradError(f"{where}: expected a JSON object, got {type(item).__name__}")
        if "id" not in item:
            raise SipgradError(f"{where}: field id is missing")
        identifier = item["id"]
        if not isinstance(identifier, int) or isinstance(identifier, bool):
            raise SipgradError(f"{where}: id must be an integer, got {identifier!r}")
        where = f"{annotations}: {entry} {identifier}"
        if identifier in table:  # the annotations could not tell the two apart: the last would silently win
            raise SipgradError(f"{annotations}: {entry} number {number}: id {identifier} is used twice")
        if field not in item:
            raise SipgradError(f"{where}: field {field} is missing")
        value = item[field]
        index = field == "name" and isinstance(value, int) and not isinstance(value, bool)
        if not index and not (isinstance(value, str) and value.strip()):
            kind = "a non-empty string or a class index" if field == "name" else "a non-empty string"
            raise SipgradError(f"{where}: {field} must be {kind}, got {value!r}")
        table[identifier] = value
    return table


def load_table(images: Path, annotations: Path, classes: ClassNames,
               label_map: dict[str, str] | None = None) -> list[Case]:
    """CSV (header ``image,label,x0,y0,x1,y1``) or JSONL (objects with those keys), original pixels.

    The corners are continuous and 0-based (x1, y1 are the right and bottom edges, not the last
    pixel), so they are taken as they are and x1 <= x0 or y1 <= y0 is an empty or inverted box.
    """
    grouped: dict[Path, dict[int, list[Box]]] = defaultdict(lambda: defaultdict(list))
    for where, row in _table_rows(annotations):
        missing = [key for key in ("image", "label") if row.get(key) in (None, "")]
        if missing:
            raise SipgradError(f"{where}: field {missing[0]} is missing (need image,label,x0,y0,x1,y1)")
        box = make_box([row.get(k) for k in ("x0", "y0", "x1", "y1")], where)
        image = _joined(images, str(row["image"]), where)
        label = row["label"]
        label = label if isinstance(label, int) and not isinstance(label, bool) else \
            (label_map or {}).get(str(label), str(label))
        grouped[image][_class_index(classes, label, where)].append(box)
    return _cases_from(grouped, images.resolve())


def _table_rows(annotations: Path):
    """(``FILE: line N``, row dict) for each row of a CSV or JSONL file."""
    try:
        text = annotations.read_text(encoding="utf-8-sig")  # a byte-order mark (Excel's "CSV UTF-8") is dropped
    except UnicodeDecodeError as error:
        raise SipgradError(f"{annotations}: not UTF-8 text ({error.reason})") from None
    if annotations.suffix.lower() == ".jsonl":
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise SipgradError(f"{annotations}: line {number}: not valid JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise SipgradError(f"{annotations}: line {number}: expected a JSON object with image, label, x0, y0, "
                                   f"x1, y1, got {type(row).__name__}")
            yield f"{annotations}: line {number}", row
        return
    reader = csv.DictReader(text.splitlines(), skipinitialspace=True)  # "image, label, ..." as written by hand
    if reader.fieldnames is None:
        raise SipgradError(f"{annotations}: empty file; need a header image,label,x0,y0,x1,y1")
    read = list(reader.fieldnames)
    reader.fieldnames = [name.strip().lower() for name in read]  # Image,Label,X0... names the same columns
    absent = [key for key in ("image", "label", "x0", "y0", "x1", "y1") if key not in reader.fieldnames]
    if absent:
        raise SipgradError(f"{annotations}: line 1: the header lacks {', '.join(absent)} "
                           f"(need image,label,x0,y0,x1,y1; read {','.join(read)})")
    for row in reader:
        if any(str(extra).strip() for extra in row.pop(None, ())):  # an unquoted comma in a label shifts the rest
            raise SipgradError(f"{annotations}: line {reader.line_num}: more fields than the "
                               f"header's {len(read)} ({','.join(read)}); quote a label that holds a comma")
        yield f"{annotations}: line {reader.line_num}", row


def _class_index(classes: ClassNames, label: str | int, where: str) -> int:
    """``classes.index(label)``, its error prefixed with where the label was read (file, line or object)."""
    try:
        return classes.index(label)
    except SipgradError as error:
        raise SipgradError(f"{where}: label: {error}") from None


def _joined(images: Path, relative: str, where: str) -> Path:
    """``safe_join(images, relative)``, its error prefixed with the annotation that named the path."""
    try:
        return safe_join(images, relative)
    except SipgradError as error:
        raise SipgradError(f"{where}: image: {error}") from None


def _coco_list(document: dict, key: str, annotations: Path) -> list:
    value = document.get(key)
    if not isinstance(value, list):
        raise SipgradError(f"{annotations}: not a COCO instances file (field {key} is "
                           f"{'missing' if value is None else 'not a list'})")
    return value


def load_box_dataset(format: str, images: str | Path, boxes: str | Path, classes: ClassNames,
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
    if format in ("coco", "csv") and boxes.is_dir():  # one file holds every box; XML formats take a folder
        raise SipgradError(f"{boxes}: is a folder; the {format} format reads one annotations file "
                           f"(a folder of XML files is the voc or imagenet format)")
    if format == "coco":
        return load_coco(images, boxes, classes, label_map)
    if format == "csv":
        return load_table(images, boxes, classes, label_map)
    raise SipgradError(f"unknown box format {format!r}; choose from {', '.join(FORMATS)}")
