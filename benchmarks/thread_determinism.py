"""How much do evaluation records depend on the CPU thread count, and where does it come from?

Runs the evaluator on the same cases in separate processes with ``OMP_NUM_THREADS=1`` and
``=2`` (batch size 1, so only the thread count differs) and compares every record: per
metric, the largest and the median relative difference and how many records differ at all.
The same pair runs once more with oneDNN (mkldnn) switched off, to show where the
difference comes from; that run is several times slower, so it is optional.

    python benchmarks/thread_determinism.py --out docs/data/thread_determinism.json
    python benchmarks/thread_determinism.py --no-onednn-check   # the first comparison only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import print_table, write_json  # noqa: E402

METRICS = ("prob", "pointing", "energy", "mu_in", "deletion_auc", "deletion_lerf_auc", "insertion_auc",
           "insertion_lerf_auc")


def worker(out: str, onednn: bool, cases: int, steps: int) -> None:
    """Evaluate the built-in photos (first ``cases``) one case per batch; write the records as JSON."""
    import torch

    torch.backends.mkldnn.enabled = onednn
    from sipgrad import load_model
    from sipgrad.evaluation import EvalSettings, builtin_cases
    from sipgrad.evaluation.evaluator import Evaluator

    model = load_model("efficientnet_lite0")
    evaluator = Evaluator(model, EvalSettings(methods=("grad",), sips=("none", "topq:0.25"), steps=steps))
    records = [record for case in builtin_cases("photos", model.classes)[:cases] for record in evaluator.evaluate([case])]
    Path(out).write_text(json.dumps([{k: v for k, v in r.items() if k in METRICS or k in ("case", "config")}
                                     for r in records]))


def run_pair(onednn: bool, cases: int, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        outputs = {}
        for threads in (1, 2):
            path = os.path.join(scratch, f"{threads}.json")
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            subprocess.run([sys.executable, __file__, "--worker", path, "--cases", str(cases), "--steps", str(steps)]
                           + ([] if onednn else ["--no-onednn"]), check=True, env=env)
            outputs[threads] = json.loads(Path(path).read_text())
    one, two = outputs[1], outputs[2]
    assert [(r["case"], r["config"]) for r in one] == [(r["case"], r["config"]) for r in two]
    rows = []
    for metric in METRICS:
        differences = [abs(a[metric] - b[metric]) / max(abs(a[metric]), 1e-12) for a, b in zip(one, two)]
        rows.append({"onednn": onednn, "metric": metric, "records": len(differences),
                     "records_differing": sum(d > 0 for d in differences),
                     "max_relative_difference": max(differences),
                     "median_relative_difference": statistics.median(differences)})
    return {"rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=6, help="first N cases of --builtin photos (default 6)")
    parser.add_argument("--steps", type=int, default=2, help="deletion/insertion steps (default 2)")
    parser.add_argument("--no-onednn-check", action="store_true", help="skip the slow run without oneDNN")
    parser.add_argument("--out", default="benchmarks/results/thread_determinism.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--no-onednn", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, not args.no_onednn, args.cases, args.steps)
        return
    rows = run_pair(True, args.cases, args.steps)["rows"]
    if not args.no_onednn_check:
        rows += run_pair(False, args.cases, args.steps)["rows"]
    print_table(rows, ["onednn", "metric", "records", "records_differing", "max_relative_difference",
                       "median_relative_difference"])
    write_json(args.out, rows, command="python benchmarks/thread_determinism.py " + " ".join(sys.argv[1:]),
               cases=args.cases, steps=args.steps, configs=["grad/none", "grad/topq:0.25"], batch_size=1)


if __name__ == "__main__":
    main()
