"""`siglip train --output-dir OUT --data DATA (--config config.json --tokenizer spiece.model | --model ID)`.

Trains or fine-tunes a SigLIP model with the sigmoid loss; run it under `torchrun` for DDP or FSDP2. See
`siglip.train` for the options (one flag per `TrainConfig` field).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from .common import run_reporting_errors, warn


def register(subcommands: Any) -> None:
    from ..train.config import TrainConfig

    parser = subcommands.add_parser(
        "train",
        help="train from scratch, fine-tune or LiT-tune a model with the sigmoid loss (torchrun for DDP/FSDP)",
        description="Train a SigLIP model: from a config (--config + --tokenizer) or a checkpoint (--model). "
        "Under torchrun every rank runs this same command.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    TrainConfig.add_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..train import TrainConfig, train

    config = TrainConfig.from_args(args)
    if os.environ.get("RANK", "0") == "0":
        for note in config.notes():
            warn(f"warning: {note}")
    summary = train(config)
    if not args.quiet and os.environ.get("RANK", "0") == "0":
        print(json.dumps({"summary": summary}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m siglip.train`: the `train` subcommand alone, with the CLI's error handling."""
    from ..train.config import TrainConfig

    parser = argparse.ArgumentParser(
        prog="python -m siglip.train",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error")
    TrainConfig.add_arguments(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return run_reporting_errors(run, args, "siglip train")
