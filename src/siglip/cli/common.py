"""What every `siglip` subcommand shares: model options, dtype/device parsing, progress bars, error exits.

This module and every command module import nothing heavy at the top (no torch, numpy or model code): `siglip
--help` builds every subcommand's parser, and the work a command needs is imported inside its `run`.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Any

from ..errors import InputError, SiglipError
from ..runtime import DTYPES, load_options  # noqa: F401 - re-exported: the commands use them from here

DEFAULT_MODEL = "google/siglip-base-patch16-224"
DEFAULT_DEVICE = "auto"  # every command: CUDA when available, else CPU


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --device, --dtype, --batch-size, --revision, --no-progress, --fast-decode, --fast-preprocess."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", "-m", default=DEFAULT_MODEL, help="Hub id or local folder (default: %(default)s)")
    group.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    group.add_argument(
        "--device", default=DEFAULT_DEVICE, help="cpu, cuda, cuda:N or auto: CUDA if available (default: %(default)s)"
    )
    group.add_argument("--dtype", default="auto", choices=sorted(DTYPES), help="weights/activations dtype")
    group.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default: %(default)s)")
    group.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    group.add_argument(
        "--fast-decode", action="store_true", help="decode JPEGs at a reduced scale (faster, approximate)"
    )
    group.add_argument(
        "--fast-preprocess",
        action="store_true",
        help="batched torch image resize (the Fast image processor): faster, within one uint8 level of the exact path",
    )
    add_format_argument(group)


class AllowFormat(argparse.Action):
    """`--allow-format NAME[,NAME]`: extends the image formats this process decodes (`siglip.image.formats`),
    as soon as it is parsed, for every image the command reads (worker processes inherit it through
    SIGLIP_ALLOW_FORMATS). An unknown name is a usage error."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        from ..image.formats import allow_formats

        names = [name.strip() for name in str(values).split(",") if name.strip()]
        try:
            allow_formats(*names)
        except InputError as error:
            parser.error(str(error))
        inherited = [name for name in os.environ.get("SIGLIP_ALLOW_FORMATS", "").split(",") if name]
        os.environ["SIGLIP_ALLOW_FORMATS"] = ",".join(dict.fromkeys([*inherited, *names]))
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest, None) or []), *names])


def add_format_argument(parser: Any) -> None:
    """--allow-format, for every command that reads images."""
    parser.add_argument(
        "--allow-format",
        action=AllowFormat,
        default=[],
        metavar="NAME",
        help="also decode this image format (e.g. ICO, PSD, JPEG2000; 'all' for every format Pillow reads); "
        "by default only JPEG, PNG, WebP, GIF, TIFF and BMP (+ HEIF/AVIF with a plugin). Repeatable.",
    )


def load_model_and_processor(args: argparse.Namespace) -> tuple[Any, Any]:
    """The model and processor `--model` names, on `--device` in `--dtype`, in eval mode."""
    from .. import runtime

    check_positive(args.batch_size, "--batch-size")
    return runtime.load_model_and_processor(
        args.model,
        dtype=args.dtype,
        device=args.device,
        revision=args.revision,
        use_fast=getattr(args, "fast_preprocess", False),
        fast_decode=getattr(args, "fast_decode", False),
    )


def progress_bar(total: int, args: argparse.Namespace, unit: str = "img") -> Any:
    """A tqdm bar on stderr for long jobs; silent for short ones, with --no-progress or when not a terminal."""
    from tqdm.auto import tqdm

    quiet = args.no_progress or total <= args.batch_size
    return tqdm(total=total, unit=unit, dynamic_ncols=True, file=sys.stderr, disable=True if quiet else None)


def warn(message: str) -> None:
    print(f"siglip: {message}", file=sys.stderr)


def shown(text: Any) -> str:
    """`text` (a path, usually) as it is safe to print on one line: as is, unless it holds control characters
    (a newline in a file name) or bytes that are not UTF-8 (surrogate escapes): then its Python repr."""
    text = os.fspath(text) if isinstance(text, os.PathLike) else str(text)
    if text.isprintable() and not any("\ud800" <= char <= "\udfff" for char in text):
        return text
    return repr(text)


def check_positive(value: int | None, flag: str, minimum: int = 1) -> None:
    """`InputError` unless `value` is None or >= minimum (e.g. `--workers -2`)."""
    if value is not None and value < minimum:
        raise InputError(f"{flag} must be >= {minimum}, got {value}")


def run_reporting_errors(run: Any, args: Any, prog: str) -> int:
    """`run(args)` with the CLI's contract; returns the exit code.

    - an input mistake (a `SiglipError`, or an `OSError` naming a file: unreadable, unwritable, a folder where
      a file was expected) becomes one `PROG: error: ...` line on stderr and exit code 2;
    - Ctrl-C: exit code 130; stdout closed early (`siglip ... | head`): no message, exit code 141 as for SIGPIPE;
    - anything else is a bug: `PROG: internal error: ...` and exit code 1.
    With `--debug` (`args.debug`) the traceback is printed too (a bug's exception propagates unchanged).
    """
    debug = bool(getattr(args, "debug", False))
    try:
        code = run(args) or 0
        sys.stdout.flush()  # a closed pipe surfaces here, not at interpreter exit
        return code
    except BrokenPipeError:
        _silence_stdout()
        return 141
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except (SiglipError, OSError) as error:
        if isinstance(error, OSError) and not isinstance(error, SiglipError) and error.filename is None:
            if debug:
                raise
            return _report_bug(error, prog)
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {_describe(error)}", file=sys.stderr)
        return 2
    except Exception as error:
        if debug:
            raise
        return _report_bug(error, prog)


def _describe(error: BaseException) -> str:
    """A `SiglipError`'s message, or `PATH: reason` for an `OSError` about a file."""
    if isinstance(error, SiglipError) or not isinstance(error, OSError):
        return str(error)
    culprit = shown(error.filename) + (f" -> {shown(error.filename2)}" if error.filename2 else "")
    return f"{culprit}: {error.strerror or error}"


def _report_bug(error: BaseException, prog: str) -> int:
    print(
        f"{prog}: internal error: {type(error).__name__}: {error}\n"
        f"{prog}: this is a bug; run again with --debug for the traceback, and report it",
        file=sys.stderr,
    )
    return 1


def _silence_stdout() -> None:
    """After EPIPE: point stdout at /dev/null so that Python's final flush cannot raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (captured in tests)
        pass
