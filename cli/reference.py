"""Generate docs/cli.md from the real argument parsers: `python -m sipgrad_cli.reference > docs/cli.md`."""

from __future__ import annotations

import os


def render() -> str:
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal width; fix it for stable docs
    from sipgrad_cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    parts = ["# CLI reference", "",
             "Generated from the parsers by `python -m sipgrad_cli.reference > docs/cli.md`; a test keeps it current.",
             "", "## sipgrad", "", "```", parser.format_help().rstrip(), "```", ""]
    for name, command in sub.choices.items():
        parts += [f"## sipgrad {name}", "", "```", command.format_help().rstrip(), "```", ""]
    return "\n".join(parts)


if __name__ == "__main__":
    print(render(), end="")
