"""Shared CLI plumbing: one-line errors, progress bars, argument groups."""

from __future__ import annotations

import argparse
import functools
import math
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable

from sipgrad.errors import SipgradError

# Names of the image files explain and analyze write: never taken as inputs from an output folder.
OUTPUT_IMAGE_SUFFIXES = (".overlay.png", ".figure.png", ".compare.png", ".components.png", "spectrum.png")


def comma_items(text: str, example: str = "a,b") -> list[str]:
    """The stripped items of a comma-separated option value.

    An empty item (``a,,b``, a trailing comma) is an error rather than silently dropped: a
    typo should not quietly shrink a sweep, and ``--sip none,,`` should not mean ``none``.
    """
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise argparse.ArgumentTypeError(f"{text!r} names nothing; give comma-separated values such as {example}")
    if not all(items):
        raise argparse.ArgumentTypeError(f"{text!r} has an empty item between commas")
    return items


def distinct(values: list, text: str) -> list:
    """``values`` (parsed from the option value ``text``) when no value repeats: a sweep lists each setting once.

    A repeat is refused, not dropped: ``--optimizer sgd,momentum,sgd`` would otherwise run sgd twice and
    count the copy as another seed.
    """
    seen: list = []
    for value in values:
        if value in seen:
            raise argparse.ArgumentTypeError(f"{text!r} names {value!r} twice")
        seen.append(value)
    return values


def sweep_items(text: str, example: str = "a,b") -> list[str]:
    """``comma_items`` for a sweep: each item at most once."""
    return distinct(comma_items(text, example), text)


def layer_names(text: str) -> tuple[str, ...]:
    """Module names for --sip-layers / --layers: an empty value is refused, not read as "the default"."""
    return tuple(sweep_items(text, "layer3.1.conv2,layer4.0.conv1"))


def fail(message: str, code: int = 2) -> int:
    print(f"sipgrad: error: {message}", file=sys.stderr)
    return code


# The library names its parameters in errors; the CLI user typed flags. Only here are they mapped.
PARAMETER_FLAGS = {
    "weights=FILE": "--weights FILE",
    "pretrained=False": "--pretrained none",
    "the stats parameter": "--stats FILE",
    "made by calibrate": "made by `sipgrad calibrate`",
    "run calibrate for it": "run `sipgrad calibrate` for it",
    "layer_ratio": "--layer-ratio",
    "batch_size": "--batch-size",
    "ig_steps": "--ig-steps",
    "ig_baseline": "--ig-baseline",
    "smoothgrad_samples": "--smoothgrad-samples",
    "smoothgrad_noise": "--smoothgrad-noise",
    "internal_batch_size": "--internal-batch-size",
    "gradcam_layer": "--gradcam-layer",
    "shapiro_threshold": "--shapiro-threshold",
    "sketch_size": "--sketch",
    "must be at least k (": "must be at least --k (",
    "latent_bits": "--latent-bits",
    "train_steps": "--train-steps",
    "soft_weights": "--soft on",
}


# One pass over the message, longest names first and whole words only: `internal_batch_size` must not be read
# as `internal_` + `batch_size`, and a flag written in must not be rewritten again by a later entry. A name
# inside a path (a folder `ig_steps/`, a file `batch_size.npz`) is the user's file, not a parameter.
_PARAMETER_PATTERN = re.compile("|".join(
    (r"(?<![\w/\\.-])" if parameter[0].isalnum() or parameter[0] == "_" else "") + re.escape(parameter)
    + (r"(?![\w/\\]|\.\w)" if parameter[-1].isalnum() or parameter[-1] == "_" else "")
    for parameter in sorted(PARAMETER_FLAGS, key=len, reverse=True)))


def as_flags(message: str) -> str:
    """A library error message with its parameter names replaced by the CLI's flags."""
    return _PARAMETER_PATTERN.sub(lambda match: PARAMETER_FLAGS[match.group(0)], message)


def guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn library errors into one line on stderr and a non-zero exit, never a traceback."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            with warnings.catch_warnings():  # restores the default printer afterwards
                warnings.showwarning = _OneLineWarnings()
                return command(args)
        except SipgradError as error:
            return fail(as_flags(str(error)))
        except KeyboardInterrupt:
            # Commands that keep partial results say what they kept; reaching here, nothing is claimed.
            return fail("interrupted", 130)
        except BrokenPipeError:  # stdout closed early (`sipgrad ... | head`): stop quietly, like other tools
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141
        except (OSError, RuntimeError, ValueError) as error:
            if os.environ.get("SIPGRAD_DEBUG"):
                raise
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            return fail(f"{first} (set SIPGRAD_DEBUG=1 for details)")
        except Exception as error:  # a case nobody foresaw (e.g. zipfile.BadZipFile): still one line, not a traceback
            if os.environ.get("SIPGRAD_DEBUG"):
                raise
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            return fail(f"unexpected {type(error).__name__}{': ' + first if first else ''} (set SIPGRAD_DEBUG=1 "
                        f"for the traceback, and please report it)")

    return run


class _OneLineWarnings:
    """Print each library warning as ``sipgrad: warning: ...`` (no source file, no code line), once per command.

    A command that calls the library batch by batch (explain, evaluate) would otherwise repeat a warning
    that holds for the whole run, such as SIP doing nothing at a layer, once per batch.
    """

    def __init__(self) -> None:
        self.printed: set[str] = set()

    def __call__(self, message, category, filename, lineno, file=None, line=None) -> None:
        text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
        if text not in self.printed:
            self.printed.add(text)
            print(f"sipgrad: warning: {text}", file=sys.stderr if file is None else file)


def progress_bar(total: int, description: str, enabled: bool = True, unit: str = "img"):
    """A tqdm bar on stderr, drawn at once (so a slow first batch does not look like a hang).

    Shown only when stderr is a terminal: in logs and pipes a redrawn bar is noise, and the
    one-line errors stay one line.
    """
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit=unit, disable=None if enabled else True, file=sys.stderr,
                dynamic_ncols=True, mininterval=0.2)


def stage(message: str) -> None:
    """One line on stderr for a stage of work that has no bar (writing reports, loading a model)."""
    print(f"sipgrad: {message}", file=sys.stderr, flush=True)


# Numeric option types: argparse calls them while parsing, so a bad value is one usage line and
# exit status 2 before any work starts.

def _number(text: str, kind: type) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole number' if kind is int else 'number'}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def checked_number(text: str, kind: type, accept: Callable[[int | float], bool], rule: str) -> int | float:
    """``text`` as a ``kind`` that ``accept``s, else a parse error stating ``rule``; whole numbers fit in 64 bits."""
    value = _number(text, kind)
    if not accept(value):
        raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
    if kind is int and abs(value) > 2 ** 63 - 1:  # torch and numpy take 64-bit integers at most
        raise argparse.ArgumentTypeError(f"{text!r} is too large")
    return value


def positive_int(text: str) -> int:
    """A whole number >= 1 (counts, batch sizes, steps)."""
    return checked_number(text, int, lambda v: v >= 1, "at least 1")


def nonnegative_int(text: str) -> int:
    """A whole number >= 0 (0 switches something off)."""
    return checked_number(text, int, lambda v: v >= 0, "0 or more")


def seed_value(text: str) -> int:
    """A random seed: a whole number 0 .. 2**32 - 1 (what numpy and torch both take)."""
    return checked_number(text, int, lambda v: 0 <= v < 2**32, "0 to 4294967295")


def positive_float(text: str) -> float:
    """A finite number > 0."""
    return checked_number(text, float, lambda v: v > 0, "greater than 0")


def nonnegative_float(text: str) -> float:
    """A finite number >= 0."""
    return checked_number(text, float, lambda v: v >= 0, "0 or more")


def fraction(text: str) -> float:
    """A number in (0, 1] (shares, ratios, p-value thresholds)."""
    return checked_number(text, float, lambda v: 0 < v <= 1, "in (0, 1]")


def gamma_value(text: str) -> float:
    """A number > 0; ``inf`` allowed (it zeroes pruned channels)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if math.isnan(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0 (inf zeroes pruned channels), got {text}")
    return value


def output_folder(path: str, option: str = "--out") -> Path:
    """``path`` as an output folder, refused before any work when it cannot be one."""
    from sipgrad.errors import SipgradError

    if not str(path).strip():  # Path("") is the current folder: an empty --out is a slip, not a request for "."
        raise SipgradError(f"{option}: empty; name a folder, e.g. {option} out/ (or . for this one)")
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise SipgradError(f"{option} {path}: is an existing file, not a folder; name a folder (it is created "
                           f"if missing)")
    for parent in folder.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise SipgradError(f"{option} {path}: {parent} is a file, so the folder cannot be created")
            if not os.access(parent, os.W_OK | os.X_OK) and not folder.exists():
                raise SipgradError(f"{option} {path}: no permission to create it in {parent}")
            break
    if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
        raise SipgradError(f"{option} {path}: the folder is not writable")
    _probe_writable(folder, path, option)
    return folder


def _probe_writable(folder: Path, path: str, option: str) -> None:
    """Create ``folder`` and a file in it now, then remove what was created.

    ``os.access`` says yes to root everywhere and knows nothing of read-only or special file
    systems (/proc, a read-only mount): without this a whole run's work would be done before
    the first write failed. Folders made here are removed again, so a run refused later (no
    images found) leaves nothing behind.
    """
    from sipgrad.errors import SipgradError

    created = [p for p in (folder, *folder.absolute().parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".sipgrad-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise SipgradError(f"{option} {path}: cannot write there ({reason})") from None
    finally:
        for made in created:  # deepest first
            try:
                made.rmdir()
            except OSError:
                break


def output_file(path: str, option: str = "--out") -> Path:
    """``path`` as a file to write, refused before any work when it cannot be written."""
    from sipgrad.errors import SipgradError

    if not str(path).strip():
        raise SipgradError(f"{option}: empty; name the file to write")
    target = Path(path)
    if target.is_dir():
        raise SipgradError(f"{option} {path}: is a folder; name the file to write")
    for parent in target.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise SipgradError(f"{option} {path}: {parent} is a file, so the file cannot be written there")
            break
    output_folder(str(target.parent), option=f"{option} {path}: its folder")
    if target.exists() and not os.access(target, os.W_OK):
        raise SipgradError(f"{option} {path}: the file exists and is not writable")
    return target


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make ``parser`` report a bad option in one line (no usage block), exit status 2."""

    def error(message: str):
        print(f"{parser.prog}: error: {message} (see {parser.prog} --help)", file=sys.stderr)
        sys.exit(2)

    parser.error = error  # type: ignore[method-assign]
    return parser


def add_command(subparsers: argparse._SubParsersAction, name: str, summary: str,
                description: str) -> argparse.ArgumentParser:
    """A subcommand whose option errors are one line."""
    return one_line_errors(subparsers.add_parser(name, help=summary, description=description,
                                                 formatter_class=argparse.RawDescriptionHelpFormatter))


def add_image_command(subparsers: argparse._SubParsersAction, name: str, summary: str,
                      description: str) -> argparse.ArgumentParser:
    """A subcommand that takes image files or folders and a model."""
    parser = add_command(subparsers, name, summary, description)
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


def checked_device(args: argparse.Namespace):
    """``args.device`` as a torch device this machine can run, or an error that names the flag."""
    from sipgrad.devices import usable_device

    try:
        return usable_device(args.device)
    except SipgradError as error:
        raise SipgradError(f"--device: {error}") from None


def load_classifier(args: argparse.Namespace):
    from sipgrad.models import load_model

    device = checked_device(args)
    return load_model(args.model, weights=args.weights, pretrained=args.pretrained != "none", device=device)


def check_sip_layers(args: argparse.Namespace, classifier) -> None:
    """Refuse an unknown ``--sip-layers`` name now, saying which option held it (the library names only the layer)."""
    from sipgrad.hooks.sip import resolve_layers

    if not getattr(args, "sip_layers", None):
        return
    try:
        resolve_layers(classifier.module, classifier.sip_layers, args.sip_layers, None)
    except SipgradError as error:
        raise SipgradError(f"--sip-layers: {error}") from None


def add_method_arguments(group: argparse._ArgumentGroup, ig_steps: int, smoothgrad_samples: int,
                         why: str = "") -> None:
    """The methods' options (``MethodOptions``), the same in every command that explains.

    ``ig_steps`` and ``smoothgrad_samples`` are the command's defaults (``evaluate`` runs every
    case under every config, so it takes fewer; ``why`` says so in its help).
    """
    from sipgrad.attribution.methods import BASELINES

    group.add_argument("--ig-steps", type=positive_int, default=ig_steps,
                       help=f"Integrated Gradients steps (default: {ig_steps}{why})")
    group.add_argument("--ig-baseline", choices=BASELINES, default="black",
                       help="IG baseline (default: black)")
    group.add_argument("--smoothgrad-samples", type=positive_int, default=smoothgrad_samples,
                       help=f"SmoothGrad samples (default: {smoothgrad_samples}{why})")
    group.add_argument("--smoothgrad-noise", type=nonnegative_float, default=0.15,
                       help="SmoothGrad noise std as a fraction of the input range (default: 0.15)")
    group.add_argument("--internal-batch-size", type=positive_int, default=16,
                       help="most rows per pass inside SmoothGrad/IG (default: 16; raise it on a GPU)")
    group.add_argument("--seed", type=seed_value, default=0, help="seed for SmoothGrad noise and noise baselines")
    group.add_argument("--gradcam-layer", metavar="NAME", help="module for Grad-CAM (default: per model)")


def method_options(args: argparse.Namespace) -> dict:
    """``MethodOptions`` fields from the arguments ``add_method_arguments`` added."""
    return {"ig_steps": args.ig_steps, "ig_baseline": args.ig_baseline, "seed": args.seed,
            "smoothgrad_samples": args.smoothgrad_samples, "smoothgrad_noise": args.smoothgrad_noise,
            "internal_batch_size": args.internal_batch_size, "gradcam_layer": args.gradcam_layer}


ARGUMENT_PLACEHOLDERS = {"fraction": "Q", "quantile": "Q", "rank": "K"}


def sip_synopsis() -> str:
    """The SIP specs, read from the policy registry: ``none, cls, ins (need --stats), topq:Q, ..., or pca:K``."""
    from sipgrad.hooks.policies import POLICIES

    statistical = [name for name, policy in POLICIES.items() if policy.needs_statistics]
    data_free = [f"{name}:{ARGUMENT_PLACEHOLDERS.get(policy.argument, 'X')}" if policy.argument else name
                 for name, policy in POLICIES.items() if not policy.needs_statistics]
    specs = ["none", *statistical[:-1], f"{statistical[-1]} (need --stats)" if statistical else None, *data_free]
    specs = [spec for spec in specs if spec]
    return ", ".join(specs[:-1]) + f", or {specs[-1]}"


def add_sip_arguments(parser: argparse.ArgumentParser, multiple: bool = False) -> None:
    group = parser.add_argument_group("SIP (gradient filtering)")
    if multiple:
        group.add_argument("--sip", default="none", type=lambda text: sweep_items(text, "none,topq:0.1"),
                           help=f"comma-separated SIP configs, each {sip_synopsis()}; e.g. none,topq:0.1,cls")
    else:
        group.add_argument("--sip", default="none", metavar="POLICY", help=f"{sip_synopsis()} (default: none)")
    group.add_argument("--stats", metavar="FILE", help="calibration statistics from `sipgrad calibrate`")
    group.add_argument("--alpha", type=fraction, help="p-value threshold for cls/ins, in (0, 1] (default 0.05)")
    group.add_argument("--quantile", type=fraction,
                       help="cls/ins: keep the max(1, floor(Q*C)) lowest p-values instead of alpha, Q in (0, 1]")
    group.add_argument("--no-shapiro", action="store_true", help="cls/ins: drop the Shapiro-Wilk normality gate")
    group.add_argument("--gamma", type=gamma_value,
                       help="finite gamma > 0 damps pruned channels instead of zeroing them (default: inf)")
    group.add_argument("--no-variance-conservation", action="store_true",
                       help="do not rescale the kept channels")
    layers = group.add_mutually_exclusive_group()
    layers.add_argument("--sip-layers", metavar="NAMES", type=layer_names,
                        help="comma-separated conv module names to filter")
    layers.add_argument("--layer-ratio", type=fraction, metavar="R",
                        help="filter the last int(R*N) of the N convs (at least 1), R in (0, 1]")


def check_sip_options(args: argparse.Namespace, specs: Sequence[str], layers_analysed: bool = False) -> None:
    """Refuse SIP options that no policy in ``specs`` (the --sip values) would read: silently ignored, they
    would leave a user believing SIP ran as asked (``--gamma 2`` without ``--sip``, ``--alpha`` with topq).

    ``layers_analysed``: the command reads --sip-layers / --layer-ratio as its layers when it has no layer
    option of its own (analyze without --layers).
    """
    from sipgrad.errors import SipgradError
    from sipgrad.hooks.policies import POLICIES, ChannelPolicy

    names = [str(spec).strip().lower().partition(":")[0] for spec in specs]
    policies = [name for name in names if name != "none"]
    statistical = [name for name in policies if name in POLICIES and POLICIES[name].needs_statistics]
    channel = [name for name in policies if name in POLICIES and issubclass(POLICIES[name], ChannelPolicy)]
    if args.gamma is not None and policies and not channel:  # pca filters a rank, not channels: nothing to damp
        raise SipgradError(f"--gamma damps the channels a channel policy prunes; --sip names none "
                           f"({', '.join(policies)})")
    for flag, given in (("--stats", args.stats is not None), ("--alpha", args.alpha is not None),
                        ("--quantile", args.quantile is not None), ("--no-shapiro", args.no_shapiro)):
        if given and not statistical:
            raise SipgradError(f"{flag} applies to the cls and ins policies only, and --sip names neither")
    needs_policy = [("--gamma", args.gamma is not None),
                    ("--no-variance-conservation", args.no_variance_conservation)]
    if not layers_analysed or getattr(args, "layers", None) is not None:
        needs_policy += [("--sip-layers", args.sip_layers is not None), ("--layer-ratio", args.layer_ratio is not None)]
    for flag, given in needs_policy:
        if given and not policies:
            raise SipgradError(f"{flag} sets how SIP filters, but no SIP policy was given; add one, e.g. "
                               f"--sip topq:0.25")


def sip_overrides(args: argparse.Namespace) -> dict:
    return {
        "stats": args.stats, "alpha": args.alpha, "quantile": args.quantile, "gamma": args.gamma,
        "layers": args.sip_layers, "layer_ratio": args.layer_ratio,
        "variance_conservation": False if args.no_variance_conservation else None,
        "shapiro_gate": False if args.no_shapiro else None,
    }


def small_model_synopsis(registry: Mapping[str, Callable[..., Any]]) -> str:
    """``mlp (8,970 weights), cnn (...)``: each registered small model with its size on digits (8 x 8, 10 classes).

    `fwdgrad` and `gradients` each have a registry, and both have an ``mlp`` and a ``cnn``
    that are not the same networks; the counts, read from the registries, tell them apart.
    """
    counts = {name: sum(p.numel() for p in build((1, 8, 8), 10).parameters()) for name, build in registry.items()}
    return ", ".join(f"{name} ({count:,} weights)" for name, count in counts.items())
