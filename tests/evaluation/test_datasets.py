"""Every loader on tiny fixtures written here, and boxes following the image through resize and crop."""

import json

import numpy as np
import pytest
from PIL import Image

from sipgrad.errors import SipgradError
from sipgrad.evaluation import builtin_cases, load_box_dataset
from sipgrad.models import imagenet_classes
from sipgrad.models.preprocessing import Preprocessing

CLASSES = imagenet_classes()


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a.jpg", "b.png"):
        Image.fromarray(np.zeros((100, 200, 3), np.uint8)).save(folder / name)
    return folder


def _voc_xml(filename, objects):
    body = "".join(f"<object><name>{n}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
                   f"<ymax>{b[3]}</ymax></bndbox></object>" for n, b in objects)
    return f"<annotation><filename>{filename}</filename>{body}</annotation>"


def test_imagenet_xml_groups_boxes_by_class(images, tmp_path):
    xml = tmp_path / "xml"
    xml.mkdir()
    (xml / "a.xml").write_text(_voc_xml("a", [("n02124075", (11, 21, 50, 60)), ("n02124075", (101, 1, 200, 100)),
                                              ("n07920052", (1, 1, 10, 10))]))
    cases = load_box_dataset("imagenet", images, xml, CLASSES)
    assert [(c.case_id, c.target) for c in cases] == [("a.jpg#285", 285), ("a.jpg#967", 967)]
    assert cases[0].boxes == ((10.0, 20.0, 50.0, 60.0), (100.0, 0.0, 200.0, 100.0))  # 1-based inclusive -> continuous
    assert cases[0].load().size == (200, 100)


def test_voc_with_label_map(images, tmp_path):
    (tmp_path / "b.xml").write_text(_voc_xml("b.png", [("cat", (1, 1, 20, 20))]))
    with pytest.raises(SipgradError, match="unknown class name 'cat'"):
        load_box_dataset("voc", images, tmp_path / "b.xml", CLASSES)
    cases = load_box_dataset("voc", images, tmp_path / "b.xml", CLASSES, label_map={"cat": "tabby"})
    assert cases[0].target == CLASSES.index("tabby") and cases[0].image.name == "b.png"


def test_coco(images, tmp_path):
    document = {"images": [{"id": 7, "file_name": "b.png"}], "categories": [{"id": 1, "name": "espresso"}],
                "annotations": [{"image_id": 7, "category_id": 1, "bbox": [10, 20, 30, 40]},
                                {"image_id": 7, "category_id": 1, "bbox": [0, 0, 5, 5]}]}
    (tmp_path / "coco.json").write_text(json.dumps(document))
    cases = load_box_dataset("coco", images, tmp_path / "coco.json", CLASSES)
    assert len(cases) == 1 and cases[0].boxes == ((10, 20, 40, 60), (0, 0, 5, 5))


def test_csv_and_jsonl(images, tmp_path):
    (tmp_path / "boxes.csv").write_text("image,label,x0,y0,x1,y1\na.jpg,espresso,1,2,3,4\na.jpg,967,5,6,7,8\n"
                                        "b.png,n02124075,0,0,10,10\n")
    cases = load_box_dataset("csv", images, tmp_path / "boxes.csv", CLASSES)
    assert [(c.image.name, c.target, len(c.boxes)) for c in cases] == [("a.jpg", 967, 2), ("b.png", 285, 1)]
    (tmp_path / "boxes.jsonl").write_text(json.dumps({"image": "b.png", "label": 285, "x0": 0, "y0": 0, "x1": 5,
                                                      "y1": 5}) + "\n")
    assert load_box_dataset("csv", images, tmp_path / "boxes.jsonl", CLASSES)[0].target == 285


@pytest.mark.parametrize("header", ["\ufeffimage,label,x0,y0,x1,y1", "image, label, x0, y0, x1, y1",
                                    "Image,Label,X0,Y0,X1,Y1"])
def test_a_csv_header_with_a_byte_order_mark_spaces_or_capitals_reads_the_same(images, tmp_path, header):
    # Excel's "CSV UTF-8" starts with a byte-order mark; hand-written files put spaces after commas.
    (tmp_path / "boxes.csv").write_text(f"{header}\na.jpg, 967, 5, 6, 7, 8\nb.png,n02124075,0,0,10,10\n",
                                        encoding="utf-8")
    cases = load_box_dataset("csv", images, tmp_path / "boxes.csv", CLASSES)
    assert [(c.image.name, c.target, c.boxes) for c in cases] == [("a.jpg", 967, ((5.0, 6.0, 7.0, 8.0),)),
                                                                  ("b.png", 285, ((0.0, 0.0, 10.0, 10.0),))]


def test_a_csv_row_with_more_fields_than_the_header_is_refused_naming_its_line(images, tmp_path):
    """An unquoted comma in a label shifts every later column: the row is refused, not read with the box moved."""
    (tmp_path / "boxes.csv").write_text("image,label,x0,y0,x1,y1\nb.png,285,0,0,10,10\n"
                                        "a.jpg,Egyptian, cat,1,2,3,4\n")
    with pytest.raises(SipgradError, match=r"boxes\.csv: line 3: more fields than the header's 6 "
                                           r"\(image,label,x0,y0,x1,y1\); quote a label"):
        load_box_dataset("csv", images, tmp_path / "boxes.csv", CLASSES)
    (tmp_path / "boxes.csv").write_text("image,label,x0,y0,x1,y1,difficult\nb.png,285,0,0,10,10,0\n")
    assert len(load_box_dataset("csv", images, tmp_path / "boxes.csv", CLASSES)) == 1  # a named extra column is fine
    (tmp_path / "boxes.csv").write_text("image,label,x0,y0,x1,y1\nb.png,285,0,0,10,10,\n")  # a trailing comma
    assert load_box_dataset("csv", images, tmp_path / "boxes.csv", CLASSES)[0].boxes == ((0.0, 0.0, 10.0, 10.0),)


@pytest.mark.parametrize("path", ["../outside.jpg", "/etc/passwd", "sub/../../x.png"])
def test_paths_may_not_escape_the_data_root(images, tmp_path, path):
    (tmp_path / "boxes.csv").write_text(f"image,label,x0,y0,x1,y1\n{path},1,0,0,1,1\n")
    with pytest.raises(SipgradError, match="escapes the data root"):
        load_box_dataset("csv", images, tmp_path / "boxes.csv", CLASSES)


def test_bad_annotations_are_one_line_errors(images, tmp_path):
    (tmp_path / "bad.xml").write_text("<annotation><oops")
    with pytest.raises(SipgradError, match="malformed XML"):
        load_box_dataset("voc", images, tmp_path / "bad.xml", CLASSES)
    (tmp_path / "empty.csv").write_text("image,label,x0,y0,x1,y1\na.jpg,1,5,5,5,9\n")
    with pytest.raises(SipgradError, match="empty box"):
        load_box_dataset("csv", images, tmp_path / "empty.csv", CLASSES)


def test_boxes_follow_whole_image_resize():
    geometry = Preprocessing().geometry(width=448, height=112, crop=False)  # x scale 0.5, y scale 2
    assert geometry.box_to_input((100, 10, 200, 50)) == (50.0, 20.0, 100.0, 100.0)


def test_boxes_follow_resize_and_centre_crop():
    # 512 x 256 (w x h): shorter side 256 -> 256, so no resize; width 512 -> crop columns 144..368, rows 16..240.
    geometry = Preprocessing().geometry(width=512, height=256, crop=True)
    assert geometry.region == (144.0, 16.0, 368.0, 240.0)
    assert geometry.box_to_input((144, 16, 368, 240)) == (0.0, 0.0, 224.0, 224.0)
    assert geometry.box_to_input((100, 0, 200, 100)) == (-44.0, -16.0, 56.0, 84.0)
    # 1024 x 512: resized by 1/2 first, so original pixels count half.
    geometry = Preprocessing().geometry(width=1024, height=512, crop=True)
    assert geometry.box_to_input((288, 32, 736, 480)) == (0.0, 0.0, 224.0, 224.0)


def test_builtin_benchmarks_are_real_and_deterministic():
    photos = builtin_cases("photos", CLASSES)
    assert len(photos) >= 10 and len({c.image for c in photos}) >= 8
    assert any(len(c.boxes) > 1 for c in photos)  # several objects of one class
    assert len({c.image for c in photos}) < len(photos)  # several classes in one photo
    composites = builtin_cases("composites", CLASSES)
    assert len(composites) >= 200
    first = composites[3].load()
    assert np.array_equal(np.asarray(first), np.asarray(builtin_cases("composites", CLASSES)[3].load()))
    x0, y0, x1, y1 = composites[3].boxes[0]
    assert 0 <= x0 < x1 <= first.width and 0 <= y0 < y1 <= first.height


@pytest.mark.parametrize("bbox, message", [
    ([10, 20, 0, 40], "annotation 5: empty box (width=0, height=40)"),
    ([10, 20, float("nan"), 40], "annotation 5: box coordinate width=nan is not a finite number"),
    ([10, 20, 30], "annotation 5: bbox must be [x, y, width, height]"),
    (["a", 20, 30, 40], "annotation 5: box coordinate x='a' is not a number"),
])
def test_coco_bad_boxes_name_the_annotation(images, tmp_path, bbox, message):
    document = {"images": [{"id": 7, "file_name": "b.png"}], "categories": [{"id": 1, "name": "espresso"}],
                "annotations": [{"id": 5, "image_id": 7, "category_id": 1, "bbox": bbox}]}
    (tmp_path / "coco.json").write_text(json.dumps(document))
    with pytest.raises(SipgradError) as info:
        load_box_dataset("coco", images, tmp_path / "coco.json", CLASSES)
    assert message in str(info.value) and "coco.json" in str(info.value)


def test_voc_object_with_a_missing_or_infinite_coordinate(images, tmp_path):
    (tmp_path / "a.xml").write_text("<annotation><filename>a.jpg</filename><object><name>tabby</name><bndbox>"
                                    "<xmin>1</xmin><ymin>1</ymin><xmax>inf</xmax><ymax>5</ymax></bndbox></object>"
                                    "</annotation>")
    with pytest.raises(SipgradError, match=r"a.xml: object 1 \(tabby\): box coordinate xmax='inf' is not a finite"):
        load_box_dataset("voc", images, tmp_path / "a.xml", CLASSES)


def test_boxes_are_fitted_to_the_image(images, tmp_path):
    from sipgrad.evaluation.cases import BoxWarning

    (tmp_path / "boxes.csv").write_text("image,label,x0,y0,x1,y1\n"
                                        "a.jpg,1,-5,10,250,50\n"  # the images are 200 x 100: clipped
                                        "a.jpg,1,10,10,20,20\n"
                                        "b.png,2,300,0,400,50\n")  # wholly outside: its only box, case left out
    with pytest.warns(BoxWarning) as caught:
        cases = load_box_dataset("csv", images, tmp_path / "boxes.csv", CLASSES)
    assert [(c.case_id, c.boxes) for c in cases] == [("a.jpg#1", ((0.0, 10.0, 200.0, 50.0), (10.0, 10.0, 20.0, 20.0)))]
    messages = [str(w.message) for w in caught]
    assert any("case a.jpg#1: 1 box(es) reach past the 200x100 image" in m for m in messages)
    assert any("case b.png#2: no box left inside the image; the case is left out" in m for m in messages)


def test_image_size_follows_exif_rotation(tmp_path):
    from sipgrad.evaluation.cases import image_size
    from sipgrad.io.images import load_image

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    Image.fromarray(np.zeros((100, 200, 3), np.uint8)).save(tmp_path / "r.jpg", exif=exif)
    assert image_size(tmp_path / "r.jpg") == load_image(tmp_path / "r.jpg").size == (100, 200)
    assert image_size(tmp_path / "missing.jpg") is None


def test_a_builtin_loader_failure_names_the_case():
    from sipgrad.errors import ImageLoadError
    from sipgrad.evaluation.cases import Case

    def broken():
        raise OSError("disk on fire")

    with pytest.raises(ImageLoadError, match="case x#1: cannot make its image"):
        Case("x#1", None, 1, ((0, 0, 1, 1),), loader=broken).load()


@pytest.mark.parametrize("kind", ["imagenet", "voc"])
def test_xml_one_pixel_boxes_are_kept(images, tmp_path, kind):
    # 1-based inclusive corners: xmin == xmax is one pixel column (continuous x 4..5), not an empty box
    (tmp_path / "a.xml").write_text(_voc_xml("a.jpg", [("n02124075", (5, 3, 5, 9)), ("n02124075", (7, 8, 12, 8))]))
    cases = load_box_dataset(kind, images, tmp_path / "a.xml", CLASSES)
    assert cases[0].boxes == ((4.0, 2.0, 5.0, 9.0), (6.0, 7.0, 12.0, 8.0))


def test_xml_inverted_box_is_refused_with_the_written_values(images, tmp_path):
    (tmp_path / "a.xml").write_text(_voc_xml("a.jpg", [("tabby", (6, 3, 5, 9))]))
    with pytest.raises(SipgradError, match=r"a.xml: object 1 \(tabby\): inverted box \(xmin=6, ymin=3, xmax=5, "
                                           r"ymax=9\)") as info:
        load_box_dataset("voc", images, tmp_path / "a.xml", CLASSES)
    assert "\n" not in str(info.value)


def test_one_pixel_boxes_in_coco_and_csv(images, tmp_path):
    # both are continuous already: a one-pixel box is width 1 / x1 = x0 + 1, taken as written
    document = {"images": [{"id": 7, "file_name": "b.png"}], "categories": [{"id": 1, "name": "espresso"}],
                "annotations": [{"image_id": 7, "category_id": 1, "bbox": [4, 2, 1, 7]}]}
    (tmp_path / "coco.json").write_text(json.dumps(document))
    assert load_box_dataset("coco", images, tmp_path / "coco.json", CLASSES)[0].boxes == ((4, 2, 5, 9),)
    (tmp_path / "one.csv").write_text("image,label,x0,y0,x1,y1\na.jpg,1,4,2,5,9\n")
    assert load_box_dataset("csv", images, tmp_path / "one.csv", CLASSES)[0].boxes == ((4.0, 2.0, 5.0, 9.0),)


@pytest.mark.parametrize("images_table, categories_table, message", [
    ([{"id": 7, "file_name": None}], None, "image 7: file_name must be a non-empty string, got None"),
    ([{"id": 7, "file_name": 5}], None, "image 7: file_name must be a non-empty string, got 5"),
    ([{"id": 7, "file_name": ""}], None, "image 7: file_name must be a non-empty string, got ''"),
    ([{"id": 7}], None, "image 7: field file_name is missing"),
    ([{"id": "7", "file_name": "b.png"}], None, "image number 1: id must be an integer, got '7'"),
    ([{"file_name": "b.png"}], None, "image number 1: field id is missing"),
    ([5], None, "image number 1: expected a JSON object, got int"),
    (None, [{"id": 1, "name": None}], "category 1: name must be a non-empty string or a class index, got None"),
    (None, [{"id": 1, "name": " "}], "category 1: name must be a non-empty string or a class index, got ' '"),
    (None, [{"id": 1, "name": True}], "category 1: name must be a non-empty string or a class index, got True"),
    (None, [{"id": 1}], "category 1: field name is missing"),
    (None, [{"id": None, "name": "espresso"}], "category number 1: id must be an integer, got None"),
    (None, [{"id": 1, "name": "espresso"}, {"id": 2.0, "name": "tabby"}],
     "category number 2: id must be an integer, got 2.0"),
    ([{"id": 7, "file_name": "b.png"}, {"id": 7, "file_name": "a.jpg"}], None, "image number 2: id 7 is used twice"),
    (None, [{"id": 1, "name": "espresso"}, {"id": 1, "name": "tabby"}], "category number 2: id 1 is used twice"),
])
def test_coco_bad_image_or_category_entry_is_one_line(images, tmp_path, images_table, categories_table, message):
    # Checked when the tables are built: a null or numeric file_name used to reach ``root / relative``
    # and a null name ``ClassNames.index`` as an unexpected TypeError/AttributeError.
    document = {"images": images_table or [{"id": 7, "file_name": "b.png"}],
                "categories": categories_table or [{"id": 1, "name": "espresso"}],
                "annotations": [{"id": 5, "image_id": 7, "category_id": 1, "bbox": [10, 20, 30, 40]}]}
    (tmp_path / "coco.json").write_text(json.dumps(document))
    with pytest.raises(SipgradError) as info:
        load_box_dataset("coco", images, tmp_path / "coco.json", CLASSES)
    assert str(info.value) == f"{tmp_path / 'coco.json'}: {message}"


def test_coco_category_name_may_be_a_class_index(images, tmp_path):
    # ClassNames.index takes an index as well as a name or wnid, as the other formats' labels do
    document = {"images": [{"id": 7, "file_name": "b.png"}, {"id": 8, "file_name": "a.jpg"}],
                "categories": [{"id": 1, "name": 285}, {"id": 2, "name": "espresso"}],
                "annotations": [{"id": 5, "image_id": 7, "category_id": 1, "bbox": [10, 20, 30, 40]},
                                {"id": 6, "image_id": 8, "category_id": 2, "bbox": [1, 2, 3, 4]}]}
    (tmp_path / "coco.json").write_text(json.dumps(document))
    cases = load_box_dataset("coco", images, tmp_path / "coco.json", CLASSES)
    assert [(c.case_id, c.boxes) for c in cases] == [("a.jpg#967", ((1, 2, 4, 6),)), ("b.png#285", ((10, 20, 40, 60),))]


@pytest.mark.parametrize("kind", ["imagenet", "voc"])
@pytest.mark.parametrize("second, message", [
    ("<object><name>n02123045</name></object>", "object 2 (n02123045): bndbox is missing"),
    ("<object><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>30</xmax><ymax>30</ymax></bndbox></object>",
     "object 2: name is missing"),
    ("<object><name> </name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>30</xmax><ymax>30</ymax></bndbox></object>",
     "object 2: name is missing"),
])
def test_xml_object_without_bndbox_or_name_is_refused(images, tmp_path, kind, second, message):
    # Such objects used to be dropped without a word, so a file's boxes could silently go missing
    good = "<object><name>n02124075</name><bndbox><xmin>5</xmin><ymin>3</ymin><xmax>50</xmax><ymax>60</ymax></bndbox>" \
           "</object>"
    (tmp_path / "a.xml").write_text(f"<annotation><filename>a.jpg</filename>{good}{second}</annotation>")
    with pytest.raises(SipgradError) as info:
        load_box_dataset(kind, images, tmp_path / "a.xml", CLASSES)
    assert str(info.value) == f"{tmp_path / 'a.xml'}: {message}"
    (tmp_path / "a.xml").write_text(f"<annotation><filename>a.jpg</filename>{good}</annotation>")
    assert load_box_dataset(kind, images, tmp_path / "a.xml", CLASSES)[0].boxes == ((4.0, 2.0, 50.0, 60.0),)


def test_a_box_clipped_to_nothing_at_the_image_edge_is_dropped():
    from sipgrad.evaluation.cases import BoxWarning, fit_boxes

    # On a 200 x 100 image, a box starting at x = 200 (or y = 100) keeps no area after clipping.
    with pytest.warns(BoxWarning, match="2 box\\(es\\) lie wholly outside"):
        kept = fit_boxes("x#1", [(200.0, 10.0, 260.0, 50.0), (10.0, 100.0, 20.0, 130.0), (5.0, 5.0, 6.0, 6.0)],
                         (200, 100))
    assert kept == ((5.0, 5.0, 6.0, 6.0),)


def test_boxes_follow_a_non_square_input():
    from sipgrad.models.preprocessing import Geometry

    # a 400 x 100 (w x h) original onto a 100 x 50 input: x scale 1/4, y scale 1/2
    geometry = Geometry((100, 400), (0.0, 0.0, 400.0, 100.0), (50, 100))
    assert geometry.box_to_input((40, 20, 80, 60)) == (10.0, 10.0, 20.0, 30.0)


@pytest.mark.parametrize("format", ["csv", "coco"])
def test_a_folder_given_for_a_one_file_format_is_one_line_naming_it(images, tmp_path, format):
    # It was "[Errno 21] Is a directory" from deep inside the reader.
    with pytest.raises(SipgradError, match=rf"{tmp_path}: is a folder; the {format} format reads one annotations file"):
        load_box_dataset(format, images, tmp_path, CLASSES)


def test_box_clipping_reads_sizes_under_the_raised_pixel_limit(tmp_path, monkeypatch):
    # image_size() ran before any load_image(), so SIPGRAD_MAX_PIXELS was not yet applied to Pillow and a large
    # photo's size came back as unknown (its boxes left unclipped).
    from PIL import Image

    from sipgrad.evaluation.cases import image_size

    Image.new("RGB", (100, 50)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    monkeypatch.setenv("SIPGRAD_MAX_PIXELS", "10000")
    assert image_size(tmp_path / "big.png") == (100, 50)
