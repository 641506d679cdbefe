"""Forward-gradient step vs backprop step: time and peak memory, side by side.

    python benchmarks/forward_gradient.py [--models mlp,cnn] [--batch-sizes 64] [--directions 1,8,64]
        [--samplers gaussian,...] [--rounds 9] [--threads 1] [--compile] [--chunk-rows 512,...]
        [--out benchmarks/results/forward_gradient.json]
    python benchmarks/forward_gradient.py --count-ops [--models mlp,cnn] [--batch-sizes 64] [--out FILE]

One "step" is what a training step spends on its gradient: backprop is forward + backward
(``loss.backward()``) of the model; a forward-gradient step draws K directions with the
sampler, computes the K directional derivatives and forms the estimate
(``model_gradient_estimate``: the fused tangent path for these models, in chunks of at most
2,048 directions x examples; one row per setting also runs all K unchunked, and one the
general path, ``fused=False``, vmapped JVPs / dual tensors). Optimizer updates are the same
for both and left out. With ``--compile``, two more rows: the fused Gaussian step through
``torch.compile`` (``compiled=True``) and backprop of the ``torch.compile``d model, both after
a warm-up call that compiles. ``--chunk-rows`` adds K_max rows with other chunk bounds.

Time: every variant runs once per round, rounds interleaved, median over rounds, on
``--threads`` threads (``torch.set_num_threads``, default 1). Two clocks: wall time, and the
process's CPU time (``time.process_time``), which a loaded shared machine inflates far less
(a process that is descheduled mid-call is not charged); the ratios use CPU time (with more
than one thread CPU time adds the threads up, so there the ratios use wall time). Peak
memory: each (model, batch, variant) in a fresh process with glibc's mmap threshold lowered
(large tensors come from and go back to the OS), the rise of the peak resident set
(``VmHWM``, reset through ``/proc/self/clear_refs`` after a first warm-up step) over the
resident set before the steps, for backprop and the Gaussian sampler, at ``--memory-batch``.

The columns ``x backprop`` (time of the step / time of backprop) and, per model, the cost of
each extra direction ((t(K_max) - t(K=1)) / (K_max - 1) / t(backprop)) are the issue's
goals: K = 1 at <= 1.0x backprop, each extra direction at <= 0.7x.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import jvp

from sipgrad.datasets import load_digits
from sipgrad.engines.forward.estimators import (
    combine,
    directional_derivatives,
    loss_function,
    model_gradient_estimate,
    trainable_parameters,
)
from sipgrad.engines.forward.fused import flat_combine, flat_gaussian, plan_for
from sipgrad.engines.forward.models import build_model
from sipgrad.engines.forward.samplers import make_sampler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import median_interval, print_table, write_json


def make(model_name: str, batch_size: int):
    """The digits model and a batch of ``batch_size`` training digits (cycled if fewer)."""
    data = load_digits()
    model = build_model(model_name, data.image_shape, seed=0).train()
    rows = torch.arange(batch_size) % len(data.train)
    return model, data.train.inputs[rows], data.train.labels[rows]



def backprop_step(model, x, y):
    def run():
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
    return run


def compiled_backprop_step(model, x, y):
    """Backprop of the ``torch.compile``d model (compiled on the first call)."""
    loss_of = torch.compile(lambda inputs, labels: F.cross_entropy(model(inputs), labels))

    def run():
        model.zero_grad(set_to_none=True)
        loss_of(x, y).backward()
    return run


def forward_step(model, x, y, sampler, directions, seed=0, chunk_size="auto", fused=True, compiled=False):
    generator = torch.Generator().manual_seed(seed)
    sampler = make_sampler(sampler)
    return lambda: model_gradient_estimate(model, F.cross_entropy, x, y, sampler, directions, generator=generator,
                                           chunk_size=chunk_size, fused=fused, compiled=compiled)


MEMORY_CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[4])
import torch
from forward_gradient import backprop_step, forward_step, make
torch.set_num_threads(1)
model_name, batch_size, variant = sys.argv[1], int(sys.argv[2]), sys.argv[3]
model, x, y = make(model_name, batch_size)
step = backprop_step(model, x, y) if variant == "backprop" else forward_step(model, x, y, "gaussian", int(variant))
def status_kib(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))
step()  # first call: lazy initialisation, not the step's own memory
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")  # resets the peak resident set (VmHWM) to the current one
before = status_kib("VmRSS")
for _ in range(3):
    step()
print(json.dumps({"peak_mib": (status_kib("VmHWM") - before) / 1024}))
"""


def peak_memory(model: str, batch_size: int, variant: str) -> float:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", MEMORY_CHILD, model, str(batch_size), variant,
                           str(Path(__file__).resolve().parent)], check=True,
                          capture_output=True, text=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_mib"]


def interleaved_clocks(variants: dict[str, Callable[[], object]], rounds: int) -> dict[str, tuple[float, float]]:
    """Median (wall seconds, process CPU seconds) per call of each variant, over interleaved rounds."""
    for run in variants.values():
        run()
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            began_wall, began_cpu = time.perf_counter(), time.process_time()
            run()
            cpu[name].append(time.process_time() - began_cpu)
            wall[name].append(time.perf_counter() - began_wall)
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in variants}


def breakdown_variants(model, x, y, compile_too=False):
    params = trainable_parameters(model)
    loss_of = loss_function(model, F.cross_entropy, x, y)
    sampler, generator = make_sampler("gaussian"), torch.Generator().manual_seed(0)
    one = sampler.sample(params, 1, generator)
    plan = plan_for(model, F.cross_entropy, x, y)
    flat, views = flat_gaussian(plan.params, 1, generator)

    def plain_forward():
        with torch.no_grad():
            F.cross_entropy(model(x), y)

    def functional_forward():
        with torch.no_grad():
            loss_of(params)

    def bare_jvp():
        with torch.no_grad():
            jvp(loss_of, (params,), (single,))

    single = {k: v[0] for k, v in one.items()}
    variants = {
        "backprop": backprop_step(model, x, y), "plain forward (no grad)": plain_forward,
        "functional_call forward": functional_forward,
        "torch.func.jvp, 1 direction": bare_jvp,
        "general: dual-tensor JVP K=1": lambda: directional_derivatives(loss_of, params, one),
        "general: sample 1 direction (per parameter)": lambda: sampler.sample(params, 1, generator),
        "general: combine K=1": lambda: combine(torch.ones(1), one),
        "general: whole estimate K=1": forward_step(model, x, y, "gaussian", 1, fused=False),
        "fused: plan (model check)": lambda: plan_for(model, F.cross_entropy, x, y),
        "fused: draw 1 flat direction": lambda: flat_gaussian(plan.params, 1, generator),
        "fused: tangents + loss K=1": lambda: plan.derivatives(x, y, views),
        "fused: estimate g = d v": lambda: flat_combine(torch.ones(1), flat, plan.params),
        "fused: whole estimate K=1": forward_step(model, x, y, "gaussian", 1),
    }
    if compile_too:
        variants["fused + torch.compile: whole estimate K=1"] = forward_step(model, x, y, "gaussian", 1,
                                                                              compiled=True)
        variants["backprop, torch.compile"] = compiled_backprop_step(model, x, y)
    return variants


def run_breakdown(models: list[str], batch_sizes: list[int], rounds: int, out: str, compile_too: bool) -> None:
    """Where a K = 1 forward-gradient step's time goes, beside backprop (CPU-time medians, interleaved)."""
    rows = []
    for model_name in models:
        for batch_size in batch_sizes:
            model, x, y = make(model_name, batch_size)
            clocks = interleaved_clocks(breakdown_variants(model, x, y, compile_too), rounds)
            base = clocks["backprop"][1]
            rows += [{"model": model_name, "batch": batch_size, "part": name, "cpu ms": 1000 * cpu,
                      "x backprop": cpu / base} for name, (_, cpu) in clocks.items()]
    print_table(rows, ["model", "batch", "part", "cpu ms", "x backprop"])
    write_json(out, rows, rounds=rounds, command=" ".join(["python", "benchmarks/forward_gradient.py", *sys.argv[1:]]))


def paired_cpu_ratios(base: Callable[[], object], variant: Callable[[], object], rounds: int) -> list[float]:
    """CPU time of ``variant`` / CPU time of ``base``, called back to back ``rounds`` times, order alternating (ABBA)."""
    base(), variant()
    ratios = []
    for index in range(rounds):
        spent = {}
        for name, run in ((("base", base), ("variant", variant)) if index % 2 == 0 else
                          (("variant", variant), ("base", base))):
            began = time.process_time()
            run()
            spent[name] = time.process_time() - began
        ratios.append(spent["variant"] / spent["base"])
    return ratios


def run_paired(models: list[str], batch_sizes: list[int], rounds: int, out: str, compile_too: bool) -> None:
    """Goal 1 measured as paired ratios: each K = 1 step against a backprop step run right beside it.

    A ratio of two calls made microseconds apart is far steadier on a shared machine than a
    ratio of two medians; reported with a bootstrap 95% interval of the median ratio."""
    rows = []
    for model_name in models:
        for batch_size in batch_sizes:
            model, x, y = make(model_name, batch_size)
            backprop = backprop_step(model, x, y)
            variants = {"gaussian K=1 (fused)": forward_step(model, x, y, "gaussian", 1),
                        "rademacher K=1 (fused)": forward_step(model, x, y, "rademacher", 1),
                        "gaussian K=1 (general path)": forward_step(model, x, y, "gaussian", 1, fused=False)}
            if compile_too:
                compiled = compiled_backprop_step(model, x, y)
                variants["gaussian K=1 (fused + torch.compile)"] = forward_step(model, x, y, "gaussian", 1,
                                                                                compiled=True)
                variants["backprop, torch.compile"] = compiled
            for name, run in variants.items():
                median, low, high = median_interval(paired_cpu_ratios(backprop, run, rounds))
                rows.append({"model": model_name, "batch": batch_size, "variant": name, "x backprop": median,
                             "95% low": low, "95% high": high})
            if compile_too:
                median, low, high = median_interval(paired_cpu_ratios(
                    compiled, variants["gaussian K=1 (fused + torch.compile)"], rounds))
                rows.append({"model": model_name, "batch": batch_size,
                             "variant": "gaussian K=1 (fused + torch.compile) / compiled backprop",
                             "x backprop": median, "95% low": low, "95% high": high})
            print(f"{model_name} B={batch_size} done", flush=True)
    print_table(rows, ["model", "batch", "variant", "x backprop", "95% low", "95% high"])
    write_json(out, rows, rounds=rounds, clock="cpu",
               command=" ".join(["python", "benchmarks/forward_gradient.py", *sys.argv[1:]]))


def count_ops(models: list[str], batch_sizes: list[int], out: str) -> None:
    """How many aten ops one K = 1 fused step dispatches, against backprop's forward and backward passes.

    Counted with a ``TorchDispatchMode`` (every op that reaches the dispatcher, after one
    warm-up call). The fused step runs no autograd, so each of its ops is a call made from
    Python; backprop's backward ops are run by autograd's engine in C++.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    class Counter(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func.overloadpacket.__name__))
            return func(*args, **(kwargs or {}))

    def counted(run) -> list[str]:
        with Counter() as counter:
            run()
        return counter.ops

    rows = []
    for model_name in models:
        for batch_size in batch_sizes:
            model, x, y = make(model_name, batch_size)
            step = forward_step(model, x, y, "gaussian", 1)
            step()
            fused = counted(step)
            model.zero_grad(set_to_none=True)
            with Counter() as forward_counter:
                loss = F.cross_entropy(model(x), y)
            backward = counted(loss.backward)
            rows.append({"model": model_name, "batch": batch_size, "fused K=1 step ops": len(fused),
                         "backprop forward ops": len(forward_counter.ops), "backprop backward ops": len(backward),
                         "fused ops": fused})
    print_table(rows, ["model", "batch", "fused K=1 step ops", "backprop forward ops", "backprop backward ops"])
    write_json(out, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--batch-sizes", default="64")
    parser.add_argument("--directions", default="1,8,64")
    parser.add_argument("--samplers", default="gaussian,rademacher,layerwise,orthonormal,activity,orthogonal")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (ratios use wall time above 1)")
    parser.add_argument("--compile", action="store_true",
                        help="also time the torch.compile'd fused K = 1 step and the torch.compile'd backprop")
    parser.add_argument("--chunk-rows", default="",
                        help="comma-separated chunk bounds (directions x examples) for extra Gaussian K_max rows")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-process peak-memory runs")
    parser.add_argument("--memory-batch", type=int, default=1024, help="batch size of the memory runs")
    parser.add_argument("--breakdown", action="store_true",
                        help="only break a K = 1 step into its parts (sampling, JVP, combining) beside backprop")
    parser.add_argument("--paired", action="store_true",
                        help="only goal 1: paired CPU-time ratios of K = 1 steps to backprop, with 95%% intervals")
    parser.add_argument("--count-ops", action="store_true",
                        help="only count the aten ops of a fused K = 1 step and of backprop's two passes")
    parser.add_argument("--out", default="benchmarks/results/forward_gradient.json")
    args = parser.parse_args()
    if args.count_ops:
        count_ops(args.models.split(","), [int(b) for b in args.batch_sizes.split(",")], args.out)
        return

    torch.set_num_threads(args.threads)
    clock = 1 if args.threads == 1 else 0  # index into (wall, cpu): CPU time adds threads up
    if args.paired:
        run_paired(args.models.split(","), [int(b) for b in args.batch_sizes.split(",")], args.rounds,
                   args.out, args.compile)
        return
    if args.breakdown:
        run_breakdown(args.models.split(","), [int(b) for b in args.batch_sizes.split(",")], args.rounds,
                      args.out, args.compile)
        return
    directions = [int(k) for k in args.directions.split(",")]
    samplers = args.samplers.split(",")
    chunk_rows = [int(r) for r in args.chunk_rows.split(",") if r]
    rows, summary, memory = [], [], []
    for model_name in args.models.split(","):
        for batch_size in map(int, args.batch_sizes.split(",")):
            model, x, y = make(model_name, batch_size)
            variants = {"backprop": backprop_step(model, x, y)}
            if args.compile:
                variants["backprop, torch.compile"] = compiled_backprop_step(model, x, y)
                variants["gaussian K=1 fused + torch.compile"] = forward_step(model, x, y, "gaussian", 1,
                                                                              compiled=True)
            variants["gaussian K=1 general path"] = forward_step(model, x, y, "gaussian", 1, fused=False)
            variants[f"gaussian K={directions[-1]} general path"] = forward_step(model, x, y, "gaussian",
                                                                                 directions[-1], fused=False)
            for sampler in samplers:
                for k in directions:
                    variants[f"{sampler} K={k}"] = forward_step(model, x, y, sampler, k)
            # automatic chunking (default) against all K directions in one batch, and other chunk bounds
            variants[f"gaussian K={directions[-1]} unchunked"] = forward_step(
                model, x, y, "gaussian", directions[-1], chunk_size=None)
            for bound in chunk_rows:
                variants[f"gaussian K={directions[-1]} chunks of {bound} rows"] = forward_step(
                    model, x, y, "gaussian", directions[-1], chunk_size=max(1, bound // batch_size))
            clocks = interleaved_clocks(variants, rounds=args.rounds)
            seconds = {name: both[clock] for name, both in clocks.items()}
            base = seconds["backprop"]
            for name, (wall, cpu) in clocks.items():
                rows.append({"model": model_name, "batch": batch_size, "variant": name, "cpu ms": 1000 * cpu,
                             "wall ms": 1000 * wall, "x backprop": seconds[name] / base})
            for sampler in samplers:
                first, last = seconds[f"{sampler} K={directions[0]}"], seconds[f"{sampler} K={directions[-1]}"]
                extra = (last - first) / max(directions[-1] - directions[0], 1) / base
                summary.append({"model": model_name, "batch": batch_size, "sampler": sampler,
                                "K=1 x backprop": first / base if directions[0] == 1 else None,
                                "extra direction x backprop": extra})
            print(f"{model_name} B={batch_size}: backprop {1000 * base:.2f} ms", flush=True)
        if not args.no_memory:
            for variant in ["backprop", *map(str, directions)]:
                name = "backprop" if variant == "backprop" else f"gaussian K={variant}"
                memory.append({"model": model_name, "batch": args.memory_batch, "variant": name,
                               "peak MiB": peak_memory(model_name, args.memory_batch, variant)})
    print()
    print_table(rows, ["model", "batch", "variant", "cpu ms", "wall ms", "x backprop"])
    print()
    print_table(summary, ["model", "batch", "sampler", "K=1 x backprop", "extra direction x backprop"])
    if memory:
        print()
        print_table(memory, ["model", "batch", "variant", "peak MiB"])
    write_json(args.out, rows, summary=summary, memory=memory, rounds=args.rounds, directions=directions,
               clock="cpu" if clock else "wall",
               command=" ".join(["python", "benchmarks/forward_gradient.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
