"""Cost of SIP: grad and ig with and without SIP, side by side in one run.

    python benchmarks/sip_overhead.py [--models resnet18,vgg16,efficientnet_lite0] [--rounds 15]
    python benchmarks/sip_overhead.py --memory

Target: SIP adds at most 5% at batch 16 on CPU. What is measured:

* wall-clock overhead: plain and SIP runs alternate back to back (ABBA order); the
  median of the per-round ratios SIP/plain, with a bootstrap 95% interval. On a noisy
  machine this is far steadier than comparing two separately taken medians.
* with ``--repeats N``: N such measurements one after another; the overhead is the median of
  their medians, and every run's value is listed. Single runs scatter more than their own
  bootstrap intervals suggest, because the machine's noise comes in bursts.
* hook share: the time spent inside SIP's gradient hooks (scoring, mask, filter), timed
  directly with a clock around each hook call, as a share of all SIP runs of the rounds. This is SIP's
  own work, free of the machine's run-to-run noise (CPU ops are synchronous, so a host
  clock around the hook measures its kernels).
* peak memory (``--memory``): growth of the process's peak resident memory over one
  ``grad`` pass, plain and with SIP, each in a fresh process.

Random-init weights for the torchvision models (speed does not depend on them); IG uses
few steps to keep the run short (its overhead ratio does not depend on the step count:
every step is one forward+backward).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import median_interval, paired_ratios, print_table, write_json  # noqa: E402

import sipgrad  # noqa: E402
from sipgrad.hooks.sip import SIP, SIPHook  # noqa: E402


class HookClock:
    """Accumulates the seconds spent in ``SIPHook.backward`` (patched for the benchmark only)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        original = SIPHook.backward

        @functools.wraps(original)
        def timed(hook, *args, **kwargs):
            began = time.perf_counter()
            try:
                return original(hook, *args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - began

        SIPHook.backward = timed


def peak_memory_mib(model_name: str, sip: str | None, layers: str | None, batch: int) -> float:
    """Growth of peak resident memory (MiB) over one ``grad`` pass, run in a fresh process."""
    code = ("import resource, sys, torch, sipgrad\n"
            f"model = sipgrad.load_model({model_name!r}, pretrained={model_name == 'efficientnet_lite0'})\n"
            f"inputs = torch.randn({batch}, 3, 224, 224)\n"
            f"sip = sipgrad.SIPConfig.parse({sip!r}, layers={layers!r})\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            f"sipgrad.explain(model, inputs, method='grad', sip=sip, batch_size={batch})\n"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)\n")
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(done.stdout.strip().splitlines()[-1])


def memory_table(models: list[str], sip: str, layers: str | None, batch: int, out: str) -> None:
    rows = []
    for name in models:
        plain, with_sip = peak_memory_mib(name, None, None, batch), peak_memory_mib(name, sip, layers, batch)
        rows.append({"model": name, "batch": batch, "plain peak growth MiB": plain,
                     "SIP peak growth MiB": with_sip, "extra %": 100 * (with_sip / plain - 1)})
        print(f"{name} b{batch}: {plain:.0f} MiB plain, {with_sip:.0f} MiB with SIP", flush=True)
    print()
    print_table(rows, ["model", "batch", "plain peak growth MiB", "SIP peak growth MiB", "extra %"])
    write_json(out, rows, sip=sip, sip_layers=layers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet18,vgg16,efficientnet_lite0")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--methods", default="grad,ig")
    parser.add_argument("--sip", default="topq:0.25",
                        help="SIP spec(s) to time, comma-separated, e.g. topq:0.25,pca:8 (default: topq:0.25)")
    parser.add_argument("--sip-layers", default=None, help="comma-separated conv names to hook (default: the model's)")
    parser.add_argument("--ig-steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=1,
                        help="repeat each paired measurement N times; report the median of the runs' medians")
    parser.add_argument("--memory", action="store_true", help="measure peak memory (batch 16, grad) instead of time")
    parser.add_argument("--out", default=None, help="JSON file (default: benchmarks/results/sip_overhead[_memory].json)")
    args = parser.parse_args()
    if args.memory:
        memory_table(args.models.split(","), args.sip, args.sip_layers, 16, args.out or "benchmarks/results/sip_overhead_memory.json")
        return
    torch.manual_seed(0)
    clock = HookClock()
    sip_configs = [sipgrad.SIPConfig.parse(spec, layers=args.sip_layers) for spec in args.sip.split(",")]
    rows = []
    for name in args.models.split(","):
        model = sipgrad.load_model(name, pretrained=name == "efficientnet_lite0")
        for sip_config, batch in [(s, b) for s in sip_configs for b in map(int, args.batches.split(","))]:
            hooked = len(SIP(model, sip_config).layers)
            inputs = torch.randn(batch, 3, 224, 224)
            for method in args.methods.split(","):
                options = {"ig_steps": args.ig_steps, "batch_size": batch} if method == "ig" else {"batch_size": batch}
                sip_seconds = [0.0]

                def with_sip() -> None:
                    began = time.perf_counter()
                    sipgrad.explain(model, inputs, method=method, sip=sip_config, **options)
                    sip_seconds[0] += time.perf_counter() - began

                clock.seconds = 0.0
                runs = []  # each repeat: a full paired measurement of `rounds` rounds
                for _ in range(args.repeats):
                    ratios, plain, sip = paired_ratios(
                        lambda: sipgrad.explain(model, inputs, method=method, **options), with_sip, rounds=args.rounds)
                    runs.append((median_interval(ratios), sorted(plain)[len(plain) // 2]))
                hook_share = clock.seconds / sip_seconds[0]  # over every SIP call of the paired rounds
                (middle, low, high), plain_s = runs[0]
                row = {"model": name, "sip": sip_config.label, "hooked convs": hooked, "batch": batch, "method": method,
                       "plain s": plain_s, "overhead %": 100 * (middle - 1),
                       "95% low": 100 * (low - 1), "95% high": 100 * (high - 1), "hook share %": 100 * hook_share}
                if args.repeats > 1:
                    per_run = [100 * (run[0][0] - 1) for run in runs]
                    row.update({"overhead %": statistics.median(per_run), "95% low": None, "95% high": None,
                                "runs %": ", ".join(f"{value:+.1f}" for value in per_run)})
                rows.append(row)
                detail = (f"runs {row['runs %']}" if args.repeats > 1
                          else f"[{row['95% low']:+.1f}, {row['95% high']:+.1f}]")
                print(f"{name} {sip_config.label} b{batch} {method}: {row['overhead %']:+.1f}% {detail}, "
                      f"hooks {row['hook share %']:.1f}% of the SIP run", flush=True)
    print()
    print_table(rows, ["model", "sip", "hooked convs", "batch", "method", "plain s", "overhead %", "95% low", "95% high",
                       "hook share %"] + (["runs %"] if args.repeats > 1 else []))
    write_json(args.out or "benchmarks/results/sip_overhead.json", rows, sip=args.sip, sip_layers=args.sip_layers, ig_steps=args.ig_steps, rounds=args.rounds,
               repeats=args.repeats)


if __name__ == "__main__":
    main()
