"""sipgrad side by side with the saliency libraries it competes with, on their own ground.

    pip install -e ".[saliency-peers]"      # torchcam, grad-cam (pytorch-grad-cam), quantus, torchray
    python benchmarks/saliency_peers.py [--blocks gradcam,gradients,metrics] [--rounds 7] [--batch 8]
                                        [--out docs/data/saliency_peers.json]

Everything runs offline on the embedded EfficientNet-Lite0 and the built-in composites
(exact boxes), on CPU, from preprocessed tensors, in one process:

* ``gradcam``: Grad-CAM from sipgrad, TorchCAM (``torchcam.methods.GradCAM``) and
  pytorch-grad-cam (``pytorch_grad_cam.GradCAM``) on the same layer, images and per-image
  targets. Time per batch (median of interleaved rounds), and agreement: each library's
  map is min-max scaled per image (the peers' own output) and compared with sipgrad's.
* ``gradients``: sipgrad's ``grad``, ``inputgrad``, ``ig`` and ``smoothgrad`` against the
  same captum classes called directly. Time per batch, the largest difference relative to
  the map's maximum (0 up to float rounding for the deterministic methods), and whether an
  image's map depends on the batch it was computed in: the same B images in one batch and
  in B batches of one (for captum's ``NoiseTunnel``, the global generator seeded once
  before the run; sipgrad is given each image's position in the run).
* ``metrics``: the pointing game and the energy in the boxes for Lite0's ``grad`` and
  ``gradcam`` maps of the composites, from sipgrad, Quantus (``PointingGame``,
  ``RelevanceMassAccuracy``) and TorchRay (``PointingGame``, its 15-px tolerance):
  how many scores agree, and the time for all maps. Then the pointing game on
  hand-made points at exactly the tolerance and one pixel either side of it.

The peers are not dependencies of sipgrad; the ``saliency-peers`` extra installs them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved, print_table, write_json  # noqa: E402

import sipgrad  # noqa: E402
from sipgrad.attribution.engine import AttributionEngine  # noqa: E402
from sipgrad.attribution.methods import MethodOptions  # noqa: E402
from sipgrad.evaluation import metrics  # noqa: E402
from sipgrad.evaluation.builtin import composite_cases  # noqa: E402
from sipgrad.evaluation.cases import boxes_to_input, pad_boxes  # noqa: E402

BLOCKS = ("gradcam", "gradients", "metrics")


def composites(classifier: sipgrad.Classifier, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                        torch.Tensor]:
    """(inputs, targets, boxes, valid) of the first ``count`` built-in composites at the model's input size."""
    cases = composite_cases(classifier.classes)[:count]
    prepared = [classifier.preprocessing.prepare(case.load()) for case in cases]
    inputs = torch.stack([tensor for tensor, _ in prepared])
    boxes, valid = pad_boxes([boxes_to_input(case.boxes, geometry) for case, (_, geometry) in zip(cases, prepared)])
    return inputs, torch.tensor([case.target for case in cases]), boxes, valid


def min_max(maps: torch.Tensor) -> torch.Tensor:
    """Each map (B x H x W) scaled to [0, 1], as TorchCAM and pytorch-grad-cam return theirs."""
    flat = maps.reshape(maps.shape[0], -1)
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - low) / (high - low).clamp_min(1e-12)).reshape(maps.shape)


def gradcam_block(classifier, inputs, targets, rounds: int) -> list[dict]:
    from pytorch_grad_cam import GradCAM as GradCamLibrary
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torchcam.methods import GradCAM as TorchCamGradCAM

    module, layer_name = classifier.module.eval(), classifier.gradcam_layer
    layer = dict(module.named_modules())[layer_name]
    engine = AttributionEngine(classifier, "gradcam")
    size = tuple(inputs.shape[-2:])

    def ours() -> torch.Tensor:
        return engine(inputs, targets).maps()

    torchcam = TorchCamGradCAM(module, target_layer=layer_name)
    torchcam.disable_hooks()  # on only inside its own calls, so the other variants run without them

    def torchcam_maps() -> torch.Tensor:
        torchcam.enable_hooks()
        try:
            scores = module(inputs)
            cam, = torchcam(class_idx=targets.tolist(), scores=scores)
        finally:
            torchcam.disable_hooks()
        return F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]

    library_targets = [ClassifierOutputTarget(int(t)) for t in targets]

    def library_maps() -> torch.Tensor:
        # Its hooks cannot be switched off, so each call makes (and releases) its own; that costs microseconds.
        with GradCamLibrary(model=module, target_layers=[layer]) as grad_cam_library:
            return torch.from_numpy(grad_cam_library(input_tensor=inputs, targets=library_targets))

    variants = {"sipgrad": ours, "torchcam": torchcam_maps, "pytorch-grad-cam": library_maps}
    reference = min_max(ours())
    rows = []
    seconds = interleaved(variants, rounds=rounds)
    for name, run in variants.items():
        difference = (min_max(run().float()) - reference).abs()
        rows.append({"block": "gradcam", "library": name, "variant": "Grad-CAM", "batch": inputs.shape[0],
                     "s/batch": seconds[name], "vs sipgrad": seconds[name] / seconds["sipgrad"],
                     "max |diff| (min-max scaled)": float(difference.max()),
                     "mean |diff|": float(difference.mean())})
    return rows


def gradients_block(classifier, inputs, targets, rounds: int) -> list[dict]:
    from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel, Saliency

    module = classifier.module.eval()
    batch = inputs.shape[0]
    options = MethodOptions(ig_steps=16, smoothgrad_samples=8, internal_batch_size=16)
    black = classifier.preprocessing.normalize(torch.zeros(3, 1, 1)).expand_as(inputs).contiguous()
    std = options.smoothgrad_noise * float(np.mean([1.0 / s for s in classifier.preprocessing.std]))
    engines = {name: AttributionEngine(classifier, name, options=options)
               for name in ("grad", "inputgrad", "ig", "smoothgrad")}

    def captum_smoothgrad(x: torch.Tensor, chosen: torch.Tensor, seed: int | None = 0) -> torch.Tensor:
        if seed is not None:
            torch.manual_seed(seed)  # captum draws from the global generator: the best it offers is a seed per call
        return NoiseTunnel(Saliency(module)).attribute(
            x.clone().requires_grad_(True), nt_type="smoothgrad", nt_samples=options.smoothgrad_samples,
            # captum batches noise samples per image: internal_batch_size rows per pass, as sipgrad's chunks have
            nt_samples_batch_size=max(1, options.internal_batch_size // x.shape[0]), stdevs=std, target=chosen,
            abs=False)

    captum_methods = {
        "grad": lambda x, chosen: Saliency(module).attribute(x.clone().requires_grad_(True), target=chosen, abs=True),
        "inputgrad": lambda x, chosen: InputXGradient(module).attribute(x.clone().requires_grad_(True), target=chosen),
        "ig": lambda x, chosen: IntegratedGradients(module).attribute(
            x.clone().requires_grad_(True), baselines=black[:x.shape[0]], target=chosen, n_steps=options.ig_steps,
            internal_batch_size=max(options.internal_batch_size, x.shape[0])),
        "smoothgrad": lambda x, chosen: captum_smoothgrad(x, chosen),
    }
    rows = []
    for name, engine in engines.items():
        variants = {"sipgrad": lambda e=engine: e(inputs, targets).attribution,
                    "captum": lambda run=captum_methods[name]: run(inputs, targets)}
        seconds = interleaved(variants, rounds=rounds)
        ours, theirs = variants["sipgrad"]().detach(), variants["captum"]().detach()
        # The same run split into batches of one image: sipgrad passes each image's position in the run;
        # captum's noise comes from the global generator, seeded once before the run as a user would.
        split_ours = torch.cat([engine(inputs[k:k + 1], targets[k:k + 1], indices=torch.tensor([k])).attribution
                                for k in range(batch)])
        if name == "smoothgrad":
            torch.manual_seed(0)
            split_theirs = torch.cat([captum_smoothgrad(inputs[k:k + 1], targets[k:k + 1], seed=None).detach()
                                      for k in range(batch)])
        else:
            split_theirs = torch.cat([captum_methods[name](inputs[k:k + 1], targets[k:k + 1]).detach()
                                      for k in range(batch)])
        for library, full, split in (("sipgrad", ours, split_ours), ("captum", theirs, split_theirs)):
            per_image = (full - split).flatten(1).abs().amax(1) / full.flatten(1).abs().amax(1)
            rows.append({"block": "gradients", "library": library, "variant": name, "batch": batch,
                         "s/batch": seconds[library], "vs sipgrad": seconds[library] / seconds["sipgrad"],
                         # SmoothGrad's noise differs between the libraries by design: no agreement to report
                         "max |diff| / max |captum|": None if name == "smoothgrad" else
                         float((ours - theirs).abs().max() / theirs.abs().max()) if library == "sipgrad" else None,
                         "batch of 1 vs of B": float(per_image.max())})
    return rows


def metric_maps(classifier, inputs, targets) -> dict[str, torch.Tensor]:
    """Lite0's grad and Grad-CAM maps of ``inputs`` (B x H x W), computed in batches of 8."""
    maps = {}
    for method in ("grad", "gradcam"):
        engine = AttributionEngine(classifier, method)
        maps[method] = torch.cat([engine(inputs[i:i + 8], targets[i:i + 8]).maps() for i in range(0, len(inputs), 8)])
    return maps


def quiet(run):
    """``run()`` with the peers' warnings and printed notices silenced (they are not what is timed)."""
    def wrapped():
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            return run()
    return wrapped


def metrics_block(classifier, inputs, targets, boxes, valid, rounds: int) -> list[dict]:
    import quantus
    from torchray.benchmark.pointing_game import PointingGame as TorchRayPointingGame

    module = classifier.module.eval()
    height, width = inputs.shape[-2:]
    mask = metrics.box_mask(boxes, valid, height, width)
    x_batch, y_batch, s_batch = inputs.numpy(), targets.numpy(), mask[:, None].numpy().astype(np.float32)
    tolerance = 15
    torchray = TorchRayPointingGame(num_classes=1000, tolerance=tolerance)
    rows = []
    for method, maps in metric_maps(classifier, inputs, targets).items():
        a_batch = maps[:, None].numpy()

        def torchray_hits(maps=maps) -> torch.Tensor:
            points = maps.reshape(maps.shape[0], -1).argmax(1)
            return torch.tensor([torchray.evaluate(mask[i], (int(p % width), int(p // width))) == 1
                                 for i, p in enumerate(points)])

        variants = {
            ("pointing", "sipgrad", 0): lambda maps=maps: metrics.pointing_game(maps, boxes, valid, tolerance=0.0),
            ("pointing", "quantus", 0): quiet(lambda a=a_batch: quantus.PointingGame(disable_warnings=True)(
                module, x_batch, y_batch, a_batch=a, s_batch=s_batch, channel_first=True, device="cpu")),
            ("pointing", "sipgrad", tolerance): lambda maps=maps: metrics.pointing_game(maps, boxes, valid,
                                                                                          float(tolerance)),
            ("pointing", "torchray", tolerance): quiet(torchray_hits),
            ("energy", "sipgrad", 0): lambda maps=maps: metrics.energy_pointing_game(maps, mask),
            ("energy", "quantus", 0): quiet(lambda a=a_batch: quantus.RelevanceMassAccuracy(disable_warnings=True)(
                module, x_batch, y_batch, a_batch=a, s_batch=s_batch, channel_first=True, device="cpu")),
        }
        seconds = interleaved({key: run for key, run in variants.items()}, rounds=rounds)
        scores = {key: torch.as_tensor(np.asarray(run(), dtype=np.float64)) for key, run in variants.items()}
        for (metric, library, radius), values in scores.items():
            ours = scores[(metric, "sipgrad", radius)]
            rows.append({"block": "metrics", "library": library, "variant": f"{metric} ({method} maps)",
                         "tolerance px": radius if metric == "pointing" else None, "maps": len(maps),
                         "s/batch": seconds[(metric, library, radius)],
                         "vs sipgrad": seconds[(metric, library, radius)] / seconds[(metric, "sipgrad", radius)],
                         "mean score": float(values.mean()),
                         "scores differing from sipgrad": int((values - ours).abs().gt(1e-6).sum()),
                         "max |diff|": float((values - ours).abs().max())})
    rows.extend(tolerance_edge_rows(torchray, tolerance))
    return rows


def tolerance_edge_rows(torchray, tolerance: int) -> list[dict]:
    """The pointing game for points at distance exactly ``tolerance`` px from a one-pixel box, and 1 px either side."""
    size = 64
    centre = 32
    boxes = torch.tensor([[[centre, centre, centre + 1.0, centre + 1.0]]])  # the pixel (row 32, col 32)
    valid = torch.ones(1, 1, dtype=torch.bool)
    mask = metrics.box_mask(boxes, valid, size, size)[0]
    rows = []
    for label, (dy, dx) in (("inside, 14 px", (0, tolerance - 1)), ("on the circle, 15 px", (0, tolerance)),
                            ("on the circle, (9, 12)", (9, 12)), ("outside, 16 px", (0, tolerance + 1))):
        maps = torch.zeros(1, size, size)
        maps[0, centre + dy, centre + dx] = 1.0
        ours = bool(metrics.pointing_game(maps, boxes, valid, float(tolerance))[0])
        theirs = quiet(lambda: torchray.evaluate(mask, (centre + dx, centre + dy)))() == 1
        rows.append({"block": "metrics", "library": "sipgrad vs torchray", "variant": f"pointing, point {label}",
                     "tolerance px": tolerance, "sipgrad hit": ours, "torchray hit": theirs})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", default=",".join(BLOCKS), help=f"comma-separated, from {', '.join(BLOCKS)}")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=8, help="images per timed call (gradcam, gradients)")
    parser.add_argument("--metric-maps", type=int, default=64, help="composites scored in the metrics block")
    parser.add_argument("--out", default="benchmarks/results/saliency_peers.json")
    args = parser.parse_args()
    blocks = [b for b in args.blocks.split(",") if b]
    unknown = sorted(set(blocks) - set(BLOCKS))
    if unknown:
        parser.error(f"unknown block(s) {', '.join(unknown)}; choose from {', '.join(BLOCKS)}")
    torch.manual_seed(0)
    classifier = sipgrad.load_model("efficientnet_lite0")
    inputs, targets, boxes, valid = composites(classifier, max(args.batch, args.metric_maps))
    rows: list[dict] = []
    if "gradcam" in blocks:
        rows += gradcam_block(classifier, inputs[:args.batch], targets[:args.batch], args.rounds)
    if "gradients" in blocks:
        rows += gradients_block(classifier, inputs[:args.batch], targets[:args.batch], args.rounds)
    if "metrics" in blocks:
        count = args.metric_maps
        rows += metrics_block(classifier, inputs[:count], targets[:count], boxes[:count], valid[:count], args.rounds)
    columns = ["block", "library", "variant", "batch", "maps", "tolerance px", "s/batch", "vs sipgrad",
               "max |diff| (min-max scaled)", "mean |diff|", "max |diff| / max |captum|", "batch of 1 vs of B",
               "mean score", "scores differing from sipgrad", "max |diff|", "sipgrad hit", "torchray hit"]
    for block in blocks:
        block_rows = [r for r in rows if r["block"] == block]
        print(f"\n## {block}")
        print_table(block_rows, [c for c in columns if any(c in r and r[c] is not None for r in block_rows)])
    write_json(args.out, rows, rounds=args.rounds, batch=args.batch, metric_maps=args.metric_maps, blocks=blocks)


if __name__ == "__main__":
    main()
