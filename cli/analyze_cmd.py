"""`sipgrad analyze`: SVD/PCA spectra of the internal gradients, plain and under SIP."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sipgrad_cli.common import (
    OUTPUT_IMAGE_SUFFIXES,
    add_image_command,
    add_sip_arguments,
    check_sip_options,
    fail,
    guarded,
    layer_names,
    load_classifier,
    output_folder,
    positive_int,
    progress_bar,
    sip_overrides,
    stage,
)

DESCRIPTION = """Analyse the gradients inside the network.

For each image and each analysed layer, the gradient of the explained logit at the layer's
output is a C x HW matrix; its SVD (PCA over positions) gives the singular values, the
effective rank and the strongest spatial components. Across images, a PCA of the
channel gradient vectors shows how many channel directions the explanations share.

Writes OUT/gradients.npz (every spectrum; keys <sip>/<layer>/<field>), OUT/spectrum.png
(effective rank and top-component energy per layer, one line per SIP config) and, per
image, OUT/<image>.components.png (the strongest components of --figure-layer)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_image_command(subparsers, "analyze", "SVD/PCA of internal gradients, plain vs SIP", DESCRIPTION)
    group = parser.add_argument_group("analysis")
    group.add_argument("--target", help="class index, name or wnid (default: each image's top-1)")
    group.add_argument("--layers", metavar="NAMES", type=layer_names,
                       help="comma-separated layers to analyse (default: the layers SIP filters)")
    group.add_argument("--components", type=positive_int, default=3, help="spatial components kept per image (default: 3)")
    group.add_argument("--no-centre", "--no-center", dest="no_centre", action="store_true",
                       help="SVD of the raw gradient instead of PCA (keep each channel's mean over positions)")
    group.add_argument("--figure-layer", metavar="NAME", help="layer shown in the components figures (default: last)")
    group.add_argument("--crop", action="store_true", help="standard resize + centre crop instead of the whole image")
    group.add_argument("--batch-size", type=positive_int, default=16, help="images per batch (default: 16)")
    add_sip_arguments(parser, multiple=True)
    out = parser.add_argument_group("output")
    out.add_argument("--out", default="sipgrad-analysis", metavar="DIR", help="output folder (default: sipgrad-analysis)")
    out.add_argument("--no-figures", action="store_true", help="write only gradients.npz")
    out.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    parser.set_defaults(run=run)


@guarded
def run(args: argparse.Namespace) -> int:
    from sipgrad.analysis import (
        analysis_layers,
        analyze_gradients,
        concat_analyses,
        save_analyses,
    )
    from sipgrad.errors import ImageLoadError, SipgradError
    from sipgrad.hooks.sip import SIPConfig
    from sipgrad.io.images import find_images, load_image
    from sipgrad.io.names import output_stems
    from sipgrad.render.spectrum import save_components_figure, save_spectrum_plot

    out = output_folder(args.out)
    paths = find_images(args.paths, exclude=out, outputs=OUTPUT_IMAGE_SUFFIXES)
    if not paths:
        raise SipgradError("no images found in " + ", ".join(args.paths))
    check_sip_options(args, args.sip, layers_analysed=True)
    overrides = sip_overrides(args)
    configs = [SIPConfig.parse(spec, **overrides) for spec in args.sip]
    classifier = load_classifier(args)
    try:
        layers = analysis_layers(classifier, args.layers or args.sip_layers, None if args.layers else args.layer_ratio)
    except SipgradError as error:  # an unknown layer name: say which option held it
        option = "--layers" if args.layers else "--sip-layers" if args.sip_layers else None
        raise (SipgradError(f"{option}: {error}") if option else error) from None
    figure_layer = args.figure_layer or layers[-1]
    if figure_layer not in layers:
        raise SipgradError(f"--figure-layer {figure_layer!r} is not among the analysed layers")
    stems = iter(output_stems(paths))
    parts: list[list] = [[] for _ in configs]
    errors, interrupted = [], False
    with progress_bar(len(paths) * len(configs), "analysing", unit="map") as bar:  # one per image and config
        try:
            for start in range(0, len(paths), args.batch_size):  # one batch in memory at a time
                images, names, batch_stems = [], [], []
                for path in paths[start:start + args.batch_size]:
                    stem = next(stems)
                    try:
                        images.append(load_image(path))
                    except ImageLoadError as error:
                        errors.append(str(error))
                        print(f"sipgrad: error: {error}", file=sys.stderr)
                        bar.update(len(configs))
                        continue
                    names.append(path.name)
                    batch_stems.append(stem)
                if not images:
                    continue
                batch = [analyze_gradients(classifier, images, args.target, layers, config,
                                           components=args.components, centre=not args.no_centre, crop=args.crop,
                                           batch_size=args.batch_size, progress=bar.update)
                         for config in configs]
                shown = batch[0].images
                for analysis, kept in zip(batch, parts):
                    analysis.names = names
                    analysis.images = []  # keep only the numbers; the figures below draw ``shown``
                    kept.append(analysis)  # before the figures: a Ctrl-C among them keeps this batch's numbers
                if not args.no_figures:
                    for i, stem in enumerate(batch_stems):
                        try:
                            save_components_figure(out / f"{stem}.components.png", shown[i], batch, i, figure_layer)
                        except SipgradError as error:  # e.g. a folder in the way: its numbers are still kept
                            errors.append(str(error))
                            bar.write(f"sipgrad: error: {error}", file=sys.stderr)
        except KeyboardInterrupt:
            interrupted = True  # keep every finished batch: write them below
    if not parts[0]:
        if interrupted:
            return fail("interrupted before any image was analysed", 130)
        raise SipgradError("none of the images could be read")
    analyses = [concat_analyses(kept) for kept in parts]
    names = analyses[0].names
    stage(f"writing {out / 'gradients.npz'}")
    save_analyses(str(out / "gradients.npz"), analyses)
    if not args.no_figures:
        stage(f"writing {out / 'spectrum.png'}")
        save_spectrum_plot(out / "spectrum.png", analyses)
    rows = [row for analysis in analyses for row in analysis.summary()]
    if args.json:
        json.dump({"model": classifier.name, "layers": list(layers), "images": names, "summary": rows,
                   "out": str(out)}, sys.stdout, indent=2)
        print()
    else:
        _print_table(rows, len(names), out)
    if interrupted:
        print(f"sipgrad: interrupted; wrote the {len(names)} image(s) finished of {len(paths)}", file=sys.stderr)
        return 130
    return 1 if errors else 0


def _print_table(rows: list[dict], images: int, out: Path) -> None:
    print(f"gradient spectra of {images} image(s); medians over images (effective rank / top-3 energy)")
    width = max(len(r["layer"]) for r in rows)
    configs = list(dict.fromkeys(r["sip"] for r in rows))
    print("layer".ljust(width) + "  channels  max rank  " + "  ".join(c.rjust(16) for c in configs))
    for layer in dict.fromkeys(r["layer"] for r in rows):
        cells = {r["sip"]: r for r in rows if r["layer"] == layer}
        first = next(iter(cells.values()))
        values = "  ".join(f"{cells[c]['effective rank']:7.1f} / {cells[c]['top-3 energy']:5.0%}".rjust(16)
                           for c in configs)
        print(f"{layer.ljust(width)}  {first['channels']:8d}  {first['rank bound']:8d}  {values}")
    print(f"wrote {out / 'gradients.npz'}")
