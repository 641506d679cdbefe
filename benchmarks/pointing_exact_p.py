"""Exact p of the pointing game's SIP-vs-plain tests in the committed result summaries.

    python benchmarks/pointing_exact_p.py [--out docs/data/pointing_exact_p.json]

Until 2026-12-01 ``summary.paired_comparison`` called scipy's Wilcoxon test with its default
method, which switches to the normal approximation as soon as one pair ties. Pointing is a
0/1 metric, so most pairs tie, and the approximation made p too small. The summaries in
docs/data were written then. Their per-case records are not committed, but for a 0/1 metric
the counts suffice: every untied difference is +-1, the signed ranks all tie, and the exact
test is the sign test on (wins, losses), which is what ``paired_comparison`` computes now.
This prints, for every pointing comparison, the committed p and the exact one, and writes
them to ``--out``.
"""

from __future__ import annotations

import argparse
import glob
import json
import pathlib
import sys

from scipy import stats

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _timing import print_table, write_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/pointing_exact_p.json")
    args = parser.parse_args()
    rows = []
    for path in sorted(glob.glob("docs/data/results_*.json")):
        document = json.loads(pathlib.Path(path).read_text())
        counts = {name: config["n"] for name, config in document.get("configs", {}).items()}
        for name, comparison in document.get("comparisons", {}).items():
            pointing = comparison.get("metrics", {}).get("pointing")
            if not pointing or name not in counts:
                continue
            n = counts[name]
            wins, losses = round(pointing["win_rate"] * n), round(pointing["loss_rate"] * n)
            exact = stats.binomtest(wins, wins + losses, 0.5).pvalue if wins + losses else 1.0
            rows.append({"file": pathlib.Path(path).name, "config": name, "n": n, "wins": wins, "losses": losses,
                         "committed p": pointing["wilcoxon_p"], "exact p": float(exact),
                         "p < 0.05 then": bool(pointing["wilcoxon_p"] < 0.05), "p < 0.05 now": bool(exact < 0.05)})
    print_table(rows, list(rows[0]))
    write_json(args.out, rows)


if __name__ == "__main__":
    main()
