"""`sipgrad hypergrad`: RFHO's hyperparameter experiment (forward-HG and reverse-HG) and its report."""

from __future__ import annotations

import argparse
import json
import sys

from sipgrad_cli.common import (
    add_command,
    checked_device,
    checked_number,
    comma_items,
    fail,
    guarded,
    nonnegative_int,
    positive_float,
    positive_int,
    progress_bar,
    seed_value,
)

DESCRIPTION = """Optimise the hyperparameters of an MLP by their hypergradient, as Franceschi et al.
(2017) did in RFHO's all_methods_on_mnist.py: per-layer L1 and L2 coefficients
(rho_l1_0..2, rho_l2_0..2 for the default three weight matrices), the learning rate eta and
the momentum mu of T steps of heavy-ball SGD: 8 with the default two hidden layers, 2 more
per extra layer; projected Adam on the hyperparameters.

Each outer step trains T steps from the same start, computes the hypergradient of the
validation error in forward mode (tangents for all of them at once) and/or reverse mode (stored
trajectory), and prints RFHO's report: accuracies, validation error, the method's state
memory (MiB), counts, each hyperparameter as name: [value after the Adam step,
hypergradient], elapsed seconds, peak process memory, and the device.

Data: digits (offline, 64-300-300-10) or mnist:DIR, the four MNIST IDX files in DIR
(784-300-300-10, 328,810 weights: the seed's network)."""


def _in_bounds(name: str):
    """A number inside the outer loop's valid range for ``name`` (``outer.BOUNDS``), checked while parsing."""
    def parse(text: str) -> float:
        from sipgrad.engines.hypergrad.outer import bounds_for

        low, high = bounds_for(name)
        return checked_number(text, float, lambda v: low <= v <= high, f"in [{low:g}, {high:g}]")

    return parse


def _hidden(text: str) -> tuple[int, ...]:
    return tuple(positive_int(item) for item in comma_items(text, "300,300"))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "hypergrad", "hyperparameter optimisation by forward/reverse hypergradients",
                         DESCRIPTION)
    parser.add_argument("--data", default="digits", help="digits (default, offline) or mnist:DIR")
    parser.add_argument("--mode", choices=["forward", "reverse", "both"], default="both",
                        help="which hypergradient to compute (default: both, one after the other at each outer step)")
    parser.add_argument("--steps", type=positive_int, default=100, metavar="T",
                        help="inner SGD steps per outer step (default 100)")
    parser.add_argument("--hyper-steps", type=positive_int, default=3, metavar="N",
                        help="outer (Adam) steps (default 3)")
    parser.add_argument("--batch-size", type=positive_int, default=200, metavar="B", help="mini-batch (default 200)")
    parser.add_argument("--seed", type=seed_value, default=0, metavar="S",
                        help="start weights, data split and mini-batch order (default 0)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                        help="precision of weights, data and hypergradients (default float32, the seed's)")
    parser.add_argument("--eta", type=_in_bounds("eta"), default=0.01,
                        help="start learning rate, at least 1e-08, the outer projection's bound (default 0.01)")
    parser.add_argument("--mu", type=_in_bounds("mu"), default=0.5,
                        help="start momentum, at least 0 and at most 0.999999, the outer projection's bound "
                             "(default 0.5)")
    parser.add_argument("--outer-lr", type=positive_float, default=1e-3,
                        help="Adam's step on the hyperparameters (default 1e-3, RFHO's)")
    parser.add_argument("--hidden", type=_hidden, default=(300, 300), metavar="H1,H2,...",
                        help="hidden layer widths, one per layer (default 300,300, the seed's)")
    parser.add_argument("--update", choices=["rfho", "torch"], default="rfho",
                        help="L2 convention: rfho rho*||W||^2 in the loss, torch weight decay (default rfho)")
    parser.add_argument("--checkpoint-every", type=nonnegative_int, default=None, metavar="K",
                        help="reverse mode: store every K-th state and recompute the rest (default 1: store all; "
                             "0: keep autograd's whole unrolled graph instead, as higher does: most memory)")
    parser.add_argument("--store-activations", action="store_true",
                        help="reverse mode: also keep each step's activations, so the backward sweep does not "
                             "recompute them: the fastest reverse mode, more memory than the trajectory alone (with "
                             "--checkpoint-every K above 1, those of the segment being swept back, which is "
                             "recomputed anyway)")
    parser.add_argument("--compile", action="store_true",
                        help="forward mode: torch.compile the Hessian-vector products (minutes to compile)")
    parser.add_argument("--device", default="cpu",
                        help="cpu or cuda: where the network, the data and both modes run (default: cpu)")
    parser.add_argument("--json", action="store_true", help="print one JSON document (a list of records)")
    parser.set_defaults(run=run)


@guarded
def run(args: argparse.Namespace) -> int:
    import torch

    from sipgrad.datasets import load_dataset
    from sipgrad.engines.hypergrad import (
        AdamConfig,
        classification_problem,
        run_experiment,
        seed_hyperparameters,
    )

    modes = ("forward", "reverse") if args.mode == "both" else (args.mode,)
    # A mode's options without that mode would be ignored: refuse them, as the other commands do.
    if "reverse" not in modes and (args.store_activations or args.checkpoint_every is not None):
        option = "--store-activations" if args.store_activations else "--checkpoint-every"
        return fail(f"{option} sets reverse mode; --mode forward does not use it")
    if "forward" not in modes and args.compile:
        return fail("--compile sets forward mode; --mode reverse does not use it")
    args.checkpoint_every = 1 if args.checkpoint_every is None else args.checkpoint_every
    if args.store_activations and args.checkpoint_every == 0 and "reverse" in modes:
        return fail("--store-activations needs a stored trajectory (--checkpoint-every 1 or more), "
                    "not --checkpoint-every 0")
    device = checked_device(args)
    data = load_dataset(args.data, seed=args.seed)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    problem = classification_problem(data, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                                     hidden=args.hidden, update=args.update, dtype=dtype, device=device)
    hyper = seed_hyperparameters(problem.inner, eta=args.eta, mu=args.mu)
    options = {"reverse": {"checkpoint_every": args.checkpoint_every or None,
                           "store_activations": args.store_activations},
               "forward": {"compiled": args.compile}}
    records = []
    bar = progress_bar(args.hyper_steps * len(modes), "hypergrad", unit="run")
    try:
        for report in run_experiment(problem, hyper, args.hyper_steps, modes, AdamConfig(lr=args.outer_lr),
                                     options):
            records.append(report.to_json())
            bar.update(1)
            if not args.json:
                bar.clear()
                print(report.format() + "\n", flush=True)
    except KeyboardInterrupt:  # the finished runs are kept: printed, and as one JSON document with --json
        bar.close()
        if args.json:
            print(json.dumps(records, indent=1))
        total = args.hyper_steps * len(modes)
        return fail(f"interrupted; {len(records)} of the {total} runs (outer steps x modes) had finished"
                    + (" and were printed" if records else ", so there is nothing to keep"), 130)
    except BaseException:  # an error: no JSON document (an empty one would look like a result)
        bar.close()
        raise
    bar.close()
    if args.json:
        print(json.dumps(records, indent=1))
    return 0 if records else 1


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - convenience
    from sipgrad_cli.main import main as sipgrad_main

    return sipgrad_main(["hypergrad", *(argv if argv is not None else sys.argv[1:])])
