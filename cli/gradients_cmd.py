"""`sipgrad gradients`: the structure of gradients across examples (spectrum, PCA-projected training)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sipgrad_cli.common import (
    add_command,
    comma_items,
    distinct,
    fail,
    guarded,
    nonnegative_int,
    one_line_errors,
    output_folder,
    positive_float,
    positive_int,
    progress_bar,
    seed_value,
    small_model_synopsis,
)

SPECTRUM_DESCRIPTION = """Spectrum of the per-example gradients of a small model.

For nested random batches of B training examples, the B x P matrix of per-example
gradients of each layer (and of the whole model, "all") is decomposed: its singular
values, the share of energy per direction, its effective rank, and cos(g, P_k g), the
cosine between the batch-mean gradient g and its projection onto the top-k directions.

Writes OUT/spectrum.json and OUT/spectrum.png."""

TRAIN_DESCRIPTION = """Train with SGD, momentum, or pca-sgd (the batch gradient projected onto a
top-k subspace of the per-example gradients, per layer: a streaming one, or with --subspace
batch this batch's own), with a share of the training labels made wrong.

Comma-separated --optimizer, --label-noise and --seed values run every combination;
runs with the same seed share initial weights, corrupted labels and batch order.
Reports test accuracy vs step and, for momentum, how close the momentum buffer is to the
top-k projection. Writes OUT/train.json (after every finished run), OUT/accuracy.png and,
when a momentum run is among them, OUT/momentum.png."""


def _unit_interval(low_open: bool, high_open: bool):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        low_ok = value > 0 if low_open else value >= 0
        high_ok = value < 1 if high_open else value <= 1
        if not (low_ok and high_ok):
            raise argparse.ArgumentTypeError(
                f"{text!r} must be in {'(' if low_open else '['}0, 1{')' if high_open else ']'}")
        return value
    return parse


def _list_of(parse):
    def parse_list(text: str) -> list:
        return distinct([parse(item) for item in comma_items(text)], text)
    return parse_list


def _choices(allowed):
    def parse(text: str) -> str:
        if text not in allowed:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(allowed)}")
        return text
    return parse


def _add_common(parser: argparse.ArgumentParser) -> None:
    from sipgrad.analysis.models import SMALL_MODELS

    parser.add_argument("--model", default="mlp", choices=list(SMALL_MODELS), metavar="MODEL",
                        help=f"small model, with its size on digits: {small_model_synopsis(SMALL_MODELS)} "
                             f"(default: mlp)")
    parser.add_argument("--data", default="digits", metavar="SPEC",
                        help="digits (offline, default), mnist:DIR or cifar10:DIR")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--out", default="sipgrad-gradients", metavar="DIR",
                        help="output folder (default: sipgrad-gradients)")


def register(subparsers: argparse._SubParsersAction) -> None:
    from sipgrad.analysis.projected_training import OPTIMIZERS, SUBSPACES

    parser = one_line_errors(subparsers.add_parser("gradients", help="gradient structure across examples: spectrum, pca-sgd",
                                   description="Per-example gradients: their spectrum, and training on their "
                                               "top principal directions."))
    commands = parser.add_subparsers(title="commands", dest="gradients_command", metavar="COMMAND",
                                     help="spectrum (per-example gradient spectra) or train (pca-sgd experiment)")
    parser.set_defaults(run=lambda args: (parser.print_help(), 2)[1])

    spectrum = add_command(commands, "spectrum", "spectrum of per-example gradients vs batch size and k",
                           SPECTRUM_DESCRIPTION)
    _add_common(spectrum)
    spectrum.add_argument("--batch-sizes", type=_list_of(positive_int), default=[32, 64, 128, 256, 512, 1024],
                          metavar="B,B,..", help="batch sizes (default: 32,64,128,256,512,1024)")
    spectrum.add_argument("--k", type=_list_of(positive_int), default=[1, 2, 4, 8, 16, 32], metavar="K,K,..",
                          help="top-k sizes for the projection cosines (default: 1,2,4,8,16,32)")
    spectrum.add_argument("--train-steps", type=nonnegative_int, default=0, metavar="N",
                          help="train N SGD steps first (default: 0, the spectrum at initialisation)")
    spectrum.add_argument("--lr", type=positive_float, default=None,
                          help="learning rate of --train-steps (default 0.1)")
    spectrum.add_argument("--seed", type=seed_value, default=0, help="weights, data split, batch (0)")
    spectrum.add_argument("--centre", action="store_true", help="PCA of centred gradients (default: uncentred)")
    spectrum.add_argument("--chunk-size", type=positive_int, metavar="N",
                          help="examples vectorised at once (default: all; lower it to bound memory)")
    spectrum.set_defaults(run=run_spectrum)

    train = add_command(commands, "train", "SGD vs momentum vs pca-sgd under label noise", TRAIN_DESCRIPTION)
    _add_common(train)
    train.add_argument("--optimizer", type=_list_of(_choices(list(OPTIMIZERS))), default=list(OPTIMIZERS),
                       metavar="NAMES", help=f"comma-separated, from {', '.join(OPTIMIZERS)} (default: all)")
    train.add_argument("--label-noise", type=_list_of(_unit_interval(False, False)), default=[0.0, 0.2, 0.5],
                       metavar="P,P,..", help="shares of training labels made wrong (default: 0,0.2,0.5)")
    train.add_argument("--seed", type=_list_of(seed_value), default=[0], metavar="S,S,..",
                       help="seeds (default: 0)")
    train.add_argument("--k", type=positive_int, default=16, help="top directions per layer (default: 16)")
    train.add_argument("--subspace", choices=list(SUBSPACES), default="stream",
                       help="stream: Frequent Directions over all batches (default); batch: this batch only")
    train.add_argument("--sketch", type=positive_int, metavar="L", help="Frequent Directions rows (default: 2k)")
    train.add_argument("--decay", type=_unit_interval(True, False), default=None,
                       help="per-step forgetting of the sketch, in (0, 1] (default: 0.9)")
    train.add_argument("--steps", type=positive_int, default=600, help="SGD steps per run (default: 600)")
    train.add_argument("--batch-size", type=positive_int, default=64, help="examples per step (default: 64)")
    train.add_argument("--lr", type=positive_float, default=0.1, help="learning rate, all optimizers (0.1)")
    train.add_argument("--momentum", type=_unit_interval(False, True), default=None,
                       help="momentum mu of the momentum optimizer (default 0.9)")
    train.add_argument("--eval-every", type=positive_int, default=25, help="steps between evaluations (25)")
    train.set_defaults(run=run_train)


@guarded
def run_spectrum(args: argparse.Namespace) -> int:
    from sipgrad.analysis.experiments import SpectrumSettings, spectrum_experiment
    from sipgrad.errors import InterruptedAfterWriting

    if args.lr is not None and not args.train_steps:
        return fail("--lr is the learning rate of --train-steps; give --train-steps N too")
    out = output_folder(args.out)
    settings = SpectrumSettings(model=args.model, data=args.data, batch_sizes=tuple(args.batch_sizes), ks=tuple(args.k),
                                train_steps=args.train_steps, lr=0.1 if args.lr is None else args.lr, seed=args.seed,
                                centre=args.centre,
                                chunk_size=args.chunk_size)
    # One bar: the training steps first (when asked), then the per-example gradients and one spectrum per batch size.
    try:
        label = "training, then spectra" if args.train_steps else "spectra"
        with progress_bar(args.train_steps + len(set(args.batch_sizes)) + 1, label, unit="step") as bar:
            document = spectrum_experiment(settings, out, training_progress=bar.update, spectra_progress=bar.update)
    except InterruptedAfterWriting as stop:
        return fail(f"interrupted while drawing the figure; {', '.join(map(str, stop.written))} was written", 130)
    except KeyboardInterrupt:  # the files are written only at the end: say so rather than "results were kept"
        return fail("interrupted before the spectra were finished; nothing was written", 130)
    rows = document["rows"]
    if args.json:
        json.dump(document, sys.stdout, indent=2)
        print()
        return 0
    print(f"per-example gradient spectrum: {args.model} on {document['data']}, {args.train_steps} training steps")
    print("cos(g, P_k g): the batch-mean gradient's cosine with its projection on the top-k directions")
    ks = list(rows[0]["cosine"])
    width = max(len("layer"), *(len(r["layer"]) for r in rows))
    print(f"{'layer'.ljust(width)}  {'P':>6}  {'B':>5}  {'eff.rank':>8}  " + "  ".join(f"k={k:<4}" for k in ks))
    for row in rows:
        print(f"{row['layer'].ljust(width)}  {row['parameters']:6d}  {row['batch size']:5d}  "
              f"{row['effective rank']:8.1f}  " + "  ".join(f"{row['cosine'][k]:.3f} " for k in ks))
    print(f"wrote {out / 'spectrum.json'} and {out / 'spectrum.png'}")
    return 0


@guarded
def run_train(args: argparse.Namespace) -> int:
    from sipgrad.analysis.experiments import projected_training_sweep, sweep_configs

    # Options the chosen runs would ignore are refused (and so never recorded as if used).
    if args.subspace == "batch" and (args.sketch is not None or args.decay is not None):
        return fail(f"{'--sketch' if args.sketch is not None else '--decay'} sets the streaming sketch; "
                    f"--subspace batch keeps none")
    if "momentum" not in args.optimizer and args.momentum is not None:
        return fail("--momentum sets the momentum optimizer, which --optimizer leaves out")
    configs = sweep_configs(args.optimizer, args.label_noise, args.seed, lr=args.lr,
                            momentum=0.9 if args.momentum is None else args.momentum, k=args.k,
                            sketch_size=args.sketch, decay=0.9 if args.decay is None else args.decay, subspace=args.subspace, steps=args.steps,
                            batch_size=args.batch_size, eval_every=args.eval_every)
    out = output_folder(args.out)
    with progress_bar(len(configs) * args.steps, "training", unit="step") as bar:
        try:
            outcome = projected_training_sweep(configs, args.model, args.data, out, progress=bar.update)
        except KeyboardInterrupt:
            return fail("interrupted before the first run finished", 130)
    if args.json:
        json.dump(outcome.document, sys.stdout, indent=2)
        print()
    else:
        _print_summary(outcome.document["summary"], outcome.written)
    if outcome.interrupted:
        print(f"sipgrad: interrupted; wrote the {outcome.finished} run(s) finished of {outcome.planned}",
              file=sys.stderr)
        return 130
    return 0


def _print_summary(rows: list[dict], written: list[Path]) -> None:
    print("test accuracy (mean over seeds; final, best), memorised noise, and the top-k probe (means over training)")
    columns = ["label noise", "optimizer", "seeds", "final test accuracy", "best test accuracy", "noise fit",
               "cos(g, Pg)", "cos(v, Pg)", "cos(v, g)", "|Pv|/|v|"]
    print("  ".join(columns))
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            cells.append(("-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value))
                         .rjust(len(column)))
        print("  ".join(cells))
    print("wrote " + ", ".join(str(path) for path in written))
