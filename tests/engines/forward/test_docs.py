"""The numbers in docs/forward.md are those of the committed JSON its commands wrote."""

from __future__ import annotations

import json
import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[3] / "docs"


def _table_rows(text: str, header_start: str) -> list[list[str]]:
    lines = text[text.index(header_start):].splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_cosine_table_matches_its_json():
    text = (DOCS / "forward.md").read_text()
    tables = {k: json.loads((DOCS / "data" / f"forward_cosine_mlp_k{k}.json").read_text()) for k in (1, 32)}
    cells = {k: {(r["batch_size"], r["sampler"]): r for r in t["rows"]} for k, t in tables.items()}
    rows = _table_rows(text, "| B | gaussian (K = 32)")
    assert len(rows) >= 5
    for batch, gaussian, activity, ratio32, ratio1 in rows:
        b = int(batch)
        for cell, sampler in ((gaussian, "gaussian"), (activity, "activity")):
            mean, stderr = map(float, re.findall(r"[\d.]+", cell))
            assert mean == round(cells[32][b, sampler]["cosine"], 4)
            assert stderr == round(cells[32][b, sampler]["stderr"], 4)
        for ratio, k in ((ratio32, 32), (ratio1, 1)):
            assert float(ratio) == round(cells[k][b, "activity"]["cosine"] / cells[k][b, "gaussian"]["cosine"], 2)
    assert f"{tables[32]['closed_form']:.4f}" in text and f"{tables[1]['closed_form']:.4f}" in text


def test_training_tables_match_their_json():
    """Every table after a `<!-- data: FILE -->` marker: each run's accuracy and steps-to-90% as in FILE."""
    text = (DOCS / "forward.md").read_text()
    markers = re.findall(r"<!-- data: (\S+) -->", text)
    assert markers
    for relative in markers:
        runs = {run["label"]: run for run in json.loads((DOCS / relative).read_text())["runs"]}
        rows = _table_rows(text[text.index(f"<!-- data: {relative} -->"):], "| run |")
        assert {row[0] for row in rows} == set(runs)
        for label, accuracy, steps, *_ in rows:
            assert float(accuracy) == round(runs[label]["final_accuracy"], 3)
            assert steps == (str(runs[label]["steps_to_90"]) if runs[label]["steps_to_90"] is not None else "never")


def _ratio(value: float) -> str:
    return f"{value:.2f}x"


def test_performance_tables_match_the_benchmark_json():
    text = (DOCS / "forward.md").read_text()
    benchmark = json.loads((DOCS / "data" / "forward_gradient_benchmark.json").read_text())
    summary = {(s["model"], int(s["batch"]), s["sampler"]): s for s in benchmark["summary"]}
    rows = _table_rows(text, "| model | B | sampler | K=1 | extra direction |")
    assert len(rows) == len(summary)
    for model, batch, sampler, first, extra in rows:
        entry = summary[model, int(batch), sampler]
        assert first == _ratio(entry["K=1 x backprop"]) and extra == _ratio(entry["extra direction x backprop"])
    variants = {(r["model"], int(r["batch"]), r["variant"]): r for r in benchmark["rows"]}
    gaussian = _table_rows(text, "| model | B | backprop ms | K=1 | K=8 | K=64 |")
    assert len(gaussian) == 4
    for model, batch, base, *cells in gaussian:
        b = int(batch)
        assert base == f"{variants[model, b, 'backprop']['cpu ms']:.2f}"
        names = ["gaussian K=1", "gaussian K=8", "gaussian K=64", "gaussian K=64 unchunked",
                 "gaussian K=1 general path", "gaussian K=64 general path"]
        assert cells[:-1] == [_ratio(variants[model, b, name]["x backprop"]) for name in names]
        assert cells[-1] == _ratio(summary[model, b, "gaussian"]["extra direction x backprop"])
    memory = {(m["model"], m["variant"]): m["peak MiB"] for m in benchmark["memory"]}
    for model, _batch, variant, peak in _table_rows(text, "| model | B | step | peak MiB |"):
        assert peak == f"{memory[model, variant]:.1f}"
    paired = {(r["model"], int(r["batch"]), r["variant"]): r
              for r in json.loads((DOCS / "data" / "forward_k1_paired.json").read_text())["rows"]}
    table = _table_rows(text, "| model | B | fused K=1 | fused K=1 + torch.compile |")
    assert len(table) == 4
    for model, batch, *cells in table:
        names = ["gaussian K=1 (fused)", "gaussian K=1 (fused + torch.compile)", "gaussian K=1 (general path)",
                 "backprop, torch.compile", "gaussian K=1 (fused + torch.compile) / compiled backprop"]
        for cell, name in zip(cells, names):
            r = paired[model, int(batch), name]
            assert cell == f"{r['x backprop']:.2f}x ({r['95% low']:.2f}-{r['95% high']:.2f})"
    breakdown = {(r["model"], r["part"]): r["x backprop"]
                 for r in json.loads((DOCS / "data" / "forward_k1_breakdown.json").read_text())["rows"]}
    assert f"fused tangents + primal + loss: {_ratio(breakdown['mlp', 'fused: tangents + loss K=1'])}" in text
    assert f"the whole step: {_ratio(breakdown['mlp', 'fused: whole estimate K=1'])}" in text
    assert f"dual-tensor JVP alone cost {_ratio(breakdown['mlp', 'general: dual-tensor JVP K=1'])}" in text


def test_two_thread_table_matches_its_json():
    text = (DOCS / "forward.md").read_text()
    benchmark = json.loads((DOCS / "data" / "forward_gradient_benchmark_2threads.json").read_text())
    assert benchmark["machine"]["threads"] == 2 and benchmark["clock"] == "wall"
    variants = {(r["model"], int(r["batch"]), r["variant"]): r for r in benchmark["rows"]}
    summary = {(s["model"], int(s["batch"])): s for s in benchmark["summary"]}
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in text[text.index("| model | B | backprop wall ms |"):].splitlines()[2:6]]
    assert len(rows) == 4
    for model, batch, base, *cells in rows:
        b = int(batch)
        assert base == f"{variants[model, b, 'backprop']['wall ms']:.2f}"
        names = ["gaussian K=1", "gaussian K=8", "gaussian K=64", "gaussian K=64 unchunked",
                 "gaussian K=1 general path"]
        assert cells[:-1] == [_ratio(variants[model, b, name]["x backprop"]) for name in names]
        assert cells[-1] == _ratio(summary[model, b]["extra direction x backprop"])
