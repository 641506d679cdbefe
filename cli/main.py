"""The `sipgrad` command: a thin layer over the library (parse arguments, call, print)."""

from __future__ import annotations

import argparse
import sys

from sipgrad_cli import (
    analyze_cmd,
    calibrate_cmd,
    evaluate_cmd,
    explain_cmd,
    fwdgrad_cmd,
    gradients_cmd,
    hypergrad_cmd,
    models_cmd,
)
from sipgrad_cli.common import one_line_errors

COMMANDS = (explain_cmd, analyze_cmd, models_cmd, calibrate_cmd, evaluate_cmd, gradients_cmd, fwdgrad_cmd,
            hypergrad_cmd)


def build_parser() -> argparse.ArgumentParser:
    from sipgrad import __version__

    # One-line errors here too: an unknown command, or an option no command knows, ends up at this parser.
    parser = one_line_errors(argparse.ArgumentParser(
        prog="sipgrad",
        description="Explain what CNN image classifiers look at; SIP makes the maps sharper.",
        epilog="Run `sipgrad COMMAND --help` for a command's options."))
    parser.add_argument("--version", action="version", version=f"sipgrad {__version__}")
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
