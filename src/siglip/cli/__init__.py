"""The `siglip` command line: `siglip classify | embed | search | index | serve | train | eval ...` (`siglip COMMAND --help`).

Every input mistake ends the run with a one-line `siglip: error: ...` message on stderr and exit code 2; a bug
says `siglip: internal error: ...` (exit code 1; `siglip --debug COMMAND ...` shows its traceback); an
interrupted run exits with 130, a closed stdout pipe (`| head`) quietly with 141.

Adding a command: a module `cli/NAME.py` with `register(subcommands)` (its parser; `set_defaults(run=run)`)
and `run(args) -> int`, plus its name in `COMMANDS`. A command module imports nothing heavy at the top (torch,
numpy, model code: inside `run`), so that `siglip --help` stays fast; tests/test_cli_errors.py checks it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence

from .common import run_reporting_errors

COMMANDS = (
    "classify",
    "embed",
    "search",
    "index",
    "serve",
    "train",
    "export",
    "quantize",
    "score",
    "dedup",
    "compact",
    "doctor",
    "eval",
    "convert",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="siglip", description="SigLIP / SigLIP2 image-text models.")
    parser.add_argument("--version", action="version", version=f"siglip {_version()}")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f".{name}", __name__).register(subcommands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `siglip` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # File names that are not UTF-8 (surrogate escapes) must not make a print fail: escape what cannot be encoded.
    errors = getattr(sys.stdout, "errors", None)
    if errors == "strict" and hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_line  # one `siglip: warning: ...` line, not Python's file:line + source
            return run_reporting_errors(args.run, args, "siglip")
    finally:
        if errors == "strict" and hasattr(sys.stdout, "reconfigure"):
            sys.stdout.reconfigure(errors=errors)


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"siglip: warning: {message}", file=sys.stderr)


def _version() -> str:
    from .. import __version__

    return __version__


if __name__ == "__main__":
    sys.exit(main())
