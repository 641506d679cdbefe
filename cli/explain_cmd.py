"""`sipgrad explain`: saliency maps and overlays for image files and folders."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sipgrad_cli.common import (
    OUTPUT_IMAGE_SUFFIXES,
    add_image_command,
    add_method_arguments,
    add_sip_arguments,
    check_sip_layers,
    check_sip_options,
    guarded,
    load_classifier,
    method_options,
    output_folder,
    positive_int,
    progress_bar,
    sip_overrides,
)

DESCRIPTION = """Explain a classifier's predictions on images.

For each image: the top-5 classes, a saliency map (.npy, float32 or --saliency-dtype float16,
original image size), an overlay (.png, original size) and a figure (image | heatmap |
overlay). Output names are NAME.METHOD[.sip-POLICY][.class-INDEX] (the class only when it
is not the top-1); the same image name in two folders gets NAME-2, NAME-3... Other settings
(crop, gamma, layers, method options) do not change the names: give each its own --out.
Files under --out, and files named like this tool's outputs (*.overlay.png, *.figure.png,
...) in any folder searched, are not taken as inputs. Bad images are reported one line each
and skipped; the exit status is then 1."""


def register(subparsers: argparse._SubParsersAction) -> None:
    from sipgrad.attribution.methods import METHODS

    parser = add_image_command(subparsers, "explain", "saliency maps and overlays for images", DESCRIPTION)
    group = parser.add_argument_group("explanation")
    group.add_argument("--method", default="grad", choices=METHODS, help="attribution method (default: grad)")
    group.add_argument("--target", help="class index, name or wnid to explain (default: each image's top-1)")
    group.add_argument("--crop", action="store_true", help="standard resize + centre crop instead of the whole image")
    group.add_argument("--reduce", choices=["mean", "max"], default="mean",
                       help="colour-channel reduction of |attribution| (default: mean)")
    group.add_argument("--batch-size", type=positive_int, default=16, help="images per batch (default: 16)")
    add_method_arguments(group, ig_steps=50, smoothgrad_samples=25)
    add_sip_arguments(parser)
    parser.add_argument("--compare", action="store_true",
                        help="also explain without SIP and render plain vs SIP side by side (NAME...compare.png); "
                             "the plain map's overlay and .npy are written under their own names too")
    out = parser.add_argument_group("output")
    out.add_argument("--out", default="sipgrad-out", metavar="DIR", help="output folder (default: sipgrad-out)")
    out.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    out.add_argument("--saliency-dtype", choices=["float32", "float16"], default="float32",
                     help="number type of the saved .saliency.npy maps: float16 halves the files (a 6000 x 4000 "
                          "photo: 48 MB instead of 96 MB) and keeps about 3 significant digits (default: float32)")
    parser.set_defaults(run=run)


@guarded
def run(args: argparse.Namespace) -> int:
    from sipgrad import explain
    from sipgrad.errors import ImageLoadError, SipgradError
    from sipgrad.hooks.sip import SIPConfig
    from sipgrad.io.images import find_images, load_image_array
    from sipgrad.io.names import output_stems
    from sipgrad.render.figure import save_panels

    out = output_folder(args.out)
    # Never re-read our own outputs: all of --out when it is inside an input folder, else our file names.
    paths = find_images(args.paths, exclude=out, outputs=OUTPUT_IMAGE_SUFFIXES)
    if not paths:
        raise SipgradError("no images found in " + ", ".join(args.paths))
    check_sip_options(args, [args.sip])
    sip = SIPConfig.parse(args.sip, **sip_overrides(args))
    if args.compare and sip is None:
        raise SipgradError("--compare needs a SIP policy, e.g. --sip topq:0.25")
    classifier = load_classifier(args)
    check_sip_layers(args, classifier)
    common = {"target": args.target, "method": args.method, "crop": args.crop, "batch_size": args.batch_size,
              "reduce": args.reduce, **method_options(args)}
    stems = output_stems(paths)  # one per input, unique over the whole run (same names in other folders too)
    batches = (len(paths) + args.batch_size - 1) // args.batch_size
    results, errors = [], []
    layer, interrupted = None, False
    with progress_bar(len(paths), "explaining") as bar:
        try:  # Ctrl-C: report the images finished so far (their files are written), then exit 130
            for number, start in enumerate(range(0, len(paths), args.batch_size), 1):
                bar.set_postfix_str(f"batch {number}/{batches}: reading")
                batch_paths, batch_stems, images, positions = [], [], [], []
                for position in range(start, min(start + args.batch_size, len(paths))):
                    path, stem = paths[position], stems[position]
                    try:
                        images.append(load_image_array(path))
                        batch_paths.append(path)
                        batch_stems.append(stem)
                        positions.append(position)  # seeds its random methods: the same map in any batch
                    except ImageLoadError as error:
                        errors.append({"image": str(path), "error": str(error)})
                        bar.write(f"sipgrad: error: {error}", file=sys.stderr)
                        bar.update(1)
                if not images:
                    continue
                bar.set_postfix_str(f"batch {number}/{batches}: explaining")
                result = explain(classifier, images, sip=sip, indices=positions, **common)
                result.names = [p.name for p in batch_paths]
                plain = explain(classifier, images, indices=positions, **common) if args.compare else None
                bar.set_postfix_str(f"batch {number}/{batches}: saving")
                for i, path in enumerate(batch_paths):
                    kept: list[str] = []  # this image's files so far: all of them go if one cannot be written
                    try:  # image by image: one file that cannot be written (a folder in its way) costs only its image
                        plain_files = {}
                        if plain is not None:
                            plain.names = result.names
                            plain_files = plain.save_image(i, out, batch_stems[i], figure=False,
                                                           saliency_dtype=args.saliency_dtype)
                            kept += plain_files.values()
                        written = result.save_image(i, out, batch_stems[i], saliency_dtype=args.saliency_dtype)
                        kept += written.values()
                        record = {"image": str(path), "model": classifier.name, "method": args.method,
                                  "sip": result.sip, "layer": result.layer,
                                  "target": {k: v for k, v in result.target(i).items() if k != "prob"},
                                  "target_prob": result.target(i)["prob"], "top5": result.top(i),
                                  "saliency": written["saliency"], "overlay": written["overlay"],
                                  "figure": written["figure"], "seconds": round(result.seconds[i], 4)}
                        if plain is not None:
                            compare = written["figure"].replace(".figure.png", ".compare.png")
                            save_panels(compare, result.images[i], [plain.saliency[i], result.saliency[i]],
                                        [plain.label, result.label],
                                        result.title(i, f"{plain.label} vs {result.label}"))
                            record.update(compare=compare, plain_overlay=plain_files["overlay"],
                                          plain_saliency=plain_files["saliency"])
                    except BaseException as error:
                        for written_path in kept:
                            Path(written_path).unlink(missing_ok=True)
                        if not isinstance(error, SipgradError):
                            raise
                        errors.append({"image": str(path), "error": str(error)})
                        bar.write(f"sipgrad: error: {error}", file=sys.stderr)
                        continue
                    results.append(record)
                layer = result.layer
                del result, plain, images  # one batch of full-size images in memory at a time
                bar.update(len(batch_paths))
        except KeyboardInterrupt:
            interrupted = True
        bar.set_postfix_str("interrupted" if interrupted else "done")
    if args.json:
        json.dump({"model": classifier.name, "method": args.method, "sip": sip.label if sip else None,
                   "results": results, "errors": errors}, sys.stdout, indent=2)
        print()
    else:
        _print_table(results, layer)
    if interrupted:
        print(f"sipgrad: interrupted; wrote the {len(results)} image(s) finished of {len(paths)}", file=sys.stderr)
        return 130
    return 1 if errors else 0


def _print_table(results: list[dict], layer: str | None) -> None:
    if layer:
        print(f"Grad-CAM layer: {layer}")
    for record in results:
        top = ", ".join(f"{t['name']} {t['prob']:.1%}" for t in record["top5"])
        print(f"{record['image']}")
        print(f"  top-5:  {top}")
        print(f"  target: {record['target']['name']} ({record['target']['index']})  [{record['seconds']:.2f}s]")
        written = [record[key] for key in ("overlay", "saliency", "figure", "compare", "plain_overlay",
                                           "plain_saliency") if key in record]
        print(f"  files:  {', '.join(written)}")
