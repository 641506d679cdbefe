"""`sipgrad calibrate`: per-channel statistics that the cls and ins SIP policies need."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sipgrad_cli.common import (
    add_command,
    add_model_arguments,
    fail,
    fraction,
    guarded,
    layer_names,
    load_classifier,
    output_file,
    positive_int,
    progress_bar,
    seed_value,
)

DESCRIPTION = """Compute SIP calibration statistics (forward passes only).

--data is an ImageFolder-style folder (one sub-folder per class, named by ImageNet wnid,
class index or class name) or a text file of 'PATH LABEL' lines (LABEL: wnid, index or
class name, which may hold spaces, e.g. 'a.jpg Egyptian cat'; or PATH, a tab, LABEL;
relative paths are read from the list file's folder). The result is an .npz
(no pickle) with per-channel GAP mean/std, Shapiro-Wilk p-values and one-sided Welch
class-vs-rest p-values, tied to the model by a fingerprint of the hooked layers.
Interrupted runs resume from OUT.partial.npz when started again with the same arguments.
Unreadable images are reported one line each and skipped; the statistics of the others
are still written, and the exit status is then 1."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "calibrate", "statistics for the cls/ins SIP policies", DESCRIPTION)
    add_model_arguments(parser)
    parser.add_argument("--data", required=True, metavar="DIR|LIST", help="labelled images (see above)")
    parser.add_argument("--out", required=True, metavar="FILE", help="statistics file to write (.npz)")
    layers = parser.add_mutually_exclusive_group()
    layers.add_argument("--sip-layers", metavar="NAMES", type=layer_names,
                        help="comma-separated conv layers (default: per model)")
    layers.add_argument("--layer-ratio", type=fraction, metavar="R",
                        help="the last int(R*N) of the N convs (at least 1), R in (0, 1]")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="images per forward pass (default: 32)")
    parser.add_argument("--no-crop", action="store_true", help="whole images instead of resize + centre crop")
    parser.add_argument("--seed", type=seed_value, default=0, help="seed of the Shapiro-Wilk reservoir sample")
    parser.set_defaults(run=run)


@guarded
def run(args: argparse.Namespace) -> int:
    from sipgrad.calibration import calibrate, labelled_images
    from sipgrad.calibration.calibrate import CalibrationInterrupted
    from sipgrad.errors import SipgradError
    from sipgrad.hooks.sip import resolve_layers

    output_file(args.out)  # refuse an unwritable --out now, not after the whole pass
    if Path(args.out).suffix.lower() != ".npz":  # explain/evaluate --stats read it back as an .npz archive
        return fail(f"--out {args.out}: the statistics are an .npz archive; end the name with .npz")
    classifier = load_classifier(args)
    items = labelled_images(args.data, classifier.classes)
    names = args.sip_layers
    try:
        layers = resolve_layers(classifier.module, classifier.sip_layers, names, args.layer_ratio)
    except SipgradError as error:  # an unknown layer name: say which option held it
        raise (SipgradError(f"--sip-layers: {error}") if names else error) from None
    skipped = []
    with progress_bar(len(items), "calibrating") as bar:
        try:
            statistics = calibrate(classifier, items, args.out, layers=layers, batch_size=args.batch_size,
                                   crop=not args.no_crop, seed=args.seed, progress=bar.update,
                                   on_skip=lambda message: (skipped.append(message),
                                                            print(f"sipgrad: error: {message}", file=sys.stderr)))
        except CalibrationInterrupted as interrupt:  # say whether this run kept anything
            if interrupt.checkpoint is not None:
                return fail(f"interrupted; the finished batches are in {interrupt.checkpoint}: the same command "
                            f"resumes from it", 130)
            return fail("interrupted before the first batch was finished; nothing was written", 130)
    counts = statistics.per_layer[layers[0]].count
    print(f"wrote {args.out}: {len(layers)} layers, {counts} images"
          + (f", {len(skipped)} unreadable skipped" if skipped else ""))
    return 1 if skipped else 0  # like explain: the batch went on, but not every input was used
