"""Forward-HG vs reverse-HG (and the peers higher, torchopt) on RFHO's experiment: time and state memory.

    python benchmarks/hypergradient.py [--rounds 3] [--m-rounds 2] [--paired-rounds 25]
                                       [--steps 10,100,1000] [--ms 1,8,32] [--threads 1]
                                       [--blocks goal,paired,m,T] [--no-compile]
                                       [--device cpu|cuda] [--out docs/data/hypergradient.json]

The seed setup: an MLP with two hidden layers of 300 (ReLU), cross-entropy on mini-batches
of 200, T steps of heavy-ball SGD (eta 0.01, mu 0.5) with per-layer L1 and L2 penalties,
hypergradient of the validation error for m hyperparameters:

* m = 8: RFHO's rho_l1_0..2, rho_l2_0..2, eta, mu;  m = 1: eta alone (the others fixed);
* m = 32: the 8 plus 24 per-example weights of the training loss (RFHO's "synthetic"
  hyperparameters: the first 24 examples of every mini-batch).

Two data sets: scikit-learn digits (64-300-300-10, 112,810 weights) and synthetic 784-dim
inputs (784-300-300-10, 328,810 weights: the seed's MNIST network, random data).

Measured, in one process, interleaved (every round runs each variant once in turn; the
median over rounds is reported):

1. the goal (digits, T = 100, m = 8): forward (fused tangent step with the hand-written
   Hessian-vector products of hypergrad/fused.py; the same step with vmapped jvp of grad;
   that step through ``torch.compile``, whose one-off compilation is reported apart,
   unless --no-compile),
   forward (jvp of the whole update), reverse (stored trajectory, the seed's algorithm:
   structured adjoint step, and vjp of the whole update), reverse (trajectory plus each
   step's stored activations, also checkpointed every 10), reverse (autograd's whole
   unrolled graph), ``higher`` and ``torchopt`` (differentiable SGD, reverse mode; the
   tensors their graphs save are measured once, untimed);
2. versus m (1, 8, 32) at T = 100 on both data sets: forward, reverse (trajectory) and
   reverse (trajectory + activations), and the crossover m where forward's time equals
   each reverse's (forward time is linear in m);
3. versus T (10, 100, 1000), digits, m = 8: each (variant, T) once in a fresh process, so
   its peak resident memory is its own; state memory is computed from the tensors kept;
4. paired (not run unless named in --blocks): the goal's ratio itself, forward mode over
   the stored trajectory, the stored activations and ``higher``, each timed back to back
   with forward mode in every round (ABBA order); the median of the per-round ratios with
   a bootstrap 95% interval, and the share of rounds at or under the goal's 3.3x.

The goal block also counts each variant's arithmetic: the multiply-adds of its matrix
products (``multiply_adds``: per Linear layer of in x out weights and per example, the
gradient costs 3 in x out -- 2 for the first layer, whose input needs no error -- a
rebuild without the weight gradient 2 (first: 1), one Hessian-vector product 6 (first: 2)),
and divides by its time: GFLOP/s, next to the single-thread rate of one 1600 x 300 x 300
matmul measured in the same run (``matmul_rate``). The ratio of two variants' counts is the
ratio their times would have if both ran at the same rate.

With ``--device cuda`` the problems live on the GPU and every timer waits for it
(``_timing.synchronized_clock``); only the paired and m blocks run there.

Every result is also checked: each variant's hypergradient must match forward mode's to
relative 1e-3 (float32), or the script stops.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved, median_interval, paired_ratios, print_table, write_json  # noqa: E402

from sipgrad.datasets import SmallDataset, Split, load_digits  # noqa: E402
from sipgrad.engines.hypergrad import (HeavyBall, InnerProblem, classification_problem,  # noqa: E402
                                       forward_hypergradient, reverse_hypergradient, seed_hyperparameters)
from sipgrad.engines.hypergrad.modes import graph_saved_mib  # noqa: E402

SEED_NAMES = [f"rho_l1_{k}" for k in range(3)] + [f"rho_l2_{k}" for k in range(3)] + ["eta", "mu"]
DEVICE = torch.device("cpu")  # --device: where every problem of this run lives (the timers synchronise CUDA)


def synthetic784(seed: int = 0, n: int = 3000) -> SmallDataset:
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(784, 10, generator=generator)
    splits = []
    for size in (n, n // 3, n // 3):
        x = torch.rand(size, 1, 28, 28, generator=generator)
        y = ((x.reshape(size, -1) - 0.5) @ mixing).argmax(1)
        splits.append(Split(x, y))
    return SmallDataset("synthetic784", *splits)


def setup(data: SmallDataset, steps: int, m: int, seed: int = 0):
    """(problem, hyper, wrt, model, extra) for m in {1, 8, 8 + g}."""
    problem = classification_problem(data, steps=steps, batch_size=200, seed=seed, device=DEVICE)
    inner = problem.inner
    hyper = seed_hyperparameters(inner)
    # Slightly positive penalties so that every term of the update is exercised.
    for k in range(3):
        hyper[f"rho_l1_{k}"] = torch.tensor(1e-5)
        hyper[f"rho_l2_{k}"] = torch.tensor(1e-4)
    if m <= 8:
        wrt = ("eta",) if m == 1 else tuple(SEED_NAMES)
        return inner, hyper, wrt, problem
    extra = m - 8

    def weighted(weights, batch, h):
        inputs, labels = batch
        per_example = F.cross_entropy(problem.logits(weights, inputs), labels, reduction="none")
        return (torch.cat([h["gamma"], per_example.new_ones(len(labels) - extra)]) * per_example).mean()

    update = HeavyBall(weighted, inner.update.penalties, loss_hyper=("gamma",))
    weighted_inner = InnerProblem(inner.weights, update, inner.batch, inner.validation_loss, steps)
    hyper["gamma"] = torch.ones(extra, device=DEVICE)
    return weighted_inner, hyper, (*SEED_NAMES, "gamma"), problem


def peer(library: str, problem, inner: InnerProblem, hyper: dict, steps: int, memory: dict | None = None):
    """Reverse-mode hypergradient of the 8 seed hyperparameters with ``higher`` or ``torchopt``.

    With ``memory`` (a dict), also records there the MiB its unrolled graph saves (not timed).
    """
    import copy

    model = copy.deepcopy(problem.model)
    with torch.no_grad():  # the same start weights as ours, whatever happened to problem.model
        for name, p in model.named_parameters():
            p.copy_(inner.weights[name])
    h = {name: hyper[name].clone().requires_grad_() for name in SEED_NAMES}

    def training_loss(net, batch):
        inputs, labels = batch
        loss = F.cross_entropy(net(inputs), labels)
        for k, w in enumerate(penalized_of(net)):
            loss = loss + h[f"rho_l1_{k}"] * w.abs().sum() + h[f"rho_l2_{k}"] * (w * w).sum()
        return loss

    val_x, val_y = problem.data.validation.flat(), problem.data.validation.labels  # already on DEVICE
    if library == "higher":
        import higher

        def penalized_of(net):
            return [w for w in net.fast_params if w.dim() >= 2]

        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
        with higher.innerloop_ctx(model, optimizer, copy_initial_weights=True,
                                  override={"lr": [h["eta"]], "momentum": [h["mu"]]}) as (fmodel, diffopt):
            for t in range(steps):
                diffopt.step(training_loss(fmodel, inner.batch(t)))
            loss = F.cross_entropy(fmodel(val_x), val_y)
            saved = graph_saved_mib(loss) if memory is not None else None
            grads = torch.autograd.grad(loss, [h[n] for n in SEED_NAMES])
    else:
        import torchopt

        def penalized_of(net):
            return [w for w in net.parameters() if w.dim() >= 2]

        optimizer = torchopt.MetaSGD(model, lr=h["eta"], momentum=h["mu"])
        for t in range(steps):
            optimizer.step(training_loss(model, inner.batch(t)))
        loss = F.cross_entropy(model(val_x), val_y)
        saved = graph_saved_mib(loss) if memory is not None else None
        grads = torch.autograd.grad(loss, [h[n] for n in SEED_NAMES])
    if memory is not None:
        memory[library] = saved
    return {n: g.detach() for n, g in zip(SEED_NAMES, grads)}


def check(name: str, got: dict, want: dict, rel: float = 1e-3) -> float:
    worst = 0.0
    for key, value in got.items():
        scale = max(float(want[key].abs().max()), 1e-3)
        worst = max(worst, float((value - want[key]).abs().max()) / scale)
    if worst > rel:
        raise SystemExit(f"{name}: hypergradient differs from forward mode by {worst:.2e} (relative)")
    return worst


# Products per Linear layer and example, in units of in x out multiply-adds: (first layer, any other layer).
GRADIENT, REBUILD, HVP = (2, 3), (1, 2), (2, 6)
# What each variant computes per inner step, as (products, how many times) with m tangent directions. The
# autograd double backward rebuilds the whole gradient; the whole-graph variants and the peers keep every step's
# graph (the activations' arithmetic).
STEP_COUNTS = {
    "forward": lambda m: ((GRADIENT, 1), (HVP, m)),
    "reverse (trajectory)": lambda m: ((GRADIENT, 1), (REBUILD, 1), (HVP, 1)),
    "reverse (trajectory, autograd products)": lambda m: ((GRADIENT, 2), (HVP, 1)),
    "reverse (trajectory + activations)": lambda m: ((GRADIENT, 1), (HVP, 1)),
    # Each segment's steps but its last are run again from its checkpoint, with their gradients (the next state
    # needs them), to keep their activations; the last step's backward step rebuilds its pass without one.
    "reverse (checkpoint 10 + activations)": lambda m: ((GRADIENT, 2 - 1 / 10), (REBUILD, 1 / 10), (HVP, 1)),
}


def multiply_adds(weights: dict, examples: int, steps: int, m: int, variant: str) -> float:
    """Multiply-adds of the matrix products of ``variant`` over ``steps`` inner steps (``STEP_COUNTS``)."""
    layers = [w.shape for w in weights.values() if w.dim() == 2]  # (out, in), in forward order
    per_example = sum(times * sum((first if k == 0 else other) * out * inp for k, (out, inp) in enumerate(layers))
                      for (first, other), times in STEP_COUNTS[variant](m))
    return float(per_example * examples * steps)


def arithmetic_of(name: str) -> str | None:
    """The ``STEP_COUNTS`` entry a goal-block variant does (peers and the whole graph: the activations')."""
    if name.startswith("forward"):
        return "forward"
    if name in STEP_COUNTS:
        return name
    if "activations" in name and "checkpoint" not in name or name in ("reverse (graph)", "higher", "torchopt"):
        return "reverse (trajectory + activations)"
    if name == "reverse (trajectory, vjp of update)":
        return "reverse (trajectory, autograd products)"
    return None


def matmul_rate(repeats: int = 200) -> float:
    """GFLOP/s of a 1600 x 300 by 300 x 300 float32 matmul (forward mode's typical product), median of 5 runs."""
    a, b = torch.randn(1600, 300), torch.randn(300, 300)
    rates = []
    for _ in range(5):
        began = time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b)
        rates.append(2 * 1600 * 300 * 300 * repeats / (time.perf_counter() - began) / 1e9)
    return statistics.median(rates)


def goal_block(rounds: int, compiled: bool = True) -> list[dict]:
    inner, hyper, wrt, problem = setup(load_digits(), 100, 8)
    results: dict[str, dict] = {}
    memory: dict[str, float] = {}

    def ours(name, fn):
        def run():
            result = fn()
            results[name], memory[name] = result.hypergradient, result.state_mib
        return run

    def theirs(name):
        def run():
            results[name] = peer(name, problem, inner, hyper, 100)
        return run

    # The same problem without the recognised network: the fused tangent step's m Hessian-vector products by
    # vmapped jvp of grad (the general path) instead of hypergrad/fused.py's hand-written one.
    # The reverse modes' products by autograd (double backward), for comparison with the hand-written ones.
    jvp_inner = replace(inner, update=replace(inner.update, network=None))
    began = time.perf_counter()
    if compiled:
        forward_hypergradient(inner, hyper, wrt, compiled=True)  # torch.compile happens here, once
    compile_seconds = time.perf_counter() - began
    variants = {
        "forward (fused)": ours("forward (fused)", lambda: forward_hypergradient(inner, hyper, wrt)),
        "forward (fused, compiled)": ours("forward (fused, compiled)",
                                          lambda: forward_hypergradient(inner, hyper, wrt, compiled=True)),
        "forward (fused, jvp HVPs)": ours("forward (fused, jvp HVPs)",
                                          lambda: forward_hypergradient(jvp_inner, hyper, wrt)),
        "forward (jvp of update)": ours("forward (jvp of update)",
                                        lambda: forward_hypergradient(inner, hyper, wrt, fused=False)),
        "reverse (trajectory)": ours("reverse (trajectory)", lambda: reverse_hypergradient(inner, hyper, wrt)),
        "reverse (trajectory, autograd products)": ours("reverse (trajectory, autograd products)",
                                                        lambda: reverse_hypergradient(jvp_inner, hyper, wrt)),
        "reverse (trajectory + activations, autograd products)": ours(
            "reverse (trajectory + activations, autograd products)",
            lambda: reverse_hypergradient(jvp_inner, hyper, wrt, store_activations=True)),
        "reverse (trajectory, vjp of update)": ours("reverse (trajectory, vjp of update)",
                                                    lambda: reverse_hypergradient(inner, hyper, wrt, fused=False)),
        "reverse (trajectory + activations)": ours("reverse (trajectory + activations)",
                                                   lambda: reverse_hypergradient(inner, hyper, wrt,
                                                                                 store_activations=True)),
        "reverse (checkpoint 10 + activations)": ours("reverse (checkpoint 10 + activations)",
                                                      lambda: reverse_hypergradient(inner, hyper, wrt,
                                                                                    checkpoint_every=10,
                                                                                    store_activations=True)),
        "reverse (graph)": ours("reverse (graph)",
                                lambda: reverse_hypergradient(inner, hyper, wrt, checkpoint_every=None)),
        "higher": theirs("higher"),
        "torchopt": theirs("torchopt"),
    }
    if not compiled:
        del variants["forward (fused, compiled)"]
    rate_before = matmul_rate()
    seconds = interleaved(variants, rounds=rounds, warmup=1)
    rate_after = matmul_rate()
    for library in ("higher", "torchopt"):  # their graphs' saved tensors, measured once, untimed
        peer(library, problem, inner, hyper, 100, memory)
    reference = results["forward (fused)"]
    base = seconds["reverse (trajectory)"]
    fastest = min(value for name, value in seconds.items() if name.startswith("reverse"))
    rows = []
    examples = inner.batch(0)[0].shape[0]
    for name, value in seconds.items():
        kind = arithmetic_of(name)
        count = multiply_adds(inner.weights, examples, 100, 8, kind) if kind else None
        rows.append({"block": "goal", "data": "digits", "T": 100, "m": 8, "variant": name, "seconds": value,
                     "x reverse (trajectory)": value / base, "x fastest of our reverse": value / fastest,
                     "x higher": value / seconds["higher"], "state MiB": memory.get(name),
                     "G multiply-adds": count / 1e9 if count else None,
                     "GFLOP/s": 2 * count / value / 1e9 if count else None,
                     "max rel. diff vs forward": check(name, results[name], reference)})
    rows.append({"block": "goal", "data": "digits", "T": 100, "m": 8, "variant": "matmul 1600x300x300 (before, after)",
                 "GFLOP/s": (rate_before + rate_after) / 2, "before": rate_before, "after": rate_after})
    if compiled:
        rows.append({"block": "goal", "data": "digits", "T": 100, "m": 8, "variant": "torch.compile + first run",
                     "seconds": compile_seconds})
    for row in rows:
        row["threads"] = torch.get_num_threads()
    return rows


GOAL_RATIO = 3.3  # the goal: forward-HG <= 3.3x reverse-HG (the seed's ratio)


def paired_block(rounds: int) -> list[dict]:
    """Forward mode's time over each reverse's, as paired ratios with a 95% interval (digits, T = 100, m = 8).

    The goal block's medians of separate variants swing between runs on this machine (most
    with 2 threads, where the reverse modes' small products vary), and so does a ratio of
    two such medians. Here each round times forward mode and one reverse back to back
    (ABBA order, ``paired_ratios``), and the median of those per-round ratios comes with a
    bootstrap interval: the goal holds on this machine when the interval lies under it.
    """
    inner, hyper, wrt, problem = setup(load_digits(), 100, 8)
    results: dict[str, dict] = {}

    def ours(name, fn):  # fn returns a HypergradientResult, or (a peer) the hypergradient itself
        def run():
            result = fn()
            results[name] = result if isinstance(result, dict) else result.hypergradient
        return run

    forward = ours("forward (fused)", lambda: forward_hypergradient(inner, hyper, wrt))
    bases = {
        "reverse (trajectory)": ours("reverse (trajectory)", lambda: reverse_hypergradient(inner, hyper, wrt)),
        "reverse (trajectory + activations)": ours(
            "reverse (trajectory + activations)",
            lambda: reverse_hypergradient(inner, hyper, wrt, store_activations=True)),
        "higher": ours("higher", lambda: peer("higher", problem, inner, hyper, 100)),
    }
    rows = []
    for name, base in bases.items():
        ratios, base_seconds, forward_seconds = paired_ratios(base, forward, rounds)
        median, low, high = median_interval(ratios)
        rows.append({"block": "paired", "data": "digits", "T": 100, "m": 8, "variant": f"forward (fused) / {name}",
                     "rounds": rounds, "median ratio": median, "95% low": low, "95% high": high,
                     f"rounds <= {GOAL_RATIO}": sum(r <= GOAL_RATIO for r in ratios) / rounds,
                     "forward s": statistics.median(forward_seconds), "base s": statistics.median(base_seconds),
                     "ratios": ratios,
                     "max rel. diff vs forward": check(name, results[name], results["forward (fused)"]),
                     "threads": torch.get_num_threads()})
    return rows


def m_block(rounds: int, ms: list[int]) -> list[dict]:
    rows = []
    for data in (load_digits(), synthetic784()):
        timings = {}
        for m in ms:
            inner, hyper, wrt, _ = setup(data, 100, m)
            results, memory = {}, {}

            def runner(name, fn, results=results, memory=memory):
                def run():
                    result = fn()
                    results[name], memory[name] = result.hypergradient, result.state_mib
                return run

            variants = {"forward": runner("forward", partial(forward_hypergradient, inner, hyper, wrt)),
                        "reverse": runner("reverse", partial(reverse_hypergradient, inner, hyper, wrt)),
                        "reverse (activations)": runner("reverse (activations)",
                                                        partial(reverse_hypergradient, inner, hyper, wrt,
                                                                store_activations=True))}
            seconds = interleaved(variants, rounds=rounds, warmup=1)
            worst = max(check(f"{data.name} m={m} {name}", results[name], results["forward"])
                        for name in ("reverse", "reverse (activations)"))
            timings[m] = seconds
            for name, value in seconds.items():
                rows.append({"block": "m", "data": data.name, "T": 100, "m": m, "variant": name, "seconds": value,
                             "x reverse (trajectory)": value / seconds["reverse"], "state MiB": memory[name],
                             "max rel. diff vs forward": worst})
            print(f"{data.name} m={m}: forward {seconds['forward']:.2f}s, reverse {seconds['reverse']:.2f}s, "
                  f"reverse (activations) {seconds['reverse (activations)']:.2f}s", flush=True)
        # forward time is linear in m; reverse is nearly flat: where do they cross?
        xs, ys = list(timings), [timings[m]["forward"] for m in timings]
        slope = (ys[-1] - ys[0]) / (xs[-1] - xs[0])
        intercept = ys[0] - slope * xs[0]
        for name in ("reverse", "reverse (activations)"):
            reverse = statistics.median(timings[m][name] for m in timings)
            rows.append({"block": "crossover", "data": data.name, "T": 100,
                         "variant": f"m where forward = {name}", "m": round((reverse - intercept) / slope, 2),
                         "seconds": reverse})
    return rows


CHILD = r"""
import json, sys, time, torch
sys.path.insert(0, sys.argv[5])
torch.set_num_threads(int(sys.argv[4]))
from hypergradient import setup
from sipgrad.datasets import load_digits
from sipgrad.engines.hypergrad import forward_hypergradient, reverse_hypergradient
variant, steps = sys.argv[1], int(sys.argv[2])
inner, hyper, wrt, _ = setup(load_digits(), steps, int(sys.argv[3]))
def status_kib(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))
# Peak from VmHWM after resetting it, not ru_maxrss: Linux carries the parent's peak into a
# child's ru_maxrss across exec, so a child of this (large) benchmark process would report it.
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")
before = status_kib("VmRSS")
began = time.perf_counter()
if variant == "forward":
    result = forward_hypergradient(inner, hyper, wrt)
elif variant == "reverse (trajectory)":
    result = reverse_hypergradient(inner, hyper, wrt)
elif variant == "reverse (checkpoint 10)":
    result = reverse_hypergradient(inner, hyper, wrt, checkpoint_every=10)
elif variant == "reverse (trajectory + activations)":
    result = reverse_hypergradient(inner, hyper, wrt, store_activations=True)
elif variant == "reverse (checkpoint 10 + activations)":
    result = reverse_hypergradient(inner, hyper, wrt, checkpoint_every=10, store_activations=True)
else:
    result = reverse_hypergradient(inner, hyper, wrt, checkpoint_every=None)
seconds = time.perf_counter() - began
total = status_kib("VmHWM") / 1024
peak = total - before / 1024
print(json.dumps({"seconds": seconds, "state": result.state_mib, "peak": peak, "peak_total": total,
                  "eta": float(result.hypergradient["eta"])}))
"""


def t_block(steps_list: list[int], threads: int) -> list[dict]:
    rows = []
    here = str(Path(__file__).resolve().parent)
    for steps in steps_list:
        variants = ["forward", "reverse (trajectory)", "reverse (checkpoint 10)", "reverse (trajectory + activations)",
                    "reverse (checkpoint 10 + activations)", "reverse (graph)"]
        etas = {}
        for variant in variants:
            done = subprocess.run([sys.executable, "-c", CHILD, variant, str(steps), "8", str(threads), here],
                                  check=True, capture_output=True, text=True)
            out = json.loads(done.stdout.strip().splitlines()[-1])
            etas[variant] = out["eta"]
            rows.append({"block": "T", "data": "digits", "T": steps, "m": 8, "variant": variant,
                         "seconds": out["seconds"], "state MiB": out["state"], "peak RSS growth MiB": out["peak"],
                         "peak RSS MiB": out["peak_total"], "d/d eta": out["eta"]})
            print(f"T={steps} {variant}: {out['seconds']:.2f}s, state {out['state']:.1f} MiB, "
                  f"peak RSS {out['peak_total']:.0f} MiB (growth {out['peak']:.0f})", flush=True)
        spread = max(abs(e - etas["forward"]) / abs(etas["forward"]) for e in etas.values())
        if spread > 1e-3:
            raise SystemExit(f"T={steps}: modes disagree on d/d eta by {spread:.2e}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the goal block")
    parser.add_argument("--m-rounds", type=int, default=2, help="rounds of the m block")
    parser.add_argument("--paired-rounds", type=int, default=25, help="rounds of the paired block")
    parser.add_argument("--steps", default="10,100,1000", help="T values of the memory block")
    parser.add_argument("--ms", default="1,8,32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--blocks", default="goal,m,T")
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out of the goal block")
    parser.add_argument("--device", default="cpu",
                        help="cpu or cuda (default: cpu); cuda runs the paired and m blocks only (the goal "
                             "block's rates and the T block's resident memory are measures of the CPU)")
    parser.add_argument("--out", default="docs/data/hypergradient.json")
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.set_num_threads(args.threads)
    blocks = args.blocks.split(",")
    if DEVICE.type != "cpu" and {"goal", "T"} & set(blocks):
        parser.error(f"--device {args.device} runs the paired and m blocks only")
    peers = {"higher", "torchopt"} if "goal" in blocks else {"higher"} if "paired" in blocks else set()
    if peers:  # the blocks that time the peers: say so before minutes of work, not with a traceback after
        import importlib.util

        missing = sorted(name for name in peers if importlib.util.find_spec(name) is None)
        if missing:
            parser.error(f"the peers {', '.join(missing)} are not installed: pip install -e '.[hypergrad-peers]'")
    rows: list[dict] = []
    began = time.perf_counter()
    if "goal" in blocks:
        rows += goal_block(args.rounds, compiled=not args.no_compile)
        print_table([r for r in rows if r["block"] == "goal"],
                    ["variant", "seconds", "x reverse (trajectory)", "x fastest of our reverse", "x higher",
                     "state MiB", "G multiply-adds", "GFLOP/s", "max rel. diff vs forward"])
    if "paired" in blocks:
        rows += paired_block(args.paired_rounds)
        print_table([r for r in rows if r["block"] == "paired"],
                    ["variant", "rounds", "median ratio", "95% low", "95% high", f"rounds <= {GOAL_RATIO}",
                     "forward s", "base s", "max rel. diff vs forward"])
    if "m" in blocks:
        rows += m_block(args.m_rounds, [int(m) for m in args.ms.split(",")])
    if "T" in blocks:
        rows += t_block([int(t) for t in args.steps.split(",")], args.threads)
    print()
    print_table(rows, ["block", "data", "T", "m", "variant", "seconds", "x reverse (trajectory)", "state MiB",
                       "peak RSS MiB", "peak RSS growth MiB", "max rel. diff vs forward"])
    write_json(args.out, rows, rounds=args.rounds, m_rounds=args.m_rounds, command=" ".join(sys.argv),
               total_seconds=time.perf_counter() - began, device=str(DEVICE),
               device_name=torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else None)


if __name__ == "__main__":
    main()
