"""The `siglip` command line: `siglip classify | embed | search | index | train ...` (`siglip COMMAND --help`).

Every deliberate error ends the run with a one-line `siglip: error: ...` message on stderr and exit code 2;
an interrupted run exits with 130.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import classify, embed, index, search, train
from .common import run_reporting_errors

COMMANDS = (classify, embed, search, index, train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="siglip", description="SigLIP / SigLIP2 image-text models.")
    parser.add_argument("--version", action="version", version=f"siglip {_version()}")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(subcommands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `siglip` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_reporting_errors(args.run, args, "siglip")


def _version() -> str:
    from .. import __version__

    return __version__


if __name__ == "__main__":
    sys.exit(main())
