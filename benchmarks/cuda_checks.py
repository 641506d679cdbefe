"""GPU checks of the explain pipeline and the evaluator (run where CUDA exists; CI has none).

    python benchmarks/cuda_checks.py --out cuda_checks.json

What it checks, on EfficientNet-Lite0 (offline weights) and the built-in photos:

* every method x SIP spec gives the same maps for batch sizes 1 and 4 on CUDA (batch
  invariance, checked against ``--tolerance``), and how far CUDA's maps are from the CPU's
  (reported: float32 sums in another order move a few pixels, and hard channel selection
  can flip a channel whose score is a near-tie);
* the evaluator's records (box and perturbation metrics) on CUDA equal the CPU's;
* speed: images per second of explain on CUDA at batch 64, plain and under SIP, paired rounds.

Prints a table and writes JSON. Exits non-zero when a check fails its tolerance.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sipgrad  # noqa: E402
from sipgrad.evaluation import EvalSettings, Evaluator, builtin_cases  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ASSETS = [str(ROOT / "assets" / name) for name in ("chelsea.jpg", "coffee.jpg", "astronaut.jpg", "rocket.jpg")]
OPTIONS = {"ig_steps": 16, "smoothgrad_samples": 8}
SIPS = (None, "topq:0.25", "absq:0.25", "pca:8")


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-12))


def map_checks(cpu_model, gpu_model) -> list[dict]:
    rows = []
    for method in sipgrad.METHODS:
        for sip in SIPS:
            cpu = sipgrad.explain(cpu_model, ASSETS, method=method, sip=sip, batch_size=4, **OPTIONS).input_saliency
            gpu = [sipgrad.explain(gpu_model, ASSETS, method=method, sip=sip, batch_size=size, **OPTIONS).input_saliency
                   for size in (1, 4)]
            rows.append({"method": method, "sip": sip or "none", "cuda vs cpu": relative(gpu[1], cpu),
                         "cuda batch 1 vs 4": relative(gpu[0], gpu[1])})
            print(f"{method:<10} {sip or 'none':<10} cuda/cpu {rows[-1]['cuda vs cpu']:.2e}  "
                  f"batch {rows[-1]['cuda batch 1 vs 4']:.2e}", flush=True)
    return rows


def evaluator_check(cpu_model, gpu_model) -> dict:
    cases = builtin_cases("photos", cpu_model.classes)
    settings = EvalSettings(methods=("grad", "gradcam"), sips=("none", "topq:0.25", "pca:8"), steps=10)
    records = {}
    for device, model in (("cpu", cpu_model), ("cuda", gpu_model)):
        began = time.perf_counter()
        records[device] = Evaluator(model, settings).evaluate(cases)
        records[device + " seconds"] = time.perf_counter() - began
    metrics = [k for k, v in records["cpu"][0].items() if isinstance(v, float) and k not in ("seconds", "prob")]
    worst = {m: max(abs(a[m] - b[m]) for a, b in zip(records["cpu"], records["cuda"])) for m in metrics}
    return {"cases": len(cases), "configs": len(settings.configs()), "max abs difference per metric": worst,
            "cpu seconds": records["cpu seconds"], "cuda seconds": records["cuda seconds"]}


def speed(gpu_model, rounds: int = 7, batch: int = 64) -> list[dict]:
    inputs = torch.randn(batch, 3, 224, 224, device="cuda")
    rows = []
    for method, sips in (("grad", (None, "topq:0.25", "pca:8")), ("ig", (None, "topq:0.25"))):
        options = {"ig_steps": 16} if method == "ig" else {}
        samples: dict[str, list[float]] = {}
        for _ in range(rounds + 1):  # the first round warms up
            for sip in sips:
                torch.cuda.synchronize()
                began = time.perf_counter()
                sipgrad.explain(gpu_model, inputs, method=method, sip=sip, batch_size=batch, **options)
                torch.cuda.synchronize()
                samples.setdefault(sip or "none", []).append(time.perf_counter() - began)
        plain = statistics.median(samples["none"][1:])
        for sip, values in samples.items():
            seconds = statistics.median(values[1:])
            rows.append({"method": method, "sip": sip, "batch": batch, "images/s": batch / seconds,
                         "overhead %": 100 * (seconds / plain - 1)})
            print(f"speed {method} {sip}: {batch / seconds:.0f} img/s ({rows[-1]['overhead %']:+.1f}%)", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="cuda_checks.json")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest relative difference between batch sizes allowed (default: 1e-4)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 2
    cpu_model = sipgrad.load_model()
    gpu_model = sipgrad.load_model(device="cuda")
    result = {"command": "python " + " ".join(sys.argv), "device": torch.cuda.get_device_name(),
              "torch": torch.__version__}
    # Written after every stage, so a run cut short keeps what it finished.
    for stage, run in (("maps", lambda: map_checks(cpu_model, gpu_model)),
                       ("evaluator", lambda: evaluator_check(cpu_model, gpu_model)),
                       ("speed", lambda: speed(gpu_model))):
        result[stage] = run()
        Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result["evaluator"], indent=1), flush=True)
    failures = [r for r in result["maps"] if r["cuda batch 1 vs 4"] > args.tolerance]
    for row in failures:
        print(f"FAILED {row}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
