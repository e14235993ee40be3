"""What every `siglip` subcommand shares: model options, dtype/device parsing, progress bars, error exits."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from ..errors import InputError, SiglipError

DEFAULT_MODEL = "google/siglip-base-patch16-224"
DTYPES = {
    "auto": "auto",
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --device, --dtype, --batch-size, --revision, --no-progress, --fast-decode, --fast-preprocess."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", "-m", default=DEFAULT_MODEL, help="Hub id or local folder (default: %(default)s)")
    group.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    group.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
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


def load_model_and_processor(args: argparse.Namespace) -> tuple[Any, Any]:
    """The model and processor `--model` names, on `--device` in `--dtype`, in eval mode."""
    from ..auto import AutoModel
    from ..encode import load_processor

    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    hub = {"revision": args.revision} if args.revision else {}
    processor = load_processor(
        args.model,
        use_fast=getattr(args, "fast_preprocess", False),
        fast_decode=getattr(args, "fast_decode", False),
        **hub,
    )
    model = AutoModel.from_pretrained(args.model, dtype=DTYPES[args.dtype], device=args.device, **hub)
    return model.eval(), processor


def progress_bar(total: int, args: argparse.Namespace, unit: str = "img") -> Any:
    """A tqdm bar on stderr for long jobs; silent for short ones, with --no-progress or when not a terminal."""
    from tqdm.auto import tqdm

    quiet = args.no_progress or total <= args.batch_size
    return tqdm(total=total, unit=unit, dynamic_ncols=True, file=sys.stderr, disable=True if quiet else None)


def warn(message: str) -> None:
    print(f"siglip: {message}", file=sys.stderr)


def run_reporting_errors(run: Any, args: Any, prog: str) -> int:
    """`run(args)` with the CLI's contract: a `SiglipError` becomes one `PROG: error: ...` line and exit code 2,
    Ctrl-C exit code 130."""
    try:
        return run(args) or 0
    except SiglipError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
