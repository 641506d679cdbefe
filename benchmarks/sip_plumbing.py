"""SIP's cost split into plumbing and work: plain, hooks attached but idle, and full SIP.

    python benchmarks/sip_plumbing.py [--model efficientnet_lite0] [--batch 16] [--rounds 12]

The three variants run in one loop (order reversed every round), each timed by wall clock
and by process CPU time. "plumbing" is SIP with every hook attached and fed targets, but
its gradient hook returns at once: what the context, the forward hooks and the tensor
hooks cost on their own. The difference between "sip" and "plumbing" is SIP's own work.
Ratios are per round against "plain"; medians with bootstrap 95% intervals.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import median_interval, print_table, write_json  # noqa: E402

import sipgrad  # noqa: E402
from sipgrad.hooks.sip import SIPHook  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--sip", default="topq:0.25")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--out", default="benchmarks/results/sip_plumbing.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = sipgrad.load_model(args.model, pretrained=args.model == "efficientnet_lite0")
    inputs = torch.randn(args.batch, 3, 224, 224)
    working = SIPHook.backward

    def plain() -> None:
        sipgrad.explain(model, inputs, method="grad", batch_size=args.batch)

    def sip() -> None:
        sipgrad.explain(model, inputs, method="grad", sip=args.sip, batch_size=args.batch)

    def plumbing() -> None:
        SIPHook.backward = lambda self, name, grad, state, record: None
        try:
            sip()
        finally:
            SIPHook.backward = working

    variants = {"plain": plain, "plumbing": plumbing, "sip": sip}
    wall = {name: [] for name in variants}
    cpu = {name: [] for name in variants}
    for run in variants.values():
        run()
    for round_index in range(args.rounds):
        order = list(variants.items())
        for name, run in order if round_index % 2 == 0 else order[::-1]:
            began_wall, began_cpu = time.perf_counter(), time.process_time()
            run()
            wall[name].append(time.perf_counter() - began_wall)
            cpu[name].append(time.process_time() - began_cpu)
    rows = []
    for name in variants:
        row = {"variant": name, "wall s": statistics.median(wall[name]), "cpu s": statistics.median(cpu[name])}
        for clock, samples in (("wall", wall), ("cpu", cpu)):
            middle, low, high = median_interval([a / b for a, b in zip(samples[name], samples["plain"])])
            row[f"{clock} %"] = 100 * (middle - 1)
            row[f"{clock} 95%"] = f"[{100 * (low - 1):+.1f}, {100 * (high - 1):+.1f}]"
        rows.append(row)
    print(f"{args.model}, batch {args.batch}, grad, SIP {args.sip}, {args.rounds} rounds")
    print_table(rows, ["variant", "wall s", "wall %", "wall 95%", "cpu s", "cpu %", "cpu 95%"])
    write_json(args.out, rows, model=args.model, batch=args.batch, sip=args.sip, rounds=args.rounds)


if __name__ == "__main__":
    main()
