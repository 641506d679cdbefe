"""How much do maps and evaluation records depend on the CPU thread count, and where does it come from?

1. Maps: every attribution method (the registry's, or ``--methods``) on the same cases in
   separate processes with ``OMP_NUM_THREADS=1`` and ``=2`` (batch size 1, so only the
   thread count differs), with oneDNN (mkldnn) on and off: per method, the largest
   difference between the two maps of a case relative to the map's largest value, and how
   many maps are bit-identical.
2. Records: the evaluator on the same cases and configs (``grad`` and ``grad/topq:0.25``),
   1 against 2 threads: per metric, the largest and the median relative difference and how
   many records differ at all.
3. In one process, one forward and backward pass of Lite0 at 1 and at 2 threads, with
   oneDNN on and off: the first layer whose output differs, and whether the input gradient
   is bit-identical. That shows where the difference comes from.

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


def maps_worker(out: str, onednn: bool, cases: int, methods: list[str]) -> None:
    """Each method's input-resolution maps of the first ``cases`` built-in photos, one image per batch, as .npy."""
    import numpy as np
    import torch

    torch.backends.mkldnn.enabled = onednn
    from sipgrad import explain, load_model
    from sipgrad.evaluation import builtin_cases

    model = load_model("efficientnet_lite0")
    images = [case.load() for case in builtin_cases("photos", model.classes)[:cases]]
    maps = np.stack([explain(model, images, method=method, batch_size=1, seed=0).input_saliency.numpy()
                     for method in methods])  # methods x cases x H x W
    np.save(out, maps, allow_pickle=False)


def compare_maps(onednn: bool, cases: int, methods: list[str]) -> list[dict]:
    """Per method: the maps of two worker processes (1 and 2 threads), compared case by case."""
    import numpy as np

    with tempfile.TemporaryDirectory() as scratch:
        outputs = {}
        for threads in (1, 2):
            path = os.path.join(scratch, f"{threads}.npy")
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            subprocess.run([sys.executable, __file__, "--maps-worker", path, "--cases", str(cases),
                            "--methods", ",".join(methods)] + ([] if onednn else ["--no-onednn"]), check=True, env=env)
            outputs[threads] = np.load(path, allow_pickle=False)
    rows = []
    for method, one, two in zip(methods, outputs[1], outputs[2]):
        scale = np.abs(one).reshape(len(one), -1).max(axis=1)
        relative = np.abs(one - two).reshape(len(one), -1).max(axis=1) / np.maximum(scale, 1e-30)
        rows.append({"onednn": onednn, "method": method, "maps": len(one),
                     "maps_identical": int(sum(np.array_equal(a, b) for a, b in zip(one, two))),
                     "max_relative_difference": float(relative.max()),
                     "median_relative_difference": float(np.median(relative))})
    return rows


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
    parser.add_argument("--methods", default=None, metavar="NAMES",
                        help="comma-separated methods for the maps table (default: every registered method)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--maps-worker", help=argparse.SUPPRESS)
    parser.add_argument("--no-onednn", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    from sipgrad.attribution.methods import METHODS

    methods = args.methods.split(",") if args.methods else list(METHODS)
    if args.maps_worker:
        maps_worker(args.maps_worker, not args.no_onednn, args.cases, methods)
        return
    if args.worker:
        worker(args.worker, not args.no_onednn, args.cases, args.steps)
        return
    maps = compare_maps(True, args.cases, methods) + compare_maps(False, args.cases, methods)
    print_table(maps, ["onednn", "method", "maps", "maps_identical", "max_relative_difference",
                       "median_relative_difference"])
    print()
    rows = run_pair(True, args.cases, args.steps)["rows"]
    print_table(rows, ["metric", "records", "records_differing", "max_relative_difference",
                       "median_relative_difference"])
    layers = [first_difference(True), first_difference(False)]
    print()
    print_table(layers, ["onednn", "first_differing_module", "its_max_abs_difference", "modules_differing",
                         "input_gradient_identical", "input_gradient_max_relative_difference"])
    write_json(args.out, rows, command="python benchmarks/thread_determinism.py " + " ".join(sys.argv[1:]),
               cases=args.cases, steps=args.steps, configs=["grad/none", "grad/topq:0.25"], batch_size=1,
               one_pass=layers, maps=maps, methods=methods)


if __name__ == "__main__":
    main()
