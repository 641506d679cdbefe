import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from sipgrad.errors import SipgradError
from sipgrad.evaluation import EvalSettings, evaluate, load_box_dataset, write_reports

SETTINGS = EvalSettings(methods=("grad",), sips=("none", "topq:0.25"), steps=2)


@pytest.fixture(scope="module")
def box_data(tmp_path_factory):
    """Five crops of real photos with a CSV of boxes (the object is the whole crop's centre region)."""
    from skimage import data

    root = tmp_path_factory.mktemp("boxes")
    images = root / "images"
    images.mkdir()
    rows = ["image,label,x0,y0,x1,y1"]
    for i, (photo, label) in enumerate([(data.chelsea(), "Egyptian cat"), (data.coffee(), "espresso"),
                                        (data.chelsea()[:, ::-1], "Egyptian cat"), (data.coffee()[::-1], "cup"),
                                        (data.chelsea()[50:], "tabby")]):
        Image.fromarray(np.ascontiguousarray(photo)).save(images / f"{i}.png")
        h, w = photo.shape[:2]
        rows.append(f"{i}.png,{label},{w * 0.25},{h * 0.2},{w * 0.75},{h * 0.9}")
    (root / "boxes.csv").write_text("\n".join(rows) + "\n")
    return images, root / "boxes.csv"


def _strip(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def test_resume_after_interruption_gives_the_uninterrupted_records(lite0, box_data, tmp_path):
    cases = load_box_dataset("csv", *box_data, lite0.classes)
    whole = evaluate(lite0, cases, SETTINGS, tmp_path / "whole", dataset="t", batch_size=2)
    assert len(whole) == 10 and {r["config"] for r in whole} == {"grad/none", "grad/topq:0.25"}

    seen = []

    def interrupt(count):
        seen.append(count)
        if sum(seen) >= 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate(lite0, cases, SETTINGS, tmp_path / "cut", dataset="t", batch_size=2, progress=interrupt)
    lines = (tmp_path / "cut" / "records.jsonl").read_text().splitlines()
    assert len(lines) == 4  # the finished batch: 2 cases x 2 configs
    with (tmp_path / "cut" / "records.jsonl").open("a") as handle:
        handle.write('{"case": "torn')  # a crash in the middle of a write
    resumed = evaluate(lite0, cases, SETTINGS, tmp_path / "cut", dataset="t", batch_size=2)
    assert _strip(resumed) == _strip(whole)
    on_disk = [json.loads(line) for line in (tmp_path / "cut" / "records.jsonl").read_text().splitlines()]
    assert _strip(on_disk) == _strip(whole)
    # Resuming a finished run computes nothing new.
    again = evaluate(lite0, cases, SETTINGS, tmp_path / "cut", dataset="t", batch_size=2,
                     progress=lambda n: seen.append(n))
    assert _strip(again) == _strip(whole)
    with pytest.raises(SipgradError, match="other settings"):
        evaluate(lite0, cases, EvalSettings(methods=("ig",)), tmp_path / "cut", dataset="t")


def test_reports_are_written(lite0, box_data, tmp_path):
    cases = load_box_dataset("csv", *box_data, lite0.classes)
    records = evaluate(lite0, cases, SETTINGS, tmp_path, dataset="t", batch_size=5, save_maps=True)
    summary = write_reports(lite0, cases, EvalSettings(methods=("grad",), sips=("none", "topq:0.25"), steps=2),
                            records, tmp_path, "test")
    assert summary["configs"]["grad/none"]["n"] == 5
    pointing = summary["configs"]["grad/none"]["metrics"]["pointing"]
    assert pointing["low"] <= pointing["mean"] <= pointing["high"]
    assert summary["comparisons"]["grad/topq:0.25"]["against"] == "grad/none"
    for name in ("summary.json", "summary.md", "metrics.png", "energy_vs_box_area.png", "report.html"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "report.html").read_text().count("<figure>") == 5 * (1 + 2)  # per case: the input, then one map per config
    saved = np.load(tmp_path / "maps" / "grad_topq_0.25" / "0.png_285.npy")
    assert saved.shape == (224, 224)


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")
def test_two_process_torchrun_gives_the_same_records(box_data, tmp_path):
    """Sharding over processes changes nothing: at the same thread count per process, the records of
    a 2-process torchrun equal the single process's bit for bit.

    The thread count is pinned (torchrun would give its workers 1 thread and a plain run all cores):
    the model's CPU kernels round differently with the thread count, which no record can hide
    (docs/evaluation.md, "Determinism"); the metrics themselves are thread-independent
    (tests/evaluation/test_metrics.py).
    """
    import os

    images, boxes = box_data
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["evaluate", "--images", str(images), "--boxes", str(boxes), "--format", "csv", "--method", "grad",
              "--sip", "none,topq:0.25", "--steps", "2", "--batch-size", "1"]
    one = subprocess.run([sys.executable, "-m", "sipgrad_cli", *common, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=300, env=env)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(["torchrun", "--standalone", "--nproc_per_node", "2", "-m", "sipgrad_cli", *common,
                          "--out", str(tmp_path / "two")], capture_output=True, text=True, timeout=300, env=env)
    assert two.returncode == 0, two.stderr[-2000:]
    assert not list((tmp_path / "two").glob("records.rank*.jsonl"))
    lines_one = _strip([json.loads(x) for x in (tmp_path / "one" / "records.jsonl").read_text().splitlines()])
    lines_two = _strip([json.loads(x) for x in (tmp_path / "two" / "records.jsonl").read_text().splitlines()])
    assert len(lines_one) == 10 and lines_one == lines_two
    first = json.loads((tmp_path / "one" / "summary.json").read_text())
    second = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert first["configs"] == second["configs"]


def test_each_torchrun_process_gets_its_own_gpu_and_the_right_backend(monkeypatch):
    from sipgrad.evaluation.runner import backend_for, process_device

    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert process_device("cuda") == "cuda:2"
    assert process_device("cuda:0") == "cuda:0"  # an explicit index is the user's choice
    assert process_device("cpu") == "cpu"
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert process_device("cuda") == "cuda"
    assert backend_for("cuda:2") == "nccl" and backend_for("cpu") == "gloo"
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert backend_for("cpu") == "gloo"  # a CPU run on a GPU machine still uses gloo


def test_saved_maps_of_case_ids_that_slug_alike_stay_apart_and_the_gallery_reads_each_back(tmp_path):
    """`sub/x.jpg#285` and `sub_x.jpg#285` used to be saved to one file, the second overwriting the first."""
    from sipgrad.evaluation.report import _saved_map
    from sipgrad.evaluation.runner import _save_maps

    ids = ["sub/x.jpg#285", "sub_x.jpg#285", "a b.jpg#1", "a_b.jpg#1"]
    records = [{"config": "grad/none", "case": case, "_map": np.full((2, 3), i, np.float32)}
               for i, case in enumerate(ids)]
    _save_maps(tmp_path, records)
    assert len(list((tmp_path / "maps").rglob("*.npy"))) == len(ids)
    for i, case in enumerate(ids):
        np.testing.assert_array_equal(_saved_map(tmp_path / "maps", "grad/none", case), np.full((2, 3), i))
