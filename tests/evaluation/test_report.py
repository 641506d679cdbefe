"""The report a person reads, parsed as HTML: real tables, formatted intervals, the better value
marked in each metric's own direction, the paired test, thumbnails, everything embedded; and
plots whose labels are legible and whose configs never share a colour."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats

from sipgrad.evaluation.catalog import METRICS
from sipgrad.evaluation.report import (
    Gallery,
    GalleryCase,
    _comparison_table,
    _draw_boxes,
    _metrics_table,
    build_gallery,
    choose_cases,
    energy_figure,
    metrics_figure,
    plot_metrics,
    render_html,
    write_html,
)
from sipgrad.evaluation.summary import format_p, rank_biserial, summarize
from sipgrad.io.names import slug

VOID = {"img", "meta", "br", "hr", "link", "input", "source", "wbr"}
CONFIGS = ("grad/none", "grad/topq:0.25", "gradcam/none", "gradcam/topq:0.25")
CASES = 8


@dataclass
class Node:
    tag: str
    attrs: dict
    children: list = field(default_factory=list)  # Nodes and strings, in document order

    def all(self, tag: str) -> list["Node"]:
        found = [self] if self.tag == tag else []
        for child in self.children:
            if isinstance(child, Node):
                found += child.all(tag)
        return found

    def raw(self) -> str:
        return "".join(child if isinstance(child, str) else child.raw() for child in self.children)

    def content(self) -> str:
        """The text a reader sees, white space collapsed (a <br> reads as a space)."""
        return re.sub(r"\s+", " ", self.raw()).strip()

    def cells(self) -> list["Node"]:
        return [c for c in self.children if isinstance(c, Node) and c.tag in ("th", "td")]

    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())


class _Tree(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.root = Node("root", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs))
        self.stack[-1].children.append(node)
        if tag == "br":
            node.children.append(" ")
        if tag not in VOID:
            self.stack.append(node)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def parse(page: str) -> Node:
    tree = _Tree()
    tree.feed(page)
    tree.close()
    assert tree.stack == [tree.root], "unclosed elements"
    return tree.root


def make_records(signed: bool = False) -> list[dict]:
    """Eight cases, four configs with known orderings: gradcam has the most energy and the lowest
    deletion AUC; grad with SIP gains 0.05 energy on every case; gradcam with SIP changes nothing."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(CASES):
        plain = {name: float(rng.uniform(0.2, 0.4)) for name in METRICS}
        plain.update(pointing=float(i % 2), centre=float(i % 3 == 0), mu_in_w=1.0 + i / 10)
        per_config = {
            "grad/none": dict(plain, deletion_auc=0.30 + 0.01 * i),
            "grad/topq:0.25": dict(plain, energy=plain["energy"] + 0.05, deletion_auc=0.25 + 0.01 * i),
            "gradcam/none": dict(plain, energy=0.6 + 0.01 * i, deletion_auc=0.10 + 0.005 * i),
        }
        per_config["gradcam/topq:0.25"] = dict(per_config["gradcam/none"])
        for key in CONFIGS:
            method, sip = key.split("/")
            scores = per_config[key]
            scores["mu_in"] = scores["energy"] - (0.1 if signed else 0.0)
            records.append({"case": f"set/img{i}#cat", "config": key, "method": method, "sip": sip,
                            "target_name": "cat", "box_fraction": 0.1 * i, **scores})
    return records


def fake_gallery(records) -> Gallery:
    rng = np.random.default_rng(1)
    cases = []
    for case in dict.fromkeys(r["case"] for r in records):
        entry = GalleryCase(case, "cat", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
        for key in CONFIGS:
            entry.maps[key] = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            entry.records[key] = next(r for r in records if r["case"] == case and r["config"] == key)
        cases.append(entry)
    return Gallery(list(CONFIGS), cases, "every case", "recomputed")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    records = make_records()
    summary = summarize(records)
    plots = plot_metrics(out, summary, records)
    path = write_html(out, summary, fake_gallery(records), plots, "Lite0 on <photos>")
    page = path.read_text(encoding="utf-8")
    return SimpleNamespace(page=page, tree=parse(page), summary=summary, records=records)


def _table(report, first_header: str) -> Node:
    for table in report.tree.all("table"):
        if table.all("th") and table.all("th")[0].content() == first_header:
            return table
    raise AssertionError(f"no table starting with {first_header!r}")


def _columns(table: Node) -> list[str]:
    return [th.content() for th in table.all("thead")[0].all("th")]


def _row(table: Node, first_cell: str) -> list[Node]:
    for tr in table.all("tr"):
        cells = tr.cells()
        if cells and cells[0].content() == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r}")


def test_tables_are_real_html_with_no_markdown_left(report):
    tables = report.tree.all("table")
    assert len(tables) == 3  # against the boxes, deletion/insertion, SIP against plain
    for table in tables:
        assert table.all("thead") and table.all("tbody") and table.all("th")
    text = report.tree.content()
    assert "|---" not in report.page and "`" not in text and "**" not in text
    assert "Lite0 on &lt;photos&gt;" in report.page  # escaped, not injected
    assert "How to read this" in [h.content() for h in report.tree.all("h2")]


def test_everything_is_embedded(report):
    images = report.tree.all("img")
    assert len(images) > 2 and all(img.attrs["src"].startswith("data:image/") for img in images)
    assert not re.search(r"""(href|src)=['"]?(https?:|//|[\w./-]+\.(png|css|js)\b)""", report.page)
    assert "<link" not in report.page and "<script" not in report.page


def test_intervals_are_formatted_and_match_the_summary(report):
    table = _table(report, "config")
    assert _columns(table)[:4] == ["config", "n", "pointing game \u2191", "energy in boxes \u2191"]
    cells = _row(table, "grad/none")
    assert cells[1].content() == str(CASES)
    stats_ = report.summary["configs"]["grad/none"]["metrics"]["energy"]
    assert cells[3].content() == f"{stats_['mean']:.2f} [{stats_['low']:.2f}, {stats_['high']:.2f}]"
    for tr in table.all("tbody")[0].all("tr")[:-1]:
        for cell in [c for c in tr.cells() if c.tag == "td"][1:]:
            assert re.fullmatch(r"\d+\.\d{2,3} \[\d+\.\d{2,3}, \d+\.\d{2,3}\]", cell.content()), cell.content()
    centre = _row(table, "pointing at the centre (baseline)")
    assert centre[2].content().startswith(f"{report.summary['configs']['grad/none']['metrics']['centre']['mean']:.2f} [")


def test_the_better_value_is_marked_in_each_metrics_own_direction(report):
    boxes = _table(report, "config")
    energy = _columns(boxes).index("energy in boxes \u2191")
    best = {key for key in CONFIGS if "best" in _row(boxes, key)[energy].classes()}
    assert best == {"gradcam/none", "gradcam/topq:0.25"}  # highest energy, tied
    perturbation = [t for t in report.tree.all("table") if "deletion AUC \u2193" in _columns(t)][0]
    deletion = _columns(perturbation).index("deletion AUC \u2193")
    best = {key for key in CONFIGS if "best" in _row(perturbation, key)[deletion].classes()}
    assert best == {"gradcam/none", "gradcam/topq:0.25"}  # lowest deletion AUC: lower is better
    assert "best" not in _row(perturbation, "grad/none")[deletion].classes()


def test_the_paired_test_shows_difference_p_and_effect_size(report):
    table = [t for t in report.tree.all("table") if "p (Wilcoxon)" in _columns(t)][0]
    assert _columns(table) == ["metric", "difference SIP \u2212 plain [95% interval]", "wins / ties / losses (%)",
                               "p (Wilcoxon)", "effect r", "reading"]
    energy = _row(table, "energy in boxes \u2191")
    by_config = {(r["case"], r["config"]): r["energy"] for r in report.records}
    improvement = np.array([by_config[(f"set/img{i}#cat", "grad/topq:0.25")] - by_config[(f"set/img{i}#cat", "grad/none")]
                            for i in range(CASES)])
    assert energy[1].content().startswith("+0.05 [")
    assert energy[2].content() == "100 / 0 / 0"
    assert energy[3].content() == format_p(stats.wilcoxon(improvement).pvalue)
    assert energy[4].content() == f"+{rank_biserial(improvement):.2f}" == "+1.00"
    assert energy[5].content() == "better with SIP"
    deletion = _row(table, "deletion AUC \u2193")  # 0.05 lower on every case: better, though the difference is negative
    assert deletion[1].content().startswith("\u22120.05") and deletion[5].content() == "better with SIP"
    text = table.content()
    assert "Identical to gradcam/none on every case and metric" in text
    assert "0.00 / 1" not in report.page


def test_mu_in_is_shown_once_with_the_reason_and_both_when_they_differ(report):
    headers = [h for t in report.tree.all("table") for h in _columns(t)]
    assert "mu_in \u2191" not in headers and "energy in boxes \u2191" in headers
    assert "for non-negative maps (every map here) they are the same" in report.tree.content()
    signed = summarize(make_records(signed=True))
    tree = parse(render_html(signed, None, [], "signed"))
    assert "mu_in \u2191" in [h for t in tree.all("table") for h in _columns(t)]
    assert "No thumbnails" in tree.content()  # no gallery: the report still renders


def test_thumbnails_show_the_input_and_one_map_per_config(report):
    strips = [div for div in report.tree.all("div") if "case" in div.classes()]
    assert len(strips) == CASES
    for strip in strips:
        figures = strip.all("figure")
        assert len(figures) == 1 + len(CONFIGS)
        assert figures[0].content() == "input and boxes"
        assert [f.content().split(" energy")[0] for f in figures[1:]] == list(CONFIGS)
        assert all(f.all("img")[0].attrs["src"].startswith("data:image/jpeg;base64,") for f in figures)
    first = strips[0].all("figure")[3].content()  # gradcam/none on case 0: energy 0.60, pointing 0 = miss
    assert first == "gradcam/none energy 0.60 \u00b7 miss"
    assert report.tree.all("div")[0] is not None and "colour scale" in report.page


def test_skipped_cases_are_reported():
    records = make_records() + [{"case": "set/gone#cat", "config": key, "method": key.split("/")[0],
                                 "sip": key.split("/")[1], "error": "gone.png: no such file"} for key in CONFIGS]
    tree = parse(render_html(summarize(records), None, [], "t"))
    assert "1 case(s) skipped" in tree.content() and "set/gone#cat: gone.png: no such file" in tree.content()


def _texts_px(fig) -> list[tuple[str, float]]:
    from matplotlib.text import Text

    return [(t.get_text(), t.get_fontsize() * 100 / 72) for t in fig.findobj(Text)
            if t.get_visible() and t.get_text().strip()]


def _twelve_configs():
    records = []
    for m, method in enumerate(("grad", "ig", "gradcam")):
        for s, sip in enumerate(("none", "topq:0.1", "topq:0.25", "absq:0.25")):
            for i in range(4):
                records.append({"case": f"c{i}", "config": f"{method}/{sip}", "method": method, "sip": sip,
                                "box_fraction": 0.2 * i + 0.05, **{n: 0.1 * m + 0.02 * s + 0.01 * i for n in METRICS}})
    return records


def test_plots_have_legible_labels_and_no_two_configs_share_a_colour():
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    records = _twelve_configs()
    summary = summarize(records)
    fig = metrics_figure(summary)
    try:
        texts = _texts_px(fig)
        assert "grad/topq:0.1" in [t for t, _ in texts] and "gradcam/absq:0.25" in [t for t, _ in texts]
        assert min(px for _, px in texts) >= 10
        colours = [to_hex(container.lines[0].get_color()) for container in fig.axes[0].containers]
        assert len(colours) == 12 and len(set(colours)) == 12
    finally:
        plt.close(fig)
    fig = energy_figure(summary, records)
    try:
        assert min(px for _, px in _texts_px(fig)) >= 10
        series = [(to_hex(line.get_color()), line.get_marker()) for ax in fig.axes for line in ax.lines
                  if line.get_label() != "uniform map"]
        assert len(series) == 12 and len({colour for colour, _ in series}) == 12
        for ax in fig.axes[:3]:  # within a panel, markers tell the SIP settings apart too
            assert len({line.get_marker() for line in ax.lines if line.get_label() != "uniform map"}) == 4
    finally:
        plt.close(fig)


class _FakeEvaluator:
    """Just what ``build_gallery`` uses: configs, prepare, maps and a classifier with classes."""

    def __init__(self, keys, unreadable=()):
        self.configs = [SimpleNamespace(key=key) for key in keys]
        self.unreadable = set(unreadable)
        self.classifier = SimpleNamespace(classes=["cat", "dog"], device="cpu",
                                          preprocessing=SimpleNamespace(denormalize=lambda x: x))
        self.calls = []

    def prepare(self, cases):
        readable = [c for c in cases if c.case_id not in self.unreadable]
        inputs = torch.stack([torch.full((3, 16, 16), 0.5) for _ in readable])
        boxes = torch.tensor([[[2.0, 2.0, 10.0, 10.0]]]).expand(len(readable), 1, 4)
        return SimpleNamespace(cases=readable, inputs=inputs, boxes=boxes, valid=torch.ones(len(readable), 1, dtype=bool),
                               failed={c.case_id: f"{c.case_id}.png: unreadable" for c in cases
                                       if c.case_id in self.unreadable})

    def maps(self, prepared, config):
        self.calls.append(config.key)
        return torch.rand(len(prepared.cases), 16, 16, generator=torch.Generator().manual_seed(0))


def _gallery_records(count):
    return [{"case": f"c{i}", "config": key, "method": "grad", "sip": key.split("/")[1], "energy": 0.1 * i * (j + 1),
             "pointing": 1.0} for i in range(count) for j, key in enumerate(("grad/none", "grad/topq:0.25"))]


def test_gallery_reads_saved_maps_and_recomputes_only_what_is_missing(tmp_path):
    keys = ("grad/none", "grad/topq:0.25")
    cases = [SimpleNamespace(case_id=f"c{i}", target=1) for i in range(3)]
    records = _gallery_records(3)
    for key in keys:
        for case in cases:
            (tmp_path / slug(key)).mkdir(exist_ok=True)
            np.save(tmp_path / slug(key) / f"{slug(case.case_id)}.npy", np.eye(16, dtype=np.float32))
    evaluator = _FakeEvaluator(keys)
    gallery = build_gallery(evaluator, cases, records, maps_dir=tmp_path)
    assert evaluator.calls == [] and gallery.source == f"read from {tmp_path.name}/"
    assert [c.case_id for c in gallery.cases] == ["c0", "c1", "c2"] and gallery.cases[0].target_name == "dog"
    tile = gallery.cases[0].maps["grad/topq:0.25"]
    assert tile.shape == (16, 16, 3) and (tile[2, 2:10] == 255).all()  # the box edge is drawn in white
    (tmp_path / slug("grad/topq:0.25") / "c1.npy").unlink()
    evaluator = _FakeEvaluator(keys, unreadable={"c2"})
    gallery = build_gallery(evaluator, cases, records, maps_dir=tmp_path)
    assert evaluator.calls == ["grad/topq:0.25"] and gallery.source == "recomputed"
    assert [c.case_id for c in gallery.cases] == ["c0", "c1"] and gallery.missing == ["c2: c2.png: unreadable"]
    assert set(gallery.cases[0].records) == set(keys)


def test_gallery_picks_the_cases_where_configs_disagree_most():
    records = _gallery_records(6)  # spread of energy between the two configs grows with the case index
    chosen, because = choose_cases(records, 3)
    assert chosen == ["c3", "c4", "c5"] and "disagree most" in because
    assert choose_cases(records, 6) == ([f"c{i}" for i in range(6)], "every case")


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_no_horizontal_scroll_in_a_real_browser(tmp_path):
    """Twelve configs with long names and long case ids still fit the window: the page is no
    wider than the viewport (measured by Chromium itself, not guessed from the CSS)."""
    records = _twelve_configs()
    for record in records:
        record["case"] = "ILSVRC2012_val_00012345_" * 6 + "a_long_file_name.JPEG#" + record["case"]
    summary = summarize(records)
    keys = list(summary["configs"])
    rng = np.random.default_rng(0)
    cases = [GalleryCase(case, "a class with a long name", rng.integers(0, 255, (224, 224, 3), dtype=np.uint8),
                         {key: rng.integers(0, 255, (224, 224, 3), dtype=np.uint8) for key in keys},
                         {r["config"]: r for r in records if r["case"] == case})
             for case in dict.fromkeys(r["case"] for r in records)]
    plots = plot_metrics(tmp_path, summary, records)
    page = render_html(summary, Gallery(keys, cases[:2], "every case", "recomputed"), plots, "t")
    # The page's scroll and client width, then per table: its box's class, the box's scroll and client width.
    probe = ("<script>const d = document.documentElement; const t = [...document.querySelectorAll('table')]"
             ".map(e => e.parentElement.className + ':' + e.parentElement.scrollWidth + ':' + "
             "e.parentElement.clientWidth).join(' ');"
             "document.body.insertAdjacentHTML('beforeend', '<p id=probe>' + d.scrollWidth + ' ' + d.clientWidth + "
             "' ' + t + '</p>')</script>")
    (tmp_path / "probe.html").write_text(page.replace("</body>", probe + "</body>"), encoding="utf-8")
    for width in (800, 1280):
        result = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                                 f"--window-size={width},900", "--dump-dom", (tmp_path / "probe.html").as_uri()],
                                capture_output=True, text=True, timeout=120)
        found = re.search(r"id=\"probe\">(\d+) (\d+) ([^<]*)<", result.stdout)
        scroll_width, client_width = int(found.group(1)), int(found.group(2))
        assert client_width > width - 40 and scroll_width <= client_width, width
        boxes = [entry.split(":") for entry in found.group(3).split()]
        assert len(boxes) == 3 and all(box[0] == "table-scroll" for box in boxes), boxes
        assert all(int(box[2]) <= client_width for box in boxes)
    # Headless Chromium's window is at least 500 px wide, so 420 px is a page laid out 420 px wide:
    # nothing outside a table's scroll box may reach past its right edge, and a table wider than
    # that scrolls inside its box.
    narrow = ("<style>html{width:420px}</style><script>const o = [...document.body.querySelectorAll('*')]"
              ".filter(e => !e.parentElement.closest('.table-scroll'))"
              ".filter(e => e.getBoundingClientRect().right > 421).map(e => e.tagName + '.' + e.className);"
              "const s = [...document.querySelectorAll('.table-scroll')].filter(e => e.scrollWidth > e.clientWidth);"
              "const d = document.documentElement;"
              "document.body.insertAdjacentHTML('beforeend', '<p id=probe>' + (d.scrollWidth - d.clientWidth) + ' ' + "
              "s.length + ' ' + o.join(',') + '</p>')"
              "</script>")
    (tmp_path / "narrow.html").write_text(page.replace("</body>", narrow + "</body>"), encoding="utf-8")
    result = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--window-size=500,900",
                             "--dump-dom", (tmp_path / "narrow.html").as_uri()], capture_output=True, text=True,
                            timeout=120)
    page_overflow, scrolling, *outside = re.search(r"id=\"probe\">([^<]*)<", result.stdout).group(1).split(" ")
    assert int(page_overflow) <= 0 and outside in ([""], []), (page_overflow, outside)
    assert int(scrolling) >= 1  # the twelve-config metrics table is wider than 420 px


def test_a_run_where_every_case_failed_still_gives_a_report(tmp_path):
    records = [{"case": "a", "config": "grad/none", "method": "grad", "sip": "none", "error": "a.png: gone"}]
    summary = summarize(records)
    assert plot_metrics(tmp_path, summary, records) == [] and not list(tmp_path.iterdir())
    tree = parse(render_html(summary, None, [], "t"))
    assert not tree.all("table") and "a: a.png: gone" in tree.content()


def test_the_evaluate_command_writes_a_report_that_parses(tmp_path, capsys):
    """End to end on two built-in photos: the real model, maps and summary behind the page."""
    from sipgrad_cli.main import main

    code = main(["evaluate", "--builtin", "photos", "--limit", "2", "--steps", "0", "--method", "grad",
                 "--sip", "none,topq:0.25", "--out", str(tmp_path)])
    assert code == 0 and "report.html" in capsys.readouterr().out
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    tree = parse(page)
    assert all(img.attrs["src"].startswith("data:image/") for img in tree.all("img"))
    boxes = _table(SimpleNamespace(tree=tree), "config")
    assert [row.cells()[0].content() for row in boxes.all("tbody")[0].all("tr")] == [
        "grad/none", "grad/topq:0.25", "pointing at the centre (baseline)"]
    strips = [div for div in tree.all("div") if "case" in div.classes()]
    assert len(strips) == 2 and all(len(strip.all("figure")) == 3 for strip in strips)
    assert not tree.all("a") and not tree.all("script")  # nothing to follow or run


def test_energy_points_sit_at_their_cases_mean_box_share():
    """A point is drawn at the mean box share of its cases, where a uniform map scores the same:
    drawn at the bin's middle, a better-than-uniform group (boxes 0.5-0.7, middle 0.75) fell under
    the diagonal."""
    import matplotlib.pyplot as plt

    records = make_records()  # box shares 0.0, 0.1, ..., 0.7
    fig = energy_figure(summarize(records), records)
    try:
        grad = next(ax for ax in fig.axes if ax.get_title(loc="left") == "grad")
        lines = {line.get_label(): line for line in grad.lines}
        for sip in ("none", "topq:0.25"):
            rows = [r for r in records if r["config"] == f"grad/{sip}"]
            groups = ([0], [1, 2], [3, 4], [5, 6, 7])  # cases per bin: [0, .1), [.1, .25), [.25, .5), [.5, 1]
            assert np.allclose(lines[sip].get_xdata(), [np.mean([0.1 * i for i in g]) for g in groups])
            assert np.allclose(lines[sip].get_ydata(), [np.mean([rows[i]["energy"] for i in g]) for g in groups])
        top = next(child for child in grad.child_axes)
        assert [t.get_text().strip() for t in top.xaxis.get_ticklabels()] == ["n=1", "n=2", "n=2", "n=3"]
    finally:
        plt.close(fig)


def test_a_better_than_uniform_group_is_drawn_above_the_diagonal():
    import matplotlib.pyplot as plt

    # Boxes of 0.52 and 0.58 of the image, energy 0.6: better than a uniform map (0.55 on average).
    records = [{"case": f"c{i}", "config": "grad/none", "method": "grad", "sip": "none", "box_fraction": share,
                "energy": 0.6, **{n: 0.5 for n in METRICS if n != "energy"}} for i, share in enumerate((0.52, 0.58))]
    fig = energy_figure(summarize(records), records)
    try:
        line = next(line for line in fig.axes[0].lines if line.get_label() == "none")
        drawn = [(x, y) for x, y in zip(line.get_xdata(), line.get_ydata()) if np.isfinite(y)]
        assert len(drawn) == 1
        (x, y), = drawn
        assert y > x and x == pytest.approx(0.55)
    finally:
        plt.close(fig)


def test_box_outline_ends_on_the_boxes_last_pixel():
    tile = _draw_boxes(np.zeros((16, 16, 3), np.uint8), [(2.0, 2.0, 10.0, 10.0)], thickness=1)
    white = np.argwhere(tile[..., 0] == 255)
    assert white.min(0).tolist() == [2, 2] and white.max(0).tolist() == [9, 9]  # x1 = 10 is exclusive


def _comparison(p, effect):
    return {"configs": {"grad/none": {"metrics": {"energy": {"mean": 0.5}}},
                        "grad/topq:0.25": {"metrics": {"energy": {"mean": 0.52}}}},
            "comparisons": {"grad/topq:0.25": {"against": "grad/none", "n": 8, "metrics": {"energy": {
                "identical": False, "mean_difference": 0.02, "difference_low": -0.01, "difference_high": 0.05,
                "wilcoxon_p": p, "effect_size": effect, "win_rate": 0.5, "tie_rate": 0.0, "loss_rate": 0.5}}}}}


def test_a_non_significant_difference_is_no_clear_difference():
    row = parse(_comparison_table(_comparison(0.4, 0.3), ["energy"])).all("tbody")[0].all("tr")[1].cells()
    assert row[5].content() == "no clear difference" and row[5].classes() == set()
    row = parse(_comparison_table(_comparison(0.01, 0.3), ["energy"])).all("tbody")[0].all("tr")[1].cells()
    assert row[5].content() == "better with SIP"


def test_means_that_print_alike_share_the_best_mark():
    summary = {"configs": {k: {"n": 8, "metrics": {"energy": {"mean": m, "low": m - 0.1, "high": m + 0.1}}}
                           for k, m in (("a/none", 0.6012), ("b/none", 0.5991), ("c/none", 0.3))},
               "metrics": ["energy"]}
    tree = parse(_metrics_table(summary, ["energy"]))
    best = {tr.cells()[0].content() for tr in tree.all("tbody")[0].all("tr") if "best" in tr.cells()[2].classes()}
    assert best == {"a/none", "b/none"}  # both print 0.60


def test_dashed_line_is_the_centre_baseline():
    from sipgrad.render.figure import pyplot
    summary = summarize(make_records())
    fig = metrics_figure(summary)
    try:
        ax = next(a for a in fig.axes if a.get_title(loc="left").startswith("pointing game"))
        dashed = [l for l in ax.lines if l.get_linestyle() == "--"]
        centre = summary["configs"]["grad/none"]["metrics"]["centre"]["mean"]
        assert len(dashed) == 1 and dashed[0].get_xdata()[0] == pytest.approx(centre)
        assert centre != pytest.approx(summary["configs"]["grad/none"]["metrics"]["pointing"]["mean"])
    finally:
        pyplot().close(fig)
