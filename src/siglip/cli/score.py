"""`siglip score PAIRS --image-column C --text-column C --out DIR`: sigmoid score and cosine per image-text pair.

PAIRS is a CSV/Parquet/JSON-lines table (image paths relative to its folder) or webdataset tars (each sample's
image with its caption). The run is a resumable bulk job in DIR (re-run the same command after a kill or
Ctrl-C: finished shards are kept); the result is DIR/scores.parquet, one row per pair in source order, bad
pairs recorded with their status and error. See `siglip.bulk.score`.
"""

from __future__ import annotations

import argparse
from typing import Any

from .common import add_model_arguments, check_positive, progress_bar, shown, warn


def register(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "score",
        help="score image-text pairs (sigmoid score and cosine) into Parquet",
        description="The model's sigmoid score and cosine for every image-text pair of a table or webdataset.",
    )
    parser.add_argument("pairs", metavar="PAIRS", help="a .csv/.parquet/.jsonl table, or a webdataset .tar or folder")
    parser.add_argument("--image-column", default=None, help="the table column of image paths")
    parser.add_argument("--text-column", default=None, help="the table column of texts")
    parser.add_argument("--key", default=None, help="a unique row-key column (default: the row number)")
    parser.add_argument("--out", "-o", required=True, help="the job folder; the result is OUT/scores.parquet")
    parser.add_argument("--shard-size", type=int, default=4096, help="pairs per shard (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=None, help="image decoding threads (default: up to 4)")
    parser.add_argument(
        "--ignore-exif", action="store_true", help="keep the stored orientation (default: apply EXIF, as transformers)"
    )
    add_model_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..bulk.score import score_pairs

    check_positive(args.workers, "--workers")
    check_positive(args.shard_size, "--shard-size")
    check_positive(args.batch_size, "--batch-size")

    def make_bar(total: int, initial: int) -> Any:
        bar = progress_bar(total, args, unit="pair")
        bar.update(initial)
        return bar

    summary = score_pairs(
        args.pairs,
        args.out,
        model=str(args.model),
        image_column=args.image_column,
        text_column=args.text_column,
        key=args.key,
        revision=args.revision,
        shard_size=args.shard_size,
        batch_size=args.batch_size,
        dtype=args.dtype,
        device=args.device,
        workers=args.workers,
        honor_exif=not args.ignore_exif,
        use_fast=args.fast_preprocess,
        fast_decode=args.fast_decode,
        make_bar=make_bar,
    )
    for note in summary.notes:
        warn(note)
    print(summary.line())
    print(f"wrote {shown(summary.path)}")
    return 0 if summary.ok else 1
