"""Evaluator speed: images/s per config, the share spent in deletion/insertion, and batching's gain.

    python benchmarks/evaluate_speed.py [--cases 16] [--steps 10] [--rounds 3]

Runs on the built-in composites with efficientnet_lite0 on CPU. The last table compares, on
the same maps in the same run, one model call per perturbed copy (four separate curves,
as a naive loop would do) with the batched paths: separate curves in chunks, and the curve
set that computes the end points the four curves share once (what the evaluator uses), with
BatchNorm folded, and compiled (``sipgrad evaluate --compile``; its one-off compile time is
printed and not in the table).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved, print_table, write_json  # noqa: E402

import sipgrad  # noqa: E402
from sipgrad.evaluation import EvalSettings, Evaluator, builtin_cases  # noqa: E402
from sipgrad.evaluation import metrics  # noqa: E402
from sipgrad.evaluation.predictor import PerturbationPredictor  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--configs", type=int, default=3, help="how many of the configs to time (1-3)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    parser.add_argument("--out", default="benchmarks/results/evaluate_speed.json")
    args = parser.parse_args()
    model = sipgrad.load_model()
    cases = builtin_cases("composites", model.classes)[:args.cases]
    rows = []
    for method, sip in (("grad", "none"), ("grad", "topq:0.25"), ("gradcam", "none"))[:args.configs]:
        timings = {}
        for label, steps in (("box metrics only", 0), ("with deletion/insertion", args.steps)):
            evaluator = Evaluator(model, EvalSettings(methods=(method,), sips=(sip,), steps=steps))
            began = time.perf_counter()
            evaluator.evaluate(cases)
            timings[label] = time.perf_counter() - began
        total = timings["with deletion/insertion"]
        rows.append({"config": f"{method}/{sip}", "images/s": len(cases) / total,
                     "images/s (box only)": len(cases) / timings["box metrics only"],
                     "deletion/insertion share %": 100 * (1 - timings["box metrics only"] / total)})
    print_table(rows, ["config", "images/s", "images/s (box only)", "deletion/insertion share %"])

    evaluator = Evaluator(model, EvalSettings())
    inputs = evaluator.prepare(cases[:4]).inputs
    targets = torch.tensor([c.target for c in cases[:4]])
    maps = sipgrad.explain(model, inputs, target=targets).input_saliency
    predict = model.module

    def separate(chunk: int):
        def run():
            with torch.inference_mode():
                for mode in ("deletion", "insertion"):
                    for first in (True, False):
                        metrics.perturbation_curves(predict, inputs, maps, targets, steps=args.steps, mode=mode,
                                                    most_relevant_first=first, chunk=chunk)
        return run

    def curve_set(chunk: int, model=predict):
        def run():
            with torch.inference_mode():
                metrics.perturbation_curve_set(model, inputs, maps, targets, steps=args.steps, chunk=chunk)
        return run

    def channels_last(x: torch.Tensor) -> torch.Tensor:
        return predict(x.contiguous(memory_format=torch.channels_last))

    variants = {"one call per copy (4 separate curves)": separate(1),
                "4 separate curves, chunks of 4": separate(4)}
    variants.update({f"curve set, chunks of {c}": curve_set(c) for c in (1, 4, 8, 16)})
    variants.update({f"curve set, chunks of {c}, channels-last": curve_set(c, channels_last) for c in (4, 8, 16)})
    evaluator_path = PerturbationPredictor(predict, inputs)
    variants["curve set, chunks of 4, channels-last, BatchNorm folded (the evaluator on CPU)"] = \
        curve_set(evaluator_path.chunk, evaluator_path)
    if not args.no_compile:
        compiled = PerturbationPredictor(predict, inputs, compile=True)
        began = time.perf_counter()
        curve_set(compiled.chunk, compiled)()  # compiles once (one padded shape)
        compile_seconds = time.perf_counter() - began
        print(f"torch.compile: first call {compile_seconds:.1f}s, compiled={compiled.compiled}")
        variants["the evaluator with --compile (after its one-off compile)"] = curve_set(compiled.chunk, compiled)
    times = interleaved(variants, rounds=args.rounds)
    baseline = times["one call per copy (4 separate curves)"]
    speed = [{"path": name, "seconds (4 images, 4 curves)": t, "speed-up": baseline / t} for name, t in times.items()]
    print()
    print_table(speed, ["path", "seconds (4 images, 4 curves)", "speed-up"])
    write_json(args.out, rows + speed, cases=args.cases, steps=args.steps)


if __name__ == "__main__":
    main()
