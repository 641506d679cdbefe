"""`sipgrad explain`: saliency maps and overlays for image files and folders."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sipgrad_cli.common import add_image_command, add_sip_arguments, guarded, load_classifier, progress_bar, sip_overrides

DESCRIPTION = """Explain a classifier's predictions on images.

For each image: the top-5 classes, a saliency map (.npy, float32, original image size),
an overlay (.png) and a figure (image | heatmap | overlay). Bad images are reported
one line each and skipped; the exit status is then 1."""


def register(subparsers: argparse._SubParsersAction) -> None:
    from sipgrad.attribution.methods import BASELINES, METHODS

    parser = add_image_command(subparsers, "explain", "saliency maps and overlays for images", DESCRIPTION)
    group = parser.add_argument_group("explanation")
    group.add_argument("--method", default="grad", choices=METHODS, help="attribution method (default: grad)")
    group.add_argument("--target", help="class index, name or wnid to explain (default: each image's top-1)")
    group.add_argument("--crop", action="store_true", help="standard resize + centre crop instead of the whole image")
    group.add_argument("--reduce", choices=["mean", "max"], default="mean",
                       help="colour-channel reduction of |attribution| (default: mean)")
    group.add_argument("--batch-size", type=int, default=16, help="images per batch (default: 16)")
    group.add_argument("--ig-steps", type=int, default=50, help="Integrated Gradients steps (default: 50)")
    group.add_argument("--ig-baseline", choices=BASELINES, default="black", help="IG baseline (default: black)")
    group.add_argument("--smoothgrad-samples", type=int, default=25, help="SmoothGrad samples (default: 25)")
    group.add_argument("--smoothgrad-noise", type=float, default=0.15,
                       help="SmoothGrad noise std as a fraction of the input range (default: 0.15)")
    group.add_argument("--internal-batch-size", type=int, default=16,
                       help="most rows per pass inside SmoothGrad/IG (default: 16; raise it on a GPU)")
    group.add_argument("--seed", type=int, default=0, help="seed for SmoothGrad noise and noise baselines")
    group.add_argument("--gradcam-layer", metavar="NAME", help="module for Grad-CAM (default: per model)")
    add_sip_arguments(parser)
    parser.add_argument("--compare", action="store_true", help="also render plain vs SIP side by side")
    out = parser.add_argument_group("output")
    out.add_argument("--out", default="sipgrad-out", metavar="DIR", help="output folder (default: sipgrad-out)")
    out.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    parser.set_defaults(run=run)


@guarded
def run(args: argparse.Namespace) -> int:
    from sipgrad import explain
    from sipgrad.errors import ImageLoadError, SipgradError
    from sipgrad.hooks.sip import SIPConfig
    from sipgrad.io.images import find_images, load_image
    from sipgrad.render.figure import save_panels

    paths = find_images(args.paths)
    if not paths:
        raise SipgradError("no images found in " + ", ".join(args.paths))
    sip = SIPConfig.parse(args.sip, **sip_overrides(args))
    if args.compare and sip is None:
        raise SipgradError("--compare needs a SIP policy, e.g. --sip topq:0.25")
    classifier = load_classifier(args)
    options = {"ig_steps": args.ig_steps, "ig_baseline": args.ig_baseline, "seed": args.seed,
               "smoothgrad_samples": args.smoothgrad_samples, "smoothgrad_noise": args.smoothgrad_noise,
               "internal_batch_size": args.internal_batch_size, "gradcam_layer": args.gradcam_layer}
    common = {"target": args.target, "method": args.method, "crop": args.crop, "batch_size": args.batch_size,
              "reduce": args.reduce, **options}
    out = Path(args.out)
    results, errors = [], []
    layer = None
    with progress_bar(len(paths), "explaining") as bar:
        for start in range(0, len(paths), args.batch_size):
            batch_paths, images = [], []
            for path in paths[start:start + args.batch_size]:
                try:
                    images.append(load_image(path))
                    batch_paths.append(path)
                except ImageLoadError as error:
                    errors.append({"image": str(path), "error": str(error)})
                    print(f"sipgrad: error: {error}", file=sys.stderr)
                    bar.update(1)
            if not images:
                continue
            result = explain(classifier, images, sip=sip, **common)
            result.names = [p.name for p in batch_paths]
            plain = explain(classifier, images, **common) if args.compare else None
            if plain is not None:
                plain.names = result.names
                plain.save(out, figure=False)
            written = result.save(out)
            layer = result.layer
            for i, path in enumerate(batch_paths):
                record = {"image": str(path), "model": classifier.name, "method": args.method,
                          "sip": result.sip, "layer": result.layer,
                          "target": {k: v for k, v in result.target(i).items() if k != "prob"},
                          "target_prob": result.target(i)["prob"], "top5": result.top(i),
                          "saliency": written[i]["saliency"], "overlay": written[i]["overlay"],
                          "figure": written[i]["figure"], "seconds": round(result.seconds[i], 4)}
                if plain is not None:
                    compare = written[i]["figure"].replace(".figure.png", ".compare.png")
                    save_panels(compare, result.images[i], [plain.saliency[i], result.saliency[i]],
                                [args.method, f"{args.method} + SIP {result.sip}"], result.title(i))
                    record["compare"] = compare
                results.append(record)
            bar.update(len(batch_paths))
    if args.json:
        json.dump({"model": classifier.name, "method": args.method, "sip": sip.label if sip else None,
                   "results": results, "errors": errors}, sys.stdout, indent=2)
        print()
    else:
        _print_table(results, layer)
    return 1 if errors else 0


def _print_table(results: list[dict], layer: str | None) -> None:
    if layer:
        print(f"Grad-CAM layer: {layer}")
    for record in results:
        top = ", ".join(f"{t['name']} {t['prob']:.1%}" for t in record["top5"])
        print(f"{record['image']}")
        print(f"  top-5:  {top}")
        print(f"  target: {record['target']['name']} ({record['target']['index']})  [{record['seconds']:.2f}s]")
        print(f"  files:  {record['overlay']}, {record['saliency']}")
