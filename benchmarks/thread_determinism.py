"""How much do evaluation records depend on the CPU thread count, and where does it come from?

Runs the evaluator on the same cases in separate processes with ``OMP_NUM_THREADS=1`` and
``=2`` (batch size 1, so only the thread count differs) and compares every record: per
metric, the largest and the median relative difference and how many records differ at all.
Then, in one process, one forward and backward pass of Lite0 at 1 and at 2 threads, with
oneDNN (mkldnn) on and off: the first layer whose output differs, and whether the input
gradient is bit-identical. That shows where the difference comes from.

    python benchmarks/thread_determinism.py --out docs/data/thread_determinism.json
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
    """Records of two worker processes, 1 and 2 threads, compared metric by metric."""
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
        rows.append({"metric": metric, "records": len(differences),
                     "records_differing": sum(d > 0 for d in differences),
                     "max_relative_difference": max(differences),
                     "median_relative_difference": statistics.median(differences)})
    return {"rows": rows}


def first_difference(onednn: bool) -> dict:
    """One Lite0 forward+backward at 1 and 2 threads: the first module whose output differs."""
    import torch

    from sipgrad import load_model

    torch.backends.mkldnn.enabled = onednn
    module = load_model("efficientnet_lite0").module.eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    leaves = [(name, m) for name, m in module.named_modules() if not list(m.children())]

    def run(threads: int):
        torch.set_num_threads(threads)
        outputs = {}
        handles = [m.register_forward_hook(lambda _m, _i, o, name=name: outputs.__setitem__(name, o.detach().clone()))
                   for name, m in leaves]
        inputs = x.clone().requires_grad_()
        module(inputs)[0, 285].backward()
        for handle in handles:
            handle.remove()
        return outputs, inputs.grad

    (one, grad_one), (two, grad_two) = run(1), run(2)
    torch.backends.mkldnn.enabled = True
    differing = [name for name, _ in leaves if not torch.equal(one[name], two[name])]
    first = differing[0] if differing else None
    return {"onednn": onednn, "first_differing_module": first,
            "its_max_abs_difference": float((one[first] - two[first]).abs().max()) if first else 0.0,
            "modules_differing": len(differing), "modules": len(leaves),
            "input_gradient_identical": bool(torch.equal(grad_one, grad_two)),
            "input_gradient_max_relative_difference": float((grad_one - grad_two).abs().max() / grad_one.abs().max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=4, help="first N cases of --builtin photos (default 4)")
    parser.add_argument("--steps", type=int, default=2, help="deletion/insertion steps (default 2)")
    parser.add_argument("--out", default="benchmarks/results/thread_determinism.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--no-onednn", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, not args.no_onednn, args.cases, args.steps)
        return
    rows = run_pair(True, args.cases, args.steps)["rows"]
    print_table(rows, ["metric", "records", "records_differing", "max_relative_difference",
                       "median_relative_difference"])
    layers = [first_difference(True), first_difference(False)]
    print()
    print_table(layers, ["onednn", "first_differing_module", "its_max_abs_difference", "modules_differing",
                         "input_gradient_identical", "input_gradient_max_relative_difference"])
    write_json(args.out, rows, command="python benchmarks/thread_determinism.py " + " ".join(sys.argv[1:]),
               cases=args.cases, steps=args.steps, configs=["grad/none", "grad/topq:0.25"], batch_size=1,
               one_pass=layers)


if __name__ == "__main__":
    main()
