"""`sipgrad fwdgrad`: placeholder, being built."""

from __future__ import annotations

import argparse

from sipgrad_cli.common import fail


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("fwdgrad", help="(being built)")
    parser.set_defaults(run=lambda args: fail("sipgrad fwdgrad is not built yet"))
