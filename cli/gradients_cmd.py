"""`sipgrad gradients`: placeholder, being built."""

from __future__ import annotations

import argparse

from sipgrad_cli.common import fail


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("gradients", help="(being built)")
    parser.set_defaults(run=lambda args: fail("sipgrad gradients is not built yet"))
