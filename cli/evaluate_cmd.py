"""`sipgrad evaluate`: do explanations point at the object? Box metrics over a data set."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sipgrad_cli.common import (
    add_command,
    add_method_arguments,
    add_model_arguments,
    add_sip_arguments,
    check_sip_layers,
    check_sip_options,
    fail,
    guarded,
    load_classifier,
    method_options,
    nonnegative_float,
    nonnegative_int,
    output_folder,
    positive_int,
    progress_bar,
    sip_overrides,
    stage,
    sweep_items,
)

DESCRIPTION = """Score explanations against bounding boxes, for every method x SIP config.

Data: --images DIR with --boxes FILE|DIR in --format imagenet (ILSVRC XML per image), voc
(Pascal VOC XML), coco (instances JSON) or csv (CSV/JSONL: image,label,x0,y0,x1,y1); or
--builtin photos|composites (offline, ImageNet classes) or cluttered-digits (offline, for the
digits_resnet/digits_vgg models). Each (image, class) is a case.

Metrics: pointing game (a disc of --tolerance px around the maximum touches a box) with the
centre baseline, energy inside the boxes, mu_in/mu_in_w, and (unless --steps 0) deletion
and insertion curves (AUC, AOPC), most- and least-relevant first. Record columns:
{metrics}.

Output (--out DIR): run.json (the run's identity: a re-run is checked against it),
records.jsonl (one line per case and config, written as results come; a re-run with the
same arguments resumes), summary.json, summary.md (means with bootstrap
95% intervals, paired Wilcoxon tests of SIP vs plain), metrics.png, energy_vs_box_area.png
and report.html (tables and a gallery of the cases where the configs differ most).
Scale out with: torchrun --nproc_per_node N -m sipgrad_cli evaluate ...
(with --device cuda, each process takes the GPU of its LOCAL_RANK and nccl; on CPU, gloo)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    from sipgrad.evaluation.builtin import BUILTIN
    from sipgrad.evaluation.catalog import BOX_METRICS, PERTURBATION_METRICS
    from sipgrad.evaluation.datasets import FORMATS
    from sipgrad.evaluation.evaluator import EVALUATION_METHOD_DEFAULTS

    columns = ", ".join(BOX_METRICS) + "; unless --steps 0, " + ", ".join(PERTURBATION_METRICS)
    parser = add_command(subparsers, "evaluate", "box metrics (pointing game and friends) over a data set",
                         DESCRIPTION.format(metrics=columns))
    data = parser.add_argument_group("data")
    source = data.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", metavar="DIR", help="folder of images")
    source.add_argument("--builtin", choices=BUILTIN, help="an offline benchmark shipped with sipgrad")
    data.add_argument("--boxes", metavar="FILE|DIR", help="annotations for --images")
    data.add_argument("--format", choices=FORMATS, default="csv", help="annotation format (default: csv)")
    data.add_argument("--class-map", metavar="JSON", help="JSON object renaming annotation labels to model classes")
    data.add_argument("--limit", type=positive_int, help="evaluate only the first N cases")
    add_model_arguments(parser)
    group = parser.add_argument_group("explanations")
    group.add_argument("--method", default="grad", type=lambda text: sweep_items(text, "grad,ig"),
                       help="comma-separated methods (default: grad)")
    group.add_argument("--crop", action="store_true", help="standard resize + centre crop instead of whole images")
    add_method_arguments(group, ig_steps=EVALUATION_METHOD_DEFAULTS["ig_steps"],
                         smoothgrad_samples=EVALUATION_METHOD_DEFAULTS["smoothgrad_samples"],
                         why="; fewer than explain's, as every case runs under every config")
    add_sip_arguments(parser, multiple=True)
    scoring = parser.add_argument_group("scoring and output")
    scoring.add_argument("--tolerance", type=nonnegative_float,
                         help="pointing-game radius in input px (default: 15 at a 224-px input, scaled with the size)")
    scoring.add_argument("--steps", type=nonnegative_int, default=10,
                         help="deletion/insertion steps; 0 skips them (default: 10)")
    scoring.add_argument("--compile", action="store_true",
                         help="torch.compile the model for the deletion/insertion passes: slow the first time on a "
                              "machine (cached after), then faster on CPU; pays for long runs only (needs a C++ "
                              "compiler; falls back with a warning)")
    scoring.add_argument("--batch-size", type=positive_int, default=8, help="cases per batch (default: 8)")
    scoring.add_argument("--save-maps", action="store_true", help="also save every map as OUT/maps/CONFIG/CASE.npy (the case's image path and label: "
                              "sub/x.jpg#285 gives maps/CONFIG/sub/x.jpg_285.npy)")
    scoring.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.set_defaults(run=run)


@guarded
def run(args: argparse.Namespace) -> int:
    from sipgrad.errors import SipgradError
    from sipgrad.evaluation import (
        EvalSettings,
        builtin_cases,
        evaluate,
        load_box_dataset,
        write_reports,
    )
    from sipgrad.evaluation.records import read_records
    from sipgrad.evaluation.runner import distributed_context, process_device, record_files

    if args.images and not args.boxes:
        raise SipgradError("--images needs --boxes")
    if args.builtin and (args.boxes or args.class_map):  # silently ignoring them would score the wrong boxes
        raise SipgradError(f"{'--boxes' if args.boxes else '--class-map'} goes with --images; --builtin "
                           f"{args.builtin} brings its own boxes")
    methods, sips = tuple(args.method), tuple(args.sip)
    check_sip_options(args, sips)
    out = output_folder(args.out)
    args.device = process_device(args.device)  # under torchrun: one GPU per process
    classifier = load_classifier(args)
    check_sip_layers(args, classifier)
    if args.builtin:
        cases, dataset = builtin_cases(args.builtin, classifier.classes), f"builtin:{args.builtin}"
    else:
        label_map = _read_label_map(args.class_map)
        cases = load_box_dataset(args.format, args.images, args.boxes, classifier.classes, label_map)
        dataset = f"{args.format}:{Path(args.images).resolve()}:{Path(args.boxes).resolve()}"
    if not cases:
        raise SipgradError(f"no cases to evaluate in {dataset}")
    overrides = {k: v for k, v in sip_overrides(args).items() if v is not None}
    settings = EvalSettings(methods=methods, sips=sips,
                            sip_options=overrides, tolerance=args.tolerance, steps=args.steps, crop=args.crop,
                            compile=args.compile,
                            method_options=_recorded_method_options(args))
    rank, world = distributed_context(classifier.device)
    total = len(cases[:args.limit] if args.limit else cases)
    try:
        with progress_bar((total + world - 1 - rank) // world,
                          f"evaluating[{rank}]" if world > 1 else "evaluating", unit="case") as bar:
            records = evaluate(classifier, cases, settings, out, dataset=dataset, batch_size=args.batch_size,
                               limit=args.limit, save_maps=args.save_maps, progress=bar.update)
    except KeyboardInterrupt:  # say what is on disk: the records of finished cases, or nothing
        kept = len(read_records(record_files(Path(out))))
        if not kept:
            return fail("interrupted before any case was finished; no records were written", 130)
        return fail(f"interrupted; {kept} record(s) of finished cases are in {out}: the same command resumes "
                    f"from them", 130)
    if records is None:
        return 0
    stage(f"writing the summary, plots and report to {out}/")
    summary = write_reports(classifier, cases, settings, records, out, title=f"{classifier.name} on {dataset}",
                            stage=lambda step: stage(f"  {step}"))
    failed = {r["case"]: r["error"] for r in records if "error" in r}
    print(f"{len(records) - sum('error' in r for r in records)} records in {out}/records.jsonl; "
          f"report: {out}/report.html")
    for key, entry in summary["configs"].items():
        metrics = entry["metrics"]
        print(f"  {key:<24} pointing {metrics['pointing']['mean']:.3f}  energy {metrics['energy']['mean']:.3f}"
              f"  (centre baseline {metrics['centre']['mean']:.3f}, n={entry['n']})")
    if failed:
        for case, error in failed.items():
            print(f"sipgrad: error: case {case}: {error}", file=sys.stderr)
        print(f"sipgrad: {len(failed)} of {total} case(s) skipped (their images could not be read; a re-run with "
              f"the same --out retries them)", file=sys.stderr)
        return 1
    return 0


def _read_label_map(path: str | None) -> dict[str, str] | None:
    from sipgrad.errors import SipgradError

    if not path:
        return None
    try:
        mapping = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise SipgradError(f"{path}: not a JSON object of label renames ({error})") from None
    if not isinstance(mapping, dict):
        raise SipgradError(f"{path}: expected a JSON object")
    return {str(k): str(v) for k, v in mapping.items()}


def _recorded_method_options(args: argparse.Namespace) -> dict:
    """The method options of the run: IG steps, SmoothGrad samples and the seed always (as runs have recorded them
    from the start), the others only where they differ from the library's defaults, so that a run folder made
    before they could be set keeps its identity (``run.json``) and still resumes."""
    from sipgrad.attribution.methods import MethodOptions
    from sipgrad.evaluation.evaluator import EVALUATION_METHOD_DEFAULTS

    defaults = MethodOptions()
    return {name: value for name, value in method_options(args).items()
            if name in EVALUATION_METHOD_DEFAULTS or value != getattr(defaults, name)}

