"""`sipgrad fwdgrad`: forward-gradient experiments (cosine table, training beside backprop)."""

from __future__ import annotations

import argparse
import json
import sys

from sipgrad_cli.common import (
    checked_number,
    comma_items,
    distinct,
    fail,
    guarded,
    one_line_errors,
    output_file,
    output_folder,
    positive_float,
    positive_int,
    progress_bar,
    seed_value,
    small_model_synopsis,
    sweep_items,
)

COSINE_DIRECTIONS = 1  # the seed's cosine table: one direction per estimate
TRAIN_DIRECTIONS = 32  # the forward-training runs of docs/forward.md


def positive_int_list(text: str) -> list[int]:
    return distinct([positive_int(part) for part in comma_items(text, "128,256")], text)


def trial_count(text: str) -> int:
    """At least 2 trials: a standard error needs two."""
    return checked_number(text, int, lambda v: v >= 2, "at least 2 (a standard error needs two trials)")


def name_list(text: str) -> list[str]:
    return sweep_items(text, "gaussian,activity")


def choice_list(allowed: tuple[str, ...]):
    """A comma-separated list whose every item is one of ``allowed`` (checked while parsing)."""
    def parse(text: str) -> list[str]:
        names = name_list(text)
        for name in names:
            if name not in allowed:
                raise argparse.ArgumentTypeError(f"{name!r} is not one of {', '.join(allowed)}")
        return names
    return parse


def momentum_value(text: str) -> float:
    """A number in [0, 1) (SGD momentum)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < 1:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def bits_list(text: str) -> list[int | None]:
    values: list[int | None] = []
    for part in name_list(text):
        if part == "32":
            values.append(None)
            continue
        value = positive_int(part)
        if not 2 <= value <= 16:
            raise argparse.ArgumentTypeError(f"latent bits must be 2..16 (or 32 for float), got {value}")
        values.append(value)
    return values


def register(subparsers: argparse._SubParsersAction) -> None:
    from sipgrad.engines.forward.models import MODELS
    from sipgrad.engines.forward.samplers import SAMPLERS
    from sipgrad.engines.forward.training import GRADIENTS

    sampler_help = ", ".join(SAMPLERS) + ", orthogonal:NAME"  # the registry's names: a new entry shows here
    models_help = small_model_synopsis(MODELS)

    parser = one_line_errors(subparsers.add_parser(
        "fwdgrad", help="forward-gradient experiments: cosine table, training beside backprop",
        description="Forward gradients (grad . v) v from JVPs, without backprop: how well each direction "
                    "sampler points (cosine) and how well it trains."))
    commands = parser.add_subparsers(title="experiments", dest="experiment", metavar="EXPERIMENT",
                                     help="cosine, train or plot; `sipgrad fwdgrad EXPERIMENT --help` for its options")
    parser.set_defaults(run=lambda args: parser.print_help() or 2)

    def common(sub: argparse.ArgumentParser, directions: int) -> None:
        sub.add_argument("--model", default="mlp", choices=list(MODELS), metavar="MODEL",
                         help=f"model, with its size on digits: {models_help} (default: mlp)")
        sub.add_argument("--data", default="digits", metavar="SPEC",
                         help="digits (offline default), mnist:DIR (IDX files) or cifar10:DIR (binary version)")
        sub.add_argument("--directions", type=positive_int, default=None, metavar="K",
                         help=f"directions per estimate (default {directions})")
        sub.add_argument("--seed", type=seed_value, default=0, help="seed for data split, model and directions (default 0)")
        sub.add_argument("--json", action="store_true", help="print JSON instead of a table")
        sub.add_argument("--out", metavar="DIR", help="write JSON and figures here")

    cosine = one_line_errors(commands.add_parser(
        "cosine", help="mean cosine of forward gradient vs true gradient, per B and sampler"))
    common(cosine, COSINE_DIRECTIONS)
    cosine.add_argument("--batch-sizes", type=positive_int_list, default=[128, 256, 512, 800, 1024], metavar="B,B",
                        help="comma-separated batch sizes (default 128,256,512,800,1024)")
    cosine.add_argument("--samplers", type=name_list, default=["gaussian", "activity"], metavar="NAMES",
                        help=f"comma-separated samplers: {sampler_help} (default gaussian,activity)")
    cosine.add_argument("--trials", type=trial_count, default=20, metavar="R", help="trials per cell (default 20)")
    cosine.set_defaults(run=run_cosine)

    train = one_line_errors(commands.add_parser(
        "train", help="train with forward gradients (and/or backprop); accuracy vs step"))
    common(train, TRAIN_DIRECTIONS)
    train.add_argument("--grad", type=choice_list(GRADIENTS), default=["forward", "backprop"], metavar="forward,backprop",
                       help="gradient sources to run, comma-separated (default forward,backprop)")
    train.add_argument("--sampler", type=name_list, default=None, metavar="NAMES",
                       help=f"comma-separated samplers for forward runs: {sampler_help} (default gaussian)")
    train.add_argument("--optimizer", default="adam", choices=["sgd", "adam"], help="default adam")
    train.add_argument("--lr", type=positive_float, help="learning rate (default: 1e-3 for Adam; SGD 5e-3 "
                                                         "forward, 5e-2 backprop; 10x these for binary models)")
    train.add_argument("--momentum", type=momentum_value, default=None,
                       help="SGD momentum, in [0, 1) (default 0.9; only with --optimizer sgd)")
    train.add_argument("--steps", type=positive_int, default=4000, help="training steps (default 4000)")
    train.add_argument("--batch-size", type=positive_int, default=64, help="default 64")
    train.add_argument("--eval-every", type=positive_int, default=100, metavar="N", help="default 100")
    train.add_argument("--soft", type=choice_list(("off", "on")), default=["off"], metavar="off,on",
                       help="binary models: soft weights tanh(beta w) annealed to sign: off, on or off,on")
    train.add_argument("--latent-bits", type=bits_list, default=[None], metavar="B,B",
                       help="binary models: store latent weights at B bits (2..16, 32 = float), e.g. 5,6,7,8")
    train.set_defaults(run=run_train)

    plot = one_line_errors(commands.add_parser("plot", help="redraw the accuracy plot of a forward_train.json"))
    plot.add_argument("runs", metavar="FILE", help="forward_train.json written by `sipgrad fwdgrad train`")
    plot.add_argument("--out", required=True, metavar="PNG", help="the figure to write")
    plot.set_defaults(run=run_plot)


@guarded
def run_cosine(args: argparse.Namespace) -> int:
    from sipgrad.datasets import load_dataset
    from sipgrad.engines.forward.experiments import cosine_experiment
    from sipgrad.engines.forward.samplers import make_sampler
    from sipgrad.errors import InterruptedAfterWriting

    for name in args.samplers:
        make_sampler(name)  # unknown names fail before the data is read
    out = output_folder(args.out) if args.out is not None else None  # and an unwritable --out too
    directions = args.directions or COSINE_DIRECTIONS
    data = load_dataset(args.data, seed=args.seed)
    with progress_bar(len(args.batch_sizes) * len(args.samplers), "cosine table", unit="cell") as bar:
        try:
            document, table = cosine_experiment(args.model, data, args.batch_sizes, args.samplers, directions,
                                                args.trials, seed=args.seed, out=out, progress=lambda: bar.update(1))
        except InterruptedAfterWriting as stop:
            return fail(f"interrupted while drawing the figure; {', '.join(map(str, stop.written))} was written",
                        130)
        except KeyboardInterrupt:  # the table is written only when whole: say so rather than "results were kept"
            return fail("interrupted before the cosine table was finished; nothing was written", 130)
    if args.json:
        print(json.dumps(document, indent=2))
        return 0
    print(f"{args.model} on {data.name}: n = {table.parameters} parameters, K = {directions}, "
          f"{args.trials} trials; mean cosine +- standard error")
    print(f"isotropic closed form E[cos] = {table.closed_form:.6f}")
    cells = {(row.batch_size, row.sampler): row for row in table.rows}
    width = max(20, *(len(name) + 2 for name in args.samplers))
    print("B".rjust(6) + "".join(name.rjust(width) for name in args.samplers))
    for batch_size in args.batch_sizes:
        print(str(batch_size).rjust(6) + "".join(
            f"{cells[batch_size, name].cosine:.5f} +- {cells[batch_size, name].stderr:.5f}".rjust(width)
            for name in args.samplers))
    return 0


@guarded
def run_train(args: argparse.Namespace) -> int:
    from sipgrad.datasets import load_dataset
    from sipgrad.engines.forward.experiments import sweep_configs, training_sweep

    # Options the chosen runs would ignore are refused (and so never recorded as if used).
    if args.optimizer != "sgd" and args.momentum is not None:
        return fail("--momentum is SGD's; --optimizer adam does not use it")
    if "forward" not in args.grad and (args.sampler is not None or args.directions is not None):
        return fail(f"{'--sampler' if args.sampler is not None else '--directions'} sets the forward-gradient "
                    f"runs; --grad backprop has none")
    args.sampler = ["gaussian"] if args.sampler is None else args.sampler
    args.momentum = 0.9 if args.momentum is None else args.momentum
    out = output_folder(args.out) if args.out is not None else None  # refused before the data is even loaded
    soft_options = {"off": False, "on": True}
    configs = sweep_configs(args.model, args.grad, args.sampler, soft=[soft_options[s] for s in args.soft],
                            latent_bits=args.latent_bits, directions=args.directions or TRAIN_DIRECTIONS,
                            optimizer=args.optimizer, lr=args.lr, momentum=args.momentum, steps=args.steps,
                            batch_size=args.batch_size, eval_every=args.eval_every, seed=args.seed)
    data = load_dataset(args.data, seed=args.seed)
    with progress_bar(len(configs) * args.steps, "training", unit="step") as bar:
        sweep = training_sweep(configs, data, out, progress=lambda _step: bar.update(1),
                               on_run=lambda config: bar.set_postfix_str(config.label))
    document = sweep.document
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print(f"{args.model} on {data.name}, {args.steps} steps of batch {args.batch_size}")
        width = max([44] + [len(run["label"]) + 2 for run in document["runs"]])  # a stopped run's label is longer
        header = f"{'run':<{width}}{'test acc':>9}{'steps to 90%':>14}{'ms/step':>9}{'x backprop':>11}{'peak MiB':>10}"
        print(header)
        for run in document["runs"]:
            ratio = f"{run['time_vs_backprop']:.2f}" if run["time_vs_backprop"] else "-"
            reached = run["steps_to_90"] if run["steps_to_90"] is not None else "-"
            print(f"{run['label']:<{width}}{run['final_accuracy']:>9.3f}{reached!s:>14}"
                  f"{1000 * run['seconds_per_step']:>9.2f}{ratio:>11}{run['peak_memory_mib']:>10.0f}")
        binary = [r for r in document["runs"] if r["memory"]["latent_parameters"]]
        if binary:
            print("memory (counted): run, weights KiB (float32 KiB), optimizer state KiB")
            for run in binary:
                memory = run["memory"]
                print(f"  {run['label']:<42}{memory['weight_bytes'] / 1024:>8.1f} "
                      f"({memory['weight_bytes_float32'] / 1024:.1f}){memory['optimizer_state_bytes'] / 1024:>10.1f}")
    if sweep.interrupted_while_drawing:
        print(f"sipgrad: interrupted while drawing the figure; {out / 'forward_train.json'} holds all "
              f"{sweep.finished} run(s)", file=sys.stderr)
        return 130
    if sweep.interrupted:
        kept = f"; {out / 'forward_train.json'} holds them" if out else ""
        print(f"sipgrad: interrupted; {sweep.finished} of {sweep.planned} run(s) finished, the last one stopped "
              f"early{kept}", file=sys.stderr)
        return 130
    return 0


@guarded
def run_plot(args: argparse.Namespace) -> int:
    from sipgrad.engines.forward.experiments import read_training_runs
    from sipgrad.engines.forward.figures import save_accuracy_curves

    output_file(args.out)
    curves, title = read_training_runs(args.runs)
    save_accuracy_curves(args.out, curves, title)
    print(args.out)
    return 0
