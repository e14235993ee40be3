"""`siglip convert SRC --out DIR [--to hub|open_clip|big_vision]`: move a checkpoint between formats.

SRC is a Hub id or folder (Hub layout or open_clip / timm), or a big_vision `.npz` (see siglip/foreign/).
"""

from __future__ import annotations

import argparse
from typing import Any

TARGETS = ("hub", "open_clip", "big_vision")


def register(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "convert",
        help="convert open_clip / timm and big_vision .npz checkpoints to the Hub layout, and back",
        description="Write SRC into DIR in the --to format. The Hub layout (config.json, model.safetensors, tokenizer "
        "and processor files) loads in siglip and transformers; open_clip writes open_clip_config.json + "
        "open_clip_model.safetensors; big_vision writes a .npz named by its variant.",
    )
    parser.add_argument("source", metavar="SRC", help="Hub id, folder (Hub or open_clip layout) or big_vision .npz")
    parser.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder (created if needed)")
    parser.add_argument("--to", default="hub", choices=TARGETS, help="target format (default: %(default)s)")
    parser.add_argument(
        "--variant",
        default=None,
        help="big_vision variant when the .npz name does not say it: siglip, siglip-i18n, siglip2, siglip2-naflex "
        "or a release name such as webli_en_b16_224",
    )
    parser.add_argument(
        "--tokenizer", default=None, metavar="FOLDER_OR_ID", help="tokenizer for a source without one (big_vision)"
    )
    parser.add_argument(
        "--allow-pickle", action="store_true", help="read a pickle checkpoint (torch.load with weights_only=True)"
    )
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..formats.convert import convert

    written = convert(
        args.source,
        args.out,
        to=args.to,
        variant=args.variant,
        tokenizer=args.tokenizer,
        allow_pickle=args.allow_pickle,
        revision=args.revision,
    )
    for path in written:
        print(path)
    return 0
