"""`sipgrad models`: the model zoo and whether each model's weights are available offline."""

from __future__ import annotations

import argparse
import json
import sys

from sipgrad_cli.common import add_command, as_flags, guarded


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "models", "list models and whether their weights are on disk",
                         "List the built-in models, their default Grad-CAM layer and whether pretrained "
                         "weights are available offline (docs/sip.md lists each model's SIP layers).")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=run)


@guarded
def run(args: argparse.Namespace) -> int:
    from sipgrad.models import DEFAULT_MODEL, MODELS, weights_available_offline

    rows = [{"name": name, "default": name == DEFAULT_MODEL, "offline": weights_available_offline(name),
             "weights": "train" if spec.trained_by else ("package" if spec.weights_url is None else "download"),
             "gradcam_layer": spec.gradcam_layer, "description": as_flags(spec.description)}
            for name, spec in MODELS.items()]  # the library names parameters (weights=FILE); the user types flags
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
        return 0
    print(f"{'model':<20} {'weights offline':<16} {'Grad-CAM layer':<16} description")
    for row in rows:
        offline = "yes" if row["offline"] else ("no (train it)" if row["weights"] == "train" else "no (downloads)")
        print(f"{row['name']:<20} {offline:<16} {row['gradcam_layer']:<16} {row['description']}")
    return 0
