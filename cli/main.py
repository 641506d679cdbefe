"""The `sipgrad` command: a thin layer over the library (parse arguments, call, print).

Nothing heavy is imported at module level: the commands (and through them torch, seconds
to load) are imported inside ``main``, so a Ctrl-C while the command starts up is one line
and exit status 130, not a traceback from deep inside torch's import.
"""

from __future__ import annotations

import argparse
import sys


def _commands() -> tuple:
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

    return (explain_cmd, analyze_cmd, models_cmd, calibrate_cmd, evaluate_cmd, gradients_cmd, fwdgrad_cmd,
            hypergrad_cmd)


def build_parser() -> argparse.ArgumentParser:
    from sipgrad_cli.common import one_line_errors

    from sipgrad import __version__

    # One-line errors here too: an unknown command, or an option no command knows, ends up at this parser.
    parser = one_line_errors(argparse.ArgumentParser(
        prog="sipgrad",
        description="Explain what CNN image classifiers look at; SIP makes the maps sharper.",
        epilog="Run `sipgrad COMMAND --help` for a command's options."))
    parser.add_argument("--version", action="version", version=f"sipgrad {__version__}")
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for command in _commands():
        command.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:  # while starting up: nothing was done yet
        print("sipgrad: interrupted", file=sys.stderr)
        return 130
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
