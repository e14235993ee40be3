"""`siglip dedup DIR --threshold 0.95`: the near-duplicate groups of a collection, written as a table.

Exact by default (tiled matmul over the whole collection in bounded memory); `--ann` asks the graph of
`siglip index DIR` instead (approximate, for millions of items). The table (`--out`, Parquet or CSV by its
suffix; default DIR/duplicates.parquet, or .csv without pyarrow) has one row per item in a group: `group`,
`path`, `key`, `score` (cosine to the group's representative) and `representative`. See `siglip.bulk.dedup`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import check_positive, shown


def register(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "dedup",
        help="find near-duplicate groups in an embedded collection",
        description="Groups of items whose embeddings have cosine >= --threshold (connected components).",
    )
    parser.add_argument("folder", metavar="DIR", help="the --out folder of `siglip embed`")
    parser.add_argument("--threshold", "-t", type=float, default=0.95, help="cosine threshold (default: %(default)s)")
    parser.add_argument("--out", "-o", default=None, help="table to write: .parquet or .csv (default: in DIR)")
    parser.add_argument("--ann", action="store_true", help="use the ANN index of `siglip index DIR` (approximate)")
    parser.add_argument("--k", type=int, default=16, help="--ann: neighbours looked at per item (default: %(default)s)")
    parser.add_argument("--block", type=int, default=4096, help="rows per tile (memory ~ 10 x block^2 bytes)")
    parser.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..bulk.dedup import near_duplicates, write_groups
    from ..bulk.index import Index
    from ..bulk.writer import manifest_format
    from .common import progress_bar

    check_positive(args.k, "--k")
    check_positive(args.block, "--block")
    index = Index.open(args.folder)
    out = Path(args.out) if args.out else Path(args.folder) / f"duplicates.{manifest_format()}"
    args.batch_size = args.block  # progress_bar stays quiet for a single block
    with progress_bar(len(index), args, unit="item") as bar:
        groups = near_duplicates(index, args.threshold, ann=args.ann, k=args.k, block=args.block, progress=bar.update)
    write_groups(index, groups, out)
    print(f"{groups.line()}; wrote {shown(out)}")
    return 0
