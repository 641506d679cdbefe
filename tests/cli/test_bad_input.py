"""Bad input through the real command: one line naming the file/line/field, a non-zero exit, and
every other input still processed."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image
from sipgrad_cli.main import main


def run_cli(capsys, *args):
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:  # argparse refusing an option
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("args, message", [
    (["analyze", "x.png", "--sip", "none,,topq:0.1"], "--sip: 'none,,topq:0.1' has an empty item between commas"),
    (["evaluate", "--builtin", "photos", "--out", "o", "--method", "grad,"], "--method: 'grad,' has an empty item"),
    (["evaluate", "--builtin", "photos", "--out", "o", "--sip", ","], "--sip: ',' names nothing"),
    (["fwdgrad", "cosine", "--batch-sizes", "8,,16"], "--batch-sizes: '8,,16' has an empty item between commas"),
    (["fwdgrad", "cosine", "--samplers", "gaussian,"], "--samplers: 'gaussian,' has an empty item between commas"),
    (["gradients", "train", "--optimizer", "sgd,,momentum"], "--optimizer: 'sgd,,momentum' has an empty item"),
    (["explain", "x.png", "--sip-layers", ""], "--sip-layers: '' names nothing"),
    (["calibrate", "--data", "d", "--out", "s.npz", "--sip-layers", ""], "--sip-layers: '' names nothing"),
    (["analyze", "x.png", "--layers", " "], "--layers: ' ' names nothing"),
])
def test_an_empty_item_in_a_comma_list_is_refused_not_dropped(capsys, args, message):
    code, out, err = run_cli(capsys, *args)
    assert code == 2 and out == ""
    assert message in one_line(err)


@pytest.mark.parametrize("args", [["explain", "{image}"], ["analyze", "{image}"], ["calibrate", "--data", "{dir}"],
                                  ["evaluate", "--builtin", "photos"]])
def test_an_empty_out_is_refused_not_taken_as_this_folder(capsys, tmp_path, asset_dir, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    args = [a.replace("{image}", str(asset_dir / "chelsea.jpg")).replace("{dir}", str(asset_dir)) for a in args]
    code, out, err = run_cli(capsys, *args, "--out", "")
    assert code == 2 and out == ""
    assert "--out: empty; name" in one_line(err)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("command", ["explain", "analyze"])
def test_an_empty_image_path_is_refused_not_taken_as_this_folder(capsys, tmp_path, monkeypatch, asset_dir, command):
    monkeypatch.chdir(tmp_path)
    shutil.copy(asset_dir / "chelsea.jpg", tmp_path / "chelsea.jpg")
    code, out, err = run_cli(capsys, command, "", "--out", "o")
    assert code == 2 and out == ""
    assert "an image path is empty; name a file or a folder" in one_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chelsea.jpg"]


@pytest.mark.parametrize("args, message", [
    (["explain", "{image}", "--gamma", "2"], "--gamma sets how SIP filters, but no SIP policy was given"),
    (["explain", "{image}", "--sip-layers", "_conv_head"], "--sip-layers sets how SIP filters, but no SIP policy"),
    (["explain", "{image}", "--no-variance-conservation"], "--no-variance-conservation sets how SIP filters"),
    (["explain", "{image}", "--sip", "topq:0.25", "--alpha", "0.01"],
     "--alpha applies to the cls and ins policies only, and --sip names neither"),
    (["explain", "{image}", "--sip", "topq:0.25", "--no-shapiro"], "--no-shapiro applies to the cls and ins"),
    (["explain", "{image}", "--sip", "topq:0.25", "--stats", "s.npz"], "--stats applies to the cls and ins"),
    (["analyze", "{image}", "--sip", "none,topq:0.1", "--quantile", "0.5"], "--quantile applies to the cls and ins"),
    (["analyze", "{image}", "--gamma", "2"], "--gamma sets how SIP filters, but no SIP policy"),
    (["analyze", "{image}", "--layers", "_conv_head", "--sip-layers", "_blocks.15._project_conv"],
     "--sip-layers sets how SIP filters, but no SIP policy"),
    (["explain", "{image}", "--sip", "pca:8", "--gamma", "2"], "--gamma damps the channels a channel policy prunes"),
    (["evaluate", "--builtin", "photos", "--layer-ratio", "0.5"], "--layer-ratio sets how SIP filters"),
    (["evaluate", "--builtin", "photos", "--sip", "none,topq:0.1", "--alpha", "0.1"], "--alpha applies to the cls"),
])
def test_sip_options_no_policy_reads_are_refused_not_ignored(capsys, tmp_path, asset_dir, args, message):
    args = [a.replace("{image}", str(asset_dir / "chelsea.jpg")) for a in args]
    code, out, err = run_cli(capsys, *args, "--out", tmp_path / "o")
    assert code == 2 and out == ""
    assert message in one_line(err)
    assert not (tmp_path / "o").exists()  # refused before any work


def test_analyze_reads_sip_layers_as_its_layers_without_a_policy(capsys, tmp_path, asset_dir):
    code, out, err = run_cli(capsys, "analyze", asset_dir / "chelsea.jpg", "--sip-layers", "_conv_head",
                             "--out", tmp_path, "--json")
    assert code == 0, err
    assert json.loads(out)["layers"] == ["_conv_head"]


def test_calibrate_takes_sip_layers_or_a_layer_ratio_not_both(capsys, tmp_path, asset_dir):
    code, _, err = run_cli(capsys, "calibrate", "--data", asset_dir, "--out", tmp_path / "s.npz",
                           "--sip-layers", "_conv_head", "--layer-ratio", "0.5")
    assert code == 2 and "not allowed with argument" in one_line(err)


@pytest.mark.parametrize("command", [["explain", "x.png"], ["analyze", "x.png"]])
def test_a_sip_spec_with_nothing_after_its_colon_is_refused(capsys, tmp_path, asset_dir, command):
    image = asset_dir / "chelsea.jpg"
    code, out, err = run_cli(capsys, command[0], image, "--sip", "topq:", "--out", tmp_path)
    assert code == 2 and out == ""
    assert "SIP policy 'topq:': nothing after ':'" in one_line(err)
    assert not any(tmp_path.iterdir())  # refused before any work


@pytest.mark.parametrize("args, message", [
    (["calibrate", "--data", "d", "--out", "s.npz", "--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
    (["calibrate", "--data", "d", "--out", "s.npz", "--batch-size", "-1"], "--batch-size: must be at least 1, got -1"),
    (["calibrate", "--data", "d", "--out", "s.npz", "--layer-ratio", "1.5"], "--layer-ratio: must be in (0, 1]"),
    (["explain", "x.png", "--batch-size", "-1"], "--batch-size: must be at least 1, got -1"),
    (["explain", "x.png", "--ig-steps", "0"], "--ig-steps: must be at least 1"),
    (["explain", "x.png", "--smoothgrad-noise", "-0.1"], "--smoothgrad-noise: must be 0 or more"),
    (["explain", "x.png", "--alpha", "nan"], "--alpha: 'nan' is not a finite number"),
    (["explain", "x.png", "--gamma", "0"], "--gamma: must be greater than 0"),
    (["explain", "x.png", "--batch-size", "two"], "--batch-size: 'two' is not a whole number"),
    (["analyze", "x.png", "--components", "0"], "--components: must be at least 1"),
    (["evaluate", "--builtin", "photos", "--out", "o", "--steps", "-1"], "--steps: must be 0 or more"),
    (["evaluate", "--builtin", "photos", "--out", "o", "--tolerance", "inf"], "--tolerance: 'inf' is not a finite"),
    (["evaluate", "--builtin", "photos", "--out", "o", "--batch-size", "0"], "--batch-size: must be at least 1"),
    (["evaluate", "--builtin", "photos", "--out", "o", "--limit", "0"], "--limit: must be at least 1"),
    (["calibrate", "--data", "d", "--out", "s.npz", "--seed", "4294967296"], "--seed: must be 0 to 4294967295"),
    (["explain", "x.png", "--seed", "99999999999999999999"], "--seed: must be 0 to 4294967295"),
    (["gradients", "spectrum", "--seed", "4294967296"], "--seed: must be 0 to 4294967295"),
    (["gradients", "train", "--seed", "0,4294967296"], "--seed: must be 0 to 4294967295"),
    (["fwdgrad", "train", "--seed", "4294967296"], "--seed: must be 0 to 4294967295"),
])
def test_numeric_options_are_checked_while_parsing(capsys, args, message):
    code, out, err = run_cli(capsys, *args)
    assert code == 2 and out == ""
    line = one_line(err)
    command = " ".join(args[:2] if args[0] in ("gradients", "fwdgrad") else args[:1])
    assert message in line and line.startswith(f"sipgrad {command}: error: argument")


@pytest.mark.parametrize("command", ["explain", "analyze", "evaluate", "calibrate"])
def test_out_naming_an_existing_file_says_what_is_wrong(capsys, asset_dir, tmp_path, command):
    existing = tmp_path / "taken"
    existing.write_text("mine")
    inputs = {"explain": [asset_dir / "chelsea.jpg"], "analyze": [asset_dir / "chelsea.jpg"],
              "evaluate": ["--builtin", "photos"], "calibrate": ["--data", tmp_path]}[command]
    out = existing if command != "calibrate" else tmp_path  # calibrate writes a file: a folder is wrong there
    code, _, err = run_cli(capsys, command, *inputs, "--out", out)
    assert code == 2
    line = one_line(err)
    assert "Errno" not in line
    assert ("is an existing file, not a folder" in line) if command != "calibrate" else ("is a folder" in line)
    assert existing.read_text() == "mine"


def test_calibrate_refuses_an_unwritable_out_before_any_work(capsys, tmp_path, monkeypatch):
    import sipgrad_cli.calibrate_cmd

    monkeypatch.setattr(sipgrad_cli.calibrate_cmd, "load_classifier", lambda args: pytest.fail("work started"))
    (tmp_path / "file").write_text("")
    code, _, err = run_cli(capsys, "calibrate", "--data", tmp_path, "--out", tmp_path / "file" / "stats.npz")
    assert code == 2 and "is a file" in one_line(err)


@pytest.fixture
def two_folders_same_names(asset_dir, tmp_path):
    root = tmp_path / "photos"
    for folder, source in (("a", "chelsea.jpg"), ("b", "coffee.jpg")):
        (root / folder).mkdir(parents=True)
        shutil.copy(asset_dir / source, root / folder / "pic.jpg")
    return root


def test_explain_keeps_outputs_of_same_named_inputs_apart_and_never_reads_its_own(capsys, two_folders_same_names):
    root = two_folders_same_names
    out = root / "out"  # inside the input folder
    for _ in range(2):  # the second run must not explain the first run's overlays and figures
        code, stdout, err = run_cli(capsys, "explain", root, "--out", out, "--json", "--batch-size", "1")
        assert code == 0, err
        results = json.loads(stdout)["results"]
        assert [r["image"].split("/")[-2:] for r in results] == [["a", "pic.jpg"], ["b", "pic.jpg"]]
    saliency = [r["saliency"] for r in results]
    assert [p.split("/")[-1] for p in saliency] == ["pic.grad.saliency.npy", "pic-2.grad.saliency.npy"]
    shapes = [np.load(p).shape for p in saliency]
    assert shapes == [(300, 451), (400, 600)]  # each file holds its own image's map
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{s}.grad.{kind}" for s in ("pic", "pic-2") for kind in ("saliency.npy", "overlay.png", "figure.png"))


def test_explain_compact_saliency(capsys, asset_dir, tmp_path):
    code, stdout, err = run_cli(capsys, "explain", asset_dir / "chelsea.jpg", "--out", tmp_path, "--json",
                                "--saliency-dtype", "float16")
    assert code == 0, err
    saliency = np.load(json.loads(stdout)["results"][0]["saliency"])
    assert saliency.dtype == np.float16 and saliency.shape == (300, 451) and np.isfinite(saliency).all()


# --- evaluate: bad annotations, boxes against the image, unreadable images -------------------------

@pytest.fixture
def box_images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    generator = np.random.default_rng(0)
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(generator.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(folder / name)
    return folder


EVALUATE = ("evaluate", "--method", "grad", "--steps", "0", "--batch-size", "2")


@pytest.mark.parametrize("name, text, message", [
    ("boxes.csv", "image,label,x0,y0,x1,y1\na.png,1,0,0,10,10\nb.png,1,0,inf,10,10\n",
     "boxes.csv: line 3: box coordinate y0='inf' is not a finite number"),
    ("boxes.csv", "image,label,x0,y0,x1,y1\na.png,1,0,0,10,nan\n", "line 2: box coordinate y1='nan' is not a finite"),
    ("boxes.csv", "image,label,x0,y0,x1,y1\na.png,1,20,0,10,10\n", "line 2: inverted box (x0=20, y0=0, x1=10"),
    ("boxes.csv", "image,label,x0,y0\na.png,1,20,0\n", "line 1: the header lacks x1, y1"),
    ("boxes.jsonl", '{"image": "a.png", "label": 1, "x0": 0, "y0": 0, "x1": 5, "y1": 5}\n[1, 2]\n',
     "boxes.jsonl: line 2: expected a JSON object"),
    ("boxes.jsonl", '{"image": "a.png", "label": 1, "x0": 0, "y0": 0, "x1": 5}\n',
     "boxes.jsonl: line 1: box coordinate y1 is missing"),
    ("boxes.jsonl", '{"image": "a.png", "label": 1, "x0": 0, "y0": 0, "x1": 5, "y1": Infinity}\n',
     "line 1: box coordinate y1=inf is not a finite number"),
    ("boxes.jsonl", '{"image": "a.png", "label": 1, "x0": 0, "y0": 0, "x1": 5, "y1": 5}\n{"image": \n',
     "boxes.jsonl: line 2: not valid JSON"),
    ("boxes.csv", "image,label,x0,y0,x1,y1\na.png,1,0,0,10,10\nb.png,nosuch,0,0,10,10\n",
     "boxes.csv: line 3: label: unknown class name 'nosuch'"),
    ("boxes.csv", "image,label,x0,y0,x1,y1\na.png,5000,0,0,10,10\n",
     "boxes.csv: line 2: label: class index 5000 is out of range"),
    ("boxes.jsonl", '{"image": "a.png", "label": 1, "x0": 0, "y0": 0, "x1": 5, "y1": 5}\n'
                    '{"image": "b.png", "label": "nosuch", "x0": 0, "y0": 0, "x1": 5, "y1": 5}\n',
     "boxes.jsonl: line 2: label: unknown class name 'nosuch'"),
    ("boxes.csv", "image,label,x0,y0,x1,y1\n../../etc/passwd,1,0,0,10,10\n",
     "boxes.csv: line 2: image: ../../etc/passwd: path escapes the data root"),
])
def test_bad_table_annotations_name_the_file_line_and_field(capsys, box_images, tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    code, _, err = run_cli(capsys, *EVALUATE, "--images", box_images, "--boxes", tmp_path / name,
                           "--out", tmp_path / "out")
    assert code == 2 and message in one_line(err)


def test_voc_box_missing_a_coordinate(capsys, box_images, tmp_path):
    (tmp_path / "a.xml").write_text("<annotation><filename>a.png</filename><object><name>tench</name><bndbox>"
                                    "<xmin>1</xmin><ymin>1</ymin><xmax>20</xmax></bndbox></object></annotation>")
    code, _, err = run_cli(capsys, *EVALUATE, "--format", "voc", "--images", box_images, "--boxes",
                           tmp_path / "a.xml", "--out", tmp_path / "out")
    assert code == 2 and "a.xml: object 1 (tench): box coordinate ymax is missing" in one_line(err)


def test_boxes_past_the_image_are_clipped_or_dropped_with_a_warning(capsys, box_images, tmp_path):
    (tmp_path / "boxes.csv").write_text("image,label,x0,y0,x1,y1\n"
                                        "a.png,1,-10,-5,40,30\n"  # reaches past the top-left corner: clipped
                                        "b.png,1,100,70,120,90\n"  # wholly outside the 80 x 60 image: case left out
                                        "c.png,2,10,10,30,30\n")
    code, _, err = run_cli(capsys, *EVALUATE, "--images", box_images, "--boxes", tmp_path / "boxes.csv",
                           "--out", tmp_path / "out")
    assert code == 0, err
    assert "sipgrad: warning: case a.png#1: 1 box(es) reach past the 80x60 image and were clipped" in err
    assert "sipgrad: warning: case b.png#1: no box left inside the image; the case is left out" in err
    records = [json.loads(line) for line in (tmp_path / "out" / "records.jsonl").read_text().splitlines()]
    assert [r["case"] for r in records] == ["a.png#1", "c.png#2"]
    # The clipped box covers columns 0..39 and rows 0..29 of the 80 x 60 image: a quarter of it.
    assert records[0]["box_fraction"] == pytest.approx(0.25, abs=0.01)


def test_an_unreadable_image_is_skipped_and_the_rest_evaluated(capsys, box_images, tmp_path):
    (box_images / "b.png").write_bytes(b"not a png")
    (tmp_path / "boxes.csv").write_text("image,label,x0,y0,x1,y1\na.png,1,0,0,40,30\nb.png,1,0,0,40,30\n"
                                        "c.png,2,10,10,30,30\nd.png,3,0,0,5,5\n")  # d.png does not exist
    code, _, err = run_cli(capsys, *EVALUATE, "--images", box_images, "--boxes", tmp_path / "boxes.csv",
                           "--out", tmp_path / "out")
    assert code == 1
    assert "b.png" in err and "d.png: no such file" in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("sipgrad: 2 of 4 case(s) skipped")
    records = [json.loads(line) for line in (tmp_path / "out" / "records.jsonl").read_text().splitlines()]
    scored = [r["case"] for r in records if "error" not in r]
    assert scored == ["a.png#1", "c.png#2"] and all(np.isfinite(r["energy"]) for r in records if "error" not in r)
    assert sorted(r["case"] for r in records if "error" in r) == ["b.png#1", "d.png#3"]


@pytest.mark.parametrize("after, message", [
    (0, "interrupted before any case was finished; no records were written"),
    (1, "interrupted; 1 record(s) of finished cases are in"),
])
def test_ctrl_c_during_evaluate_says_what_was_kept(capsys, box_images, tmp_path, monkeypatch, after, message):
    """It said "finished results were kept" even when nothing had been written."""
    import sipgrad.evaluation

    real = sipgrad.evaluation.evaluate

    def interrupted(*args, progress, **kwargs):
        done = []

        def count(n):
            done.append(n)
            if len(done) > after:
                raise KeyboardInterrupt

        if after == 0:
            raise KeyboardInterrupt
        return real(*args, progress=count, **kwargs)

    monkeypatch.setattr(sipgrad.evaluation, "evaluate", interrupted)
    (tmp_path / "boxes.csv").write_text("image,label,x0,y0,x1,y1\na.png,1,0,0,40,30\nc.png,2,10,10,30,30\n")
    code, _, err = run_cli(capsys, *EVALUATE[:-1], "1", "--images", box_images, "--boxes", tmp_path / "boxes.csv",
                           "--out", tmp_path / "out")
    assert code == 130 and message in one_line(err) and "Traceback" not in err


def test_ctrl_c_before_a_command_starts_its_work_claims_nothing(capsys, tmp_path, monkeypatch):
    """While the model loads nothing is written: "finished results were kept" was false there."""
    import sipgrad_cli.evaluate_cmd

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sipgrad_cli.evaluate_cmd, "load_classifier", interrupted)
    code, _, err = run_cli(capsys, "evaluate", "--builtin", "photos", "--out", tmp_path / "out")
    assert code == 130 and one_line(err) == "sipgrad: error: interrupted"


def test_library_errors_reach_the_user_as_flags(capsys):
    """The library names parameters (weights=FILE, the stats parameter); the CLI maps them to its flags."""
    from tests.conftest import ASSETS

    code, _, err = run_cli(capsys, "explain", str(ASSETS / "chelsea.jpg"), "--sip", "cls", "--out", "unused-out")
    line = one_line(err)
    assert code == 2 and "--stats FILE" in line and "stats parameter" not in line


# --- labels the model does not know: the error names where the label was read ----------------------
# (unknown labels in CSV and JSONL box files are in test_bad_table_annotations_name_the_file_line_and_field)


def test_voc_unknown_label_names_the_file_and_object(capsys, box_images, tmp_path):
    (tmp_path / "a.xml").write_text("<annotation><filename>a.png</filename><object><name>nosuch</name><bndbox>"
                                    "<xmin>1</xmin><ymin>1</ymin><xmax>20</xmax><ymax>20</ymax></bndbox></object>"
                                    "</annotation>")
    code, _, err = run_cli(capsys, *EVALUATE, "--format", "voc", "--images", box_images, "--boxes",
                           tmp_path / "a.xml", "--out", tmp_path / "out")
    assert code == 2 and "a.xml: object 1 (nosuch): label: unknown class name 'nosuch'" in one_line(err)


COCO_IMAGES = [{"id": 1, "file_name": "a.png"}]
COCO_CATEGORIES = [{"id": 1, "name": "tench"}]


@pytest.mark.parametrize("annotation, message", [
    ({"id": 7, "image_id": 1, "category_id": 2, "bbox": [0, 0, 5, 5]},
     "annotation 7: category_id 2 is not among the categories"),
    ({"id": 7, "image_id": 3, "category_id": 1, "bbox": [0, 0, 5, 5]}, "annotation 7: image_id 3 is not among the images"),
    ({"id": 7, "image_id": 1, "category_id": 1}, "annotation 7: field bbox is missing"),
    ({"image_id": 1, "bbox": [0, 0, 5, 5]}, "annotation number 1: field category_id is missing"),
    (5, "annotation number 1: expected a JSON object, got int"),
])
def test_coco_annotation_errors_name_the_annotation_and_field(capsys, box_images, tmp_path, annotation, message):
    document = {"images": COCO_IMAGES, "categories": COCO_CATEGORIES, "annotations": [annotation]}
    (tmp_path / "coco.json").write_text(json.dumps(document))
    code, _, err = run_cli(capsys, *EVALUATE, "--format", "coco", "--images", box_images, "--boxes",
                           tmp_path / "coco.json", "--out", tmp_path / "out")
    line = one_line(err)
    assert code == 2 and f"coco.json: {message}" in line


def test_coco_unknown_category_name_names_the_annotation(capsys, box_images, tmp_path):
    document = {"images": COCO_IMAGES, "categories": [{"id": 1, "name": "nosuch"}],
                "annotations": [{"id": 9, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5]}]}
    (tmp_path / "coco.json").write_text(json.dumps(document))
    code, _, err = run_cli(capsys, *EVALUATE, "--format", "coco", "--images", box_images, "--boxes",
                           tmp_path / "coco.json", "--out", tmp_path / "out")
    assert code == 2 and "coco.json: annotation 9: label: unknown class name 'nosuch'" in one_line(err)


@pytest.mark.parametrize("lines, message", [
    ("{chelsea} 285\n{coffee} nosuchclass\n", "list.txt:2: label: unknown class name 'nosuchclass'"),
    ("{chelsea} 5000\n", "list.txt:1: label: class index 5000 is out of range"),
])
def test_calibrate_file_list_label_errors_name_the_line(capsys, asset_dir, tmp_path, lines, message):
    listing = tmp_path / "list.txt"
    listing.write_text(lines.format(chelsea=asset_dir / "chelsea.jpg", coffee=asset_dir / "coffee.jpg"))
    code, _, err = run_cli(capsys, "calibrate", "--data", listing, "--out", tmp_path / "stats.npz")
    assert code == 2 and message in one_line(err)
    assert not list(tmp_path.glob("stats*"))


def test_calibrate_binary_file_list_and_unknown_class_folder(capsys, asset_dir, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"\xff\xfe\x00 garbage\n")
    code, _, err = run_cli(capsys, "calibrate", "--data", listing, "--out", tmp_path / "stats.npz")
    assert code == 2 and "list.txt: not a text file of 'PATH LABEL' lines" in one_line(err)
    folder = tmp_path / "data" / "bogusclass"
    folder.mkdir(parents=True)
    shutil.copy(asset_dir / "chelsea.jpg", folder / "a.jpg")
    code, _, err = run_cli(capsys, "calibrate", "--data", tmp_path / "data", "--out", tmp_path / "stats.npz")
    assert code == 2 and "bogusclass: class folder: unknown class name 'bogusclass'" in one_line(err)


# --- an --out that cannot be written is refused before any work ---------------------------------

UNWRITABLE = "/proc/sipgrad-no-such-dir/out"  # mkdir fails there even for root, which os.access cannot tell


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
@pytest.mark.parametrize("command, out", [
    (["explain", "{chelsea}"], UNWRITABLE),
    (["analyze", "{chelsea}"], UNWRITABLE),
    (["calibrate", "--data", "{chelsea}"], UNWRITABLE + "/stats.npz"),
    (["evaluate", "--builtin", "photos"], UNWRITABLE),
])
def test_out_that_cannot_be_created_is_refused_before_any_work(capsys, monkeypatch, asset_dir, command, out):
    import sipgrad_cli.common

    for module in ("explain_cmd", "analyze_cmd", "calibrate_cmd", "evaluate_cmd"):
        monkeypatch.setattr(f"sipgrad_cli.{module}.load_classifier", lambda args: pytest.fail("work started"))
    monkeypatch.setattr(sipgrad_cli.common, "load_classifier", lambda args: pytest.fail("work started"))
    args = [a.format(chelsea=asset_dir / "chelsea.jpg") for a in command]
    code, _, err = run_cli(capsys, *args, "--out", out)
    line = one_line(err)
    assert code == 2 and f"--out {out}" in line and "cannot write there" in line and "Errno" not in line


def test_out_probe_leaves_no_folder_behind(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "explain", tmp_path / "empty", "--out", tmp_path / "new" / "deeper")
    assert code == 2 and "no images found" in one_line(err)
    assert [p.name for p in tmp_path.iterdir()] == ["empty"]  # the folders made to test --out were removed again


# --- fwdgrad: options checked while parsing, --out before the work, plot files checked -------------

@pytest.mark.parametrize("args, message", [
    (["fwdgrad", "cosine", "--seed", "-5"], "sipgrad fwdgrad cosine: error: argument --seed: must be 0 to 4294967295"),
    (["fwdgrad", "train", "--grad", "bogus"], "argument --grad: 'bogus' is not one of forward, backprop"),
    (["fwdgrad", "train", "--momentum", "nan"], "argument --momentum: must be in [0, 1), got nan"),
    (["fwdgrad", "train", "--momentum", "-3"], "argument --momentum: must be in [0, 1), got -3"),
    (["fwdgrad", "train", "--soft", "maybe"], "argument --soft: 'maybe' is not one of off, on"),
    (["fwdgrad", "cosine", "--trials", "1"], "argument --trials: must be at least 2 (a standard error needs two trials), got 1"),
    (["fwdgrad", "bogus"], "sipgrad fwdgrad: error: argument EXPERIMENT: invalid choice: 'bogus'"),
    (["bogus"], "sipgrad: error: argument COMMAND: invalid choice: 'bogus'"),
    (["explain", "x.png", "--bogus"], "sipgrad: error: unrecognized arguments: --bogus"),
])
def test_option_errors_are_one_line_everywhere(capsys, args, message):
    code, out, err = run_cli(capsys, *args)
    assert code == 2 and out == ""
    line = one_line(err)
    assert message in line and "usage:" not in err


@pytest.mark.parametrize("experiment", [["cosine", "--batch-sizes", "8", "--trials", "2"], ["train", "--steps", "2"]])
def test_fwdgrad_out_naming_a_file_is_refused_before_the_work(capsys, monkeypatch, tmp_path, experiment):
    import sipgrad.datasets

    monkeypatch.setattr(sipgrad.datasets, "load_dataset", lambda *a, **k: pytest.fail("work started"))
    (tmp_path / "taken").write_text("mine")
    code, _, err = run_cli(capsys, "fwdgrad", *experiment, "--out", tmp_path / "taken")
    assert code == 2 and "is an existing file, not a folder" in one_line(err)
    assert (tmp_path / "taken").read_text() == "mine"


@pytest.mark.parametrize("runs, message", [
    ([{"label": "x", "steps": [1, 2], "test_accuracy": [0.1]}], "run 1 (x): 2 steps but 1 test_accuracy values"),
    ([{"label": "y", "steps": [1], "test_accuracy": ["high"]}], "run 1 (y): steps and test_accuracy must hold numbers"),
    ([{"label": "z", "steps": 3, "test_accuracy": [0.1]}], "run 1 (z): steps and test_accuracy must be lists"),
])
def test_fwdgrad_plot_names_the_bad_run(capsys, tmp_path, runs, message):
    (tmp_path / "runs.json").write_text(json.dumps({"model": "m", "data": "d", "runs": runs}))
    code, _, err = run_cli(capsys, "fwdgrad", "plot", tmp_path / "runs.json", "--out", tmp_path / "p.png")
    assert code == 2 and f"runs.json: {message}" in one_line(err)
    assert not (tmp_path / "p.png").exists()


def test_fwdgrad_plot_of_a_missing_file_says_so(capsys, tmp_path):
    code, _, err = run_cli(capsys, "fwdgrad", "plot", tmp_path / "nofile.json", "--out", tmp_path / "p.png")
    assert code == 2 and "nofile.json: no such file" in one_line(err) and "Errno" not in err


def test_fwdgrad_plot_refuses_a_folder_as_out(capsys, tmp_path):
    (tmp_path / "runs.json").write_text(json.dumps({"model": "m", "data": "d", "runs": []}))
    code, _, err = run_cli(capsys, "fwdgrad", "plot", tmp_path / "runs.json", "--out", tmp_path)
    assert code == 2 and "is a folder; name the file to write" in one_line(err)


def test_fwdgrad_train_interrupted_says_what_was_kept(capsys, monkeypatch, tmp_path):
    import sipgrad_cli.fwdgrad_cmd

    class Bar:  # Ctrl-C on the 7th step: the first 5-step run is finished, the second stops early
        calls = 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def set_postfix_str(self, text):
            pass

        def update(self, n):
            Bar.calls += 1
            if Bar.calls == 7:
                raise KeyboardInterrupt

    monkeypatch.setattr(sipgrad_cli.fwdgrad_cmd, "progress_bar", lambda *a, **k: Bar())
    code, _, err = run_cli(capsys, "fwdgrad", "train", "--grad", "backprop", "--soft", "off",
                           "--steps", "5", "--eval-every", "5", "--seed", "0", "--out", tmp_path,
                           "--model", "binary-mlp", "--latent-bits", "8,32")
    assert code == 130
    assert "sipgrad: interrupted; 1 of 2 run(s) finished, the last one stopped early" in one_line(err)
    runs = json.loads((tmp_path / "forward_train.json").read_text())["runs"]
    assert [r["steps"] for r in runs] == [[5], []]


# --- library parameter names reach the user as the CLI's flags; bad devices; empty lists -----------

def test_gradients_sketch_error_names_the_flags(capsys, tmp_path):
    code, _, err = run_cli(capsys, "gradients", "train", "--optimizer", "pca-sgd", "--k", "8", "--sketch", "1",
                           "--steps", "2", "--out", tmp_path)
    line = one_line(err)
    assert code == 2 and "--sketch (1) must be at least --k (8)" in line and "sketch_size" not in line


def test_fwdgrad_latent_bits_error_names_the_flag(capsys):
    code, _, err = run_cli(capsys, "fwdgrad", "train", "--grad", "backprop", "--steps", "2", "--latent-bits", "5")
    line = one_line(err)
    assert code == 2 and "--latent-bits (5) needs a binary model" in line and "latent_bits" not in line


@pytest.mark.parametrize("device", ["bogus", "cuda:x"])
def test_a_bad_device_names_the_flag(capsys, asset_dir, tmp_path, device):
    code, _, err = run_cli(capsys, "explain", asset_dir / "chelsea.jpg", "--device", device, "--out", tmp_path)
    assert code == 2 and f"--device: '{device}' is not a device" in one_line(err)


@pytest.mark.parametrize("option", ["--method", "--sip"])
def test_evaluate_refuses_an_empty_list(capsys, tmp_path, option):
    code, _, err = run_cli(capsys, "evaluate", "--builtin", "photos", "--steps", "0", option, ",", "--out", tmp_path)
    assert code == 2 and f"{option}: ',' names nothing" in one_line(err)
    assert not (tmp_path / "records.jsonl").exists()


def test_interrupt_before_any_result_exits_130_not_2(capsys, monkeypatch, tmp_path):
    import sipgrad.analysis.experiments

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sipgrad.analysis.experiments, "train_projected", interrupted)
    code, _, err = run_cli(capsys, "gradients", "train", "--optimizer", "sgd", "--label-noise", "0", "--steps", "2",
                           "--out", tmp_path)
    assert code == 130 and "interrupted before the first run finished" in one_line(err)


# --- damaged .npz files: statistics and calibration checkpoints -------------------------------------

@pytest.mark.parametrize("content", [b"junk\n", b"PK\x03\x04" + b"\x00" * 40])  # not a zip; a zip cut short
def test_a_damaged_statistics_file_is_one_line(capsys, asset_dir, tmp_path, content):
    (tmp_path / "stats.npz").write_bytes(content)
    code, _, err = run_cli(capsys, "explain", asset_dir / "chelsea.jpg", "--sip", "cls", "--stats",
                           tmp_path / "stats.npz", "--out", tmp_path / "out")
    line = one_line(err)
    assert code == 2 and "stats.npz: not a sipgrad statistics file (not an .npz archive" in line
    assert "allow_pickle" not in line  # numpy's advice to unpickle an unknown file is not passed on


def test_calibrate_starts_over_from_a_damaged_checkpoint(capsys, asset_dir, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{asset_dir / 'chelsea.jpg'} 285\n")
    (tmp_path / "stats.npz.partial.npz").write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    code, out, err = run_cli(capsys, "calibrate", "--data", listing, "--out", tmp_path / "stats.npz",
                             "--sip-layers", "_conv_head")
    assert code == 0, err
    assert "sipgrad: warning: " in err and "stats.npz.partial.npz: unreadable checkpoint" in one_line(err)
    assert "1 images" in out and not (tmp_path / "stats.npz.partial.npz").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["list.txt", "stats.npz"]


def test_calibrate_says_it_starts_over_from_another_runs_checkpoint(capsys, asset_dir, tmp_path):
    import numpy as np

    listing = tmp_path / "list.txt"
    listing.write_text(f"{asset_dir / 'chelsea.jpg'} 285\n")
    np.savez(tmp_path / "stats.npz.partial.npz", signature=np.array("a run with other arguments"))
    code, out, err = run_cli(capsys, "calibrate", "--data", listing, "--out", tmp_path / "stats.npz",
                             "--sip-layers", "_conv_head")
    assert code == 0, err
    assert "stats.npz.partial.npz: checkpoint of a run with other arguments" in one_line(err)
    assert "starting over" in one_line(err) and "1 images" in out


def test_an_unforeseen_exception_is_still_one_line(capsys, monkeypatch):
    import zipfile

    import sipgrad.models

    def broken(*args, **kwargs):
        raise zipfile.BadZipFile("File is not a zip file")

    monkeypatch.setattr(sipgrad.models, "weights_available_offline", broken)
    code, _, err = run_cli(capsys, "models")
    line = one_line(err)
    assert code == 2 and "unexpected BadZipFile: File is not a zip file" in line
    monkeypatch.setenv("SIPGRAD_DEBUG", "1")
    with pytest.raises(zipfile.BadZipFile):
        main(["models"])


@pytest.mark.parametrize("content", ['{"model": \n', "[1]\n"])
def test_evaluate_names_a_damaged_run_file(capsys, tmp_path, content):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text(content)
    code, _, err = run_cli(capsys, "evaluate", "--builtin", "photos", "--steps", "0", "--limit", "1", "--out", out)
    line = one_line(err)
    assert code == 2 and f"{out / 'run.json'}: damaged" in line and "use another output folder" in line
    assert (out / "run.json").read_text() == content and not (out / "records.jsonl").exists()


def _two_images_and_a_folder_in_the_way(asset_dir, tmp_path, blocked: str):
    """(input folder with a.jpg and z.jpg, output folder holding a folder named ``blocked``: a file cannot go there)."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(asset_dir / "chelsea.jpg", folder / "a.jpg")
    shutil.copy(asset_dir / "coffee.jpg", folder / "z.jpg")
    out = tmp_path / "out"
    (out / blocked).mkdir(parents=True)
    return folder, out


@pytest.mark.parametrize("batch_size", ["1", "16"])
def test_explain_an_output_blocked_by_a_folder_costs_only_its_image(capsys, asset_dir, tmp_path, batch_size):
    # The other images are saved whether they are in other batches or in the same one, and the blocked
    # image leaves no half set of files (its saliency .npy was written before the overlay failed).
    folder, out = _two_images_and_a_folder_in_the_way(asset_dir, tmp_path, "a.grad.overlay.png")
    code, stdout, err = run_cli(capsys, "explain", folder, "--out", out, "--batch-size", batch_size, "--json")
    assert code == 1
    assert one_line(err).endswith("a.grad.overlay.png: is a folder, so a file of that name cannot be written")
    document = json.loads(stdout)
    assert [r["image"].split("/")[-1] for r in document["results"]] == ["z.jpg"]
    assert [e["image"].split("/")[-1] for e in document["errors"]] == ["a.jpg"]
    assert Image.open(out / "z.grad.overlay.png").size == (600, 400)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("a.")) == ["a.grad.overlay.png"]  # the folder


@pytest.mark.parametrize("blocked", ["a.grad.sip-topq_0.25.figure.png", "a.grad.sip-topq_0.25.compare.png"])
def test_explain_compare_blocked_by_a_folder_leaves_none_of_the_images_files(capsys, asset_dir, tmp_path, blocked):
    # With --compare an image has two sets of files, the plain map's and the SIP map's, and the side-by-side
    # figure: the plain set used to stay when a later file of the image could not be written.
    folder, out = _two_images_and_a_folder_in_the_way(asset_dir, tmp_path, blocked)
    code, stdout, err = run_cli(capsys, "explain", folder, "--sip", "topq:0.25", "--compare", "--out", out, "--json")
    assert code == 1 and one_line(err).endswith(f"{blocked}: is a folder, so a file of that name cannot be written")
    assert [r["image"].split("/")[-1] for r in json.loads(stdout)["results"]] == ["z.jpg"]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("a.")) == [blocked]  # the folder alone
    assert len([p for p in out.iterdir() if p.name.startswith("z.")]) == 6  # plain: 2, SIP: 3, compare: 1


def test_analyze_a_figure_blocked_by_a_folder_keeps_the_numbers(capsys, asset_dir, tmp_path):
    folder, out = _two_images_and_a_folder_in_the_way(asset_dir, tmp_path, "a.components.png")
    code, stdout, err = run_cli(capsys, "analyze", folder, "--out", out, "--batch-size", "1", "--layers",
                                "_conv_head", "--json")
    assert code == 1
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].endswith("a.components.png: is a folder, so a file of that name cannot "
                                                  "be written")
    assert json.loads(stdout)["images"] == ["a.jpg", "z.jpg"]
    assert (out / "z.components.png").is_file() and (out / "gradients.npz").is_file()


@pytest.mark.parametrize("content, message", [
    (b"junk\n", "not a file written by torch.save, or a truncated one"),
    (b"", "not a file written by torch.save, or a truncated one"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "not a file written by torch.save, or a truncated one"),  # a JPEG
    (b"PK\x03\x04junk", "a damaged torch.save archive: not a ZIP archive"),
])
def test_a_damaged_weights_file_says_so_in_words(capsys, asset_dir, tmp_path, content, message):
    (tmp_path / "w.pt").write_bytes(content)
    code, _, err = run_cli(capsys, "explain", asset_dir / "chelsea.jpg", "--weights", tmp_path / "w.pt",
                           "--out", tmp_path / "out")
    assert code == 2 and f"w.pt: not a loadable state dict ({message})" in one_line(err)


def test_weights_holding_python_objects_are_refused_not_run(capsys, asset_dir, tmp_path):
    import argparse

    import torch

    torch.save({"weight": torch.zeros(2), "config": argparse.Namespace(lr=0.1)}, tmp_path / "w.pt")
    code, _, err = run_cli(capsys, "explain", asset_dir / "chelsea.jpg", "--weights", tmp_path / "w.pt",
                           "--out", tmp_path / "out")
    assert code == 2 and "w.pt: not a loadable state dict (it holds Python objects besides tensors" in one_line(err)


def test_weights_naming_a_folder(capsys, asset_dir, tmp_path):
    code, _, err = run_cli(capsys, "explain", asset_dir / "chelsea.jpg", "--weights", tmp_path, "--out", tmp_path)
    assert code == 2 and "is a folder, not a weights file" in one_line(err)


@pytest.mark.parametrize("option", ["--boxes", "--class-map"])
def test_evaluate_builtin_refuses_annotation_options_it_would_ignore(capsys, tmp_path, option):
    code, _, err = run_cli(capsys, "evaluate", "--builtin", "photos", option, tmp_path / "x", "--out", tmp_path)
    assert code == 2 and f"{option} goes with --images; --builtin photos brings its own boxes" in one_line(err)


def test_statistics_for_another_model_point_to_the_command(capsys, asset_dir, tmp_path, monkeypatch):
    """The library says "run calibrate"; only the CLI names its own command."""
    from sipgrad.calibration.stats import SIPStatistics

    statistics = SIPStatistics("some_other_model", ("layer",), "0" * 16, {}, 1000)
    monkeypatch.setattr(SIPStatistics, "load", classmethod(lambda cls, path: statistics))
    with pytest.raises(Exception) as raised:
        from sipgrad.models import load_model

        statistics.check_model(load_model("efficientnet_lite0").module)
    assert "sipgrad" not in str(raised.value) and "run calibrate for it" in str(raised.value)
    code, _, err = run_cli(capsys, "explain", asset_dir / "chelsea.jpg", "--sip", "cls", "--stats",
                           tmp_path / "s.npz", "--out", tmp_path / "out")
    assert code == 2 and "run `sipgrad calibrate` for it" in one_line(err)


def test_no_library_text_names_a_cli_flag(capsys):
    """Model descriptions say weights=FILE; `sipgrad models` shows the flag."""
    from sipgrad.models import MODELS

    assert not [spec.description for spec in MODELS.values() if "--" in spec.description]
    code, out, _ = run_cli(capsys, "models", "--json")
    rows = {row["name"]: row for row in json.loads(out)}
    assert code == 0 and rows["digits_resnet"]["description"].endswith("(train it: --weights FILE)")


def test_explain_with_out_equal_to_the_input_folder(capsys, asset_dir, tmp_path, monkeypatch):
    """`sipgrad explain . --out .` explains the photos there, not nothing, and not its own overlays next time."""
    shutil.copy(asset_dir / "chelsea.jpg", tmp_path / "a.jpg")
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        code, stdout, err = run_cli(capsys, "explain", ".", "--out", ".", "--json")
        assert code == 0, err
        assert [r["image"] for r in json.loads(stdout)["results"]] == ["a.jpg"]


@pytest.mark.parametrize("args, option", [
    (["explain", "{chelsea}", "--method", "gradcam", "--gradcam-layer", "nope"], "--gradcam-layer"),
    (["explain", "{chelsea}", "--sip", "topq:0.5", "--sip-layers", "nope"], "--sip-layers"),
    (["evaluate", "--builtin", "photos", "--sip", "topq:0.5", "--sip-layers", "nope"], "--sip-layers"),
    (["analyze", "{chelsea}", "--layers", "nope"], "--layers"),
    (["analyze", "{chelsea}", "--sip-layers", "nope"], "--sip-layers"),
    (["calibrate", "--data", "{listing}", "--sip-layers", "_conv_head,nope"], "--sip-layers"),
])
def test_an_unknown_layer_name_says_which_option_held_it(capsys, asset_dir, tmp_path, args, option):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{asset_dir / 'chelsea.jpg'} 285\n")
    args = [a.format(chelsea=asset_dir / "chelsea.jpg", listing=listing) for a in args]
    out = tmp_path / ("stats.npz" if args[0] == "calibrate" else "out")
    code, _, err = run_cli(capsys, *args, "--out", out)
    assert code == 2 and f"sipgrad: error: {option}: no layer named 'nope'" in one_line(err)


def test_ctrl_c_while_starting_up_is_one_line(capsys, monkeypatch):
    """torch takes seconds to import: the entry point's module must not import it, and main() catches Ctrl-C."""
    import subprocess
    import sys

    import sipgrad_cli.main

    probe = "import sys, sipgrad_cli.main; print(sorted(m for m in ('torch', 'sipgrad') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(sipgrad_cli.main, "_commands", interrupted)
    code, out, err = run_cli(capsys, "models")
    assert code == 130 and one_line(err) == "sipgrad: interrupted"


@pytest.mark.parametrize("args, target, message", [
    (["gradients", "spectrum", "--batch-sizes", "8", "--k", "1"],
     "sipgrad.analysis.experiments.spectra_over_batch_sizes",
     "interrupted before the spectra were finished; nothing was written"),
    (["fwdgrad", "cosine", "--batch-sizes", "8", "--trials", "2"], "sipgrad.engines.forward.experiments.cosine_table",
     "interrupted before the cosine table was finished; nothing was written"),
])
def test_an_interrupt_does_not_claim_results_were_kept_when_none_were(capsys, monkeypatch, tmp_path, args, target,
                                                                       message):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(target, interrupted)
    code, _, err = run_cli(capsys, *args, "--out", tmp_path / "out")
    assert code == 130 and one_line(err) == f"sipgrad: error: {message}"
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("args, message", [
    (["evaluate", "--builtin", "photos", "--method", "grad,ig,grad"], "argument --method: 'grad,ig,grad' names 'grad' twice"),
    (["evaluate", "--builtin", "photos", "--sip", "none,topq:0.1,none"], "argument --sip: 'none,topq:0.1,none' names 'none' twice"),
    (["gradients", "train", "--optimizer", "sgd,momentum,sgd"], "'sgd,momentum,sgd' names 'sgd' twice"),
    (["gradients", "train", "--label-noise", "0,0.2,0.0"], "'0,0.2,0.0' names 0.0 twice"),
    (["fwdgrad", "cosine", "--batch-sizes", "8,8"], "'8,8' names 8 twice"),
    (["fwdgrad", "cosine", "--samplers", "gaussian,activity,gaussian"], "names 'gaussian' twice"),
])
def test_a_sweep_that_repeats_a_value_is_refused(capsys, args, message):
    """A repeated value would run one setting twice (and count the copy as another seed)."""
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and message in one_line(err)


def test_widths_may_repeat_where_the_list_is_not_a_sweep(capsys):
    code, _, err = run_cli(capsys, "hypergrad", "--hidden", "4,4", "--steps", "1", "--hyper-steps", "1",
                           "--batch-size", "10", "--mode", "forward")
    assert code == 0, err


def test_calibrate_refuses_an_out_file_that_is_not_npz(capsys, tmp_path):
    code, _, err = run_cli(capsys, "calibrate", "--data", tmp_path, "--out", tmp_path / "stats.txt")
    assert code == 2 and "stats.txt: the statistics are an .npz archive; end the name with .npz" in one_line(err)
    assert not (tmp_path / "stats.txt").exists()
