"""Generate docs/cli.md from the real argument parsers: `python -m sipgrad_cli.reference > docs/cli.md`."""

from __future__ import annotations

import os


def render() -> str:
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal width; fix it for stable docs
    from sipgrad_cli.main import build_parser

    parser = build_parser()
    parts = ["# CLI reference", "",
             "Generated from the parsers by `python -m sipgrad_cli.reference > docs/cli.md`; a test keeps it current.",
             ""]
    _section(parser, "sipgrad", parts)
    return "\n".join(parts)


def _section(parser, title: str, parts: list[str]) -> None:
    """``parser``'s help under ``## title``, then each of its subcommands' (``fwdgrad train``, ...) in turn."""
    heading = "#" * (2 + max(0, title.count(" ") - 1))  # sipgrad and its commands: ##; their subcommands: ###
    parts += [f"{heading} {title}", "", "```", parser.format_help().rstrip(), "```", ""]
    sub = next((a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"), None)
    for name, command in (sub.choices.items() if sub else ()):
        _section(command, f"{title} {name}", parts)


if __name__ == "__main__":
    print(render(), end="")
