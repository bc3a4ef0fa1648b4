"""MkDocs hook: the command-line reference is written from the parser itself before every build, so it cannot drift
from the flags the program accepts."""

from __future__ import annotations

import argparse
from pathlib import Path

CLI_PAGE = Path(__file__).parent / "reference" / "cli.md"


def cli_reference() -> str:
    """Markdown of every command's usage and options, from `infinimodal.parser.build_parser`."""
    from infinimodal.parser import build_parser

    parser = build_parser()
    lines = ["# Command-line reference", "", "Generated from the parser (`infinimodal.parser`) at every build.", ""]
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in subparsers.choices.items():
        lines += [f"## `infinimodal {name}`", "", "```text", command.format_help().rstrip(), "```", ""]
    return "\n".join(lines)


def on_pre_build(config, **kwargs) -> None:
    CLI_PAGE.parent.mkdir(parents=True, exist_ok=True)
    text = cli_reference()
    if not CLI_PAGE.is_file() or CLI_PAGE.read_text() != text:
        CLI_PAGE.write_text(text)
