"""Shared CLI plumbing: one-line errors, progress bars, argument groups."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from typing import Callable

from sipgrad.errors import SipgradError


def fail(message: str, code: int = 2) -> int:
    print(f"sipgrad: error: {message}", file=sys.stderr)
    return code


def guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn library errors into one line on stderr and a non-zero exit, never a traceback."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except SipgradError as error:
            return fail(str(error))
        except KeyboardInterrupt:
            return fail("interrupted; finished results were kept", 130)
        except BrokenPipeError:  # stdout closed early (`sipgrad ... | head`): stop quietly, like other tools
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141
        except (OSError, RuntimeError, ValueError) as error:
            if os.environ.get("SIPGRAD_DEBUG"):
                raise
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            return fail(f"{first} (set SIPGRAD_DEBUG=1 for details)")

    return run


def progress_bar(total: int, description: str, enabled: bool = True):
    """A tqdm bar on stderr, shown only for more than a few items."""
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="img", disable=not enabled or total <= 3,
                file=sys.stderr, dynamic_ncols=True)


def add_image_command(subparsers: argparse._SubParsersAction, name: str, summary: str,
                      description: str) -> argparse.ArgumentParser:
    """A subcommand that takes image files or folders and a model."""
    parser = subparsers.add_parser(name, help=summary, description=description,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    add_model_arguments(parser)
    return parser


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    from sipgrad.models import DEFAULT_MODEL, MODELS

    group = parser.add_argument_group("model")
    group.add_argument("--model", default=DEFAULT_MODEL, choices=list(MODELS),
                       help=f"model to explain (default: {DEFAULT_MODEL}, works offline)")
    group.add_argument("--weights", metavar="FILE", help="load a local state dict (weights_only) instead")
    group.add_argument("--pretrained", choices=["imagenet", "none"], default="imagenet",
                       help="'none' gives random initialisation (default: imagenet)")
    group.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")


def load_classifier(args: argparse.Namespace):
    import torch

    from sipgrad.models import load_model

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SipgradError("--device cuda was asked for but no CUDA device is available")
    return load_model(args.model, weights=args.weights, pretrained=args.pretrained != "none", device=args.device)


def add_sip_arguments(parser: argparse.ArgumentParser, multiple: bool = False) -> None:
    group = parser.add_argument_group("SIP (gradient filtering)")
    if multiple:
        group.add_argument("--sip", default="none", help="comma-separated SIP configs, e.g. none,topq:0.1,cls")
    else:
        group.add_argument("--sip", default="none", metavar="POLICY",
                           help="none, cls, ins (need --stats), or data-free topq:Q, absq:Q, act:Q (default: none)")
    group.add_argument("--stats", metavar="FILE", help="calibration statistics from `sipgrad calibrate`")
    group.add_argument("--alpha", type=float, help="p-value threshold for cls/ins (default 0.05)")
    group.add_argument("--quantile", type=float, help="cls/ins: keep the int(Q*C) lowest p-values instead of alpha")
    group.add_argument("--no-shapiro", action="store_true", help="cls/ins: drop the Shapiro-Wilk normality gate")
    group.add_argument("--gamma", type=float, help="finite gamma damps pruned channels instead of zeroing them")
    group.add_argument("--no-variance-conservation", action="store_true",
                       help="do not rescale the kept channels")
    layers = group.add_mutually_exclusive_group()
    layers.add_argument("--sip-layers", metavar="NAMES", help="comma-separated conv module names to filter")
    layers.add_argument("--layer-ratio", type=float, metavar="R", help="filter the last int(R*N) of the N convs")


def sip_overrides(args: argparse.Namespace) -> dict:
    return {
        "stats": args.stats, "alpha": args.alpha, "quantile": args.quantile, "gamma": args.gamma,
        "layers": args.sip_layers, "layer_ratio": args.layer_ratio,
        "variance_conservation": False if args.no_variance_conservation else None,
        "shapiro_gate": False if args.no_shapiro else None,
    }
