"""docs/gradients.md quotes the committed JSON in docs/data/, not numbers typed by hand."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sipgrad.analysis.projected_training import summarize_runs

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "gradients.md").read_text()


def data(name: str) -> dict:
    return json.loads((ROOT / "docs" / "data" / name).read_text())


def table_after(heading: str) -> list[list[str]]:
    """The rows of the first markdown table after ``heading`` (header and rule dropped)."""
    rest = DOC[DOC.index(heading):]
    lines = rest[rest.index("\n|"):].strip().splitlines()
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows[2:]


@pytest.mark.parametrize("heading, name", [
    ("MLP at initialisation:", "gradients_spectrum_mlp_init.json"),
    ("MLP after 300 SGD steps", "gradients_spectrum_mlp_300steps.json"),
    ("CNN at initialisation:", "gradients_spectrum_cnn_init.json"),
])
def test_spectrum_tables(heading, name):
    rows = {r["batch size"]: r for r in data(name)["rows"] if r["layer"] == "all"}
    table = table_after(heading)
    assert len(table) == len(rows)
    for cells in table:
        row = rows[int(cells[0])]
        assert float(cells[1]) == pytest.approx(row["effective rank"], abs=0.05)
        assert float(cells[2]) == pytest.approx(sum(row["explained"][:10]), abs=0.005)
        for cell, k in zip(cells[3:], ("1", "4", "8", "16", "32")):
            assert float(cell) == pytest.approx(row["cosine"][k], abs=0.0051)


def test_regime_one_table():
    summary = {(r["label noise"], r["optimizer"]): r for r in summarize_runs(data("gradients_train_lr0.1.json")["runs"])}
    table = table_after("**Regime 1")
    assert len(table) == 9
    for cells in table:
        row = summary[(int(cells[0].rstrip("%")) / 100, cells[1])]
        mean, low, high = map(float, re.findall(r"[\d.]+", cells[2]))
        assert (mean, low, high) == pytest.approx(
            (row["final test accuracy"], row["final min"], row["final max"]), abs=0.0005)
        assert float(cells[3]) == pytest.approx(row["best test accuracy"], abs=0.0005)
        if cells[4] != "-":
            assert float(cells[4]) == pytest.approx(row["noise fit"], abs=0.0005)


def test_regime_two_table():
    summary = {r["optimizer"]: r for r in summarize_runs(data("gradients_train_lr0.5_3seeds.json")["runs"])}
    for cells in table_after("Half the labels wrong, learning rate 0.5, 2,000 steps"):
        row = summary[cells[0]]
        mean, low, high = map(float, re.findall(r"[\d.]+", cells[1]))
        assert (mean, low, high) == pytest.approx(
            (row["final test accuracy"], row["final min"], row["final max"]), abs=0.0005)
        assert float(cells[2]) == pytest.approx(row["best test accuracy"], abs=0.0005)
        assert float(cells[3]) == pytest.approx(row["noise fit"], abs=0.0005)


def test_sketch_accuracy_table():
    rows = {(r["layer"], r["k"]): r for r in data("gradients_benchmark.json")["sketch_accuracy"]}
    table = table_after("The same command checks the sketch on real gradients")
    assert len(table) == len(rows)
    for cells in table:
        row = rows[(cells[0], int(cells[2]))]
        assert float(cells[4]) == pytest.approx(row["largest angle (rad)"], abs=0.0005)
        assert float(cells[5]) == pytest.approx(row["energy share"], abs=0.0005)
