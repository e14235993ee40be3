"""`siglip compact DIR`: fold a collection's segments into one, dropping deleted and replaced embeddings.

Atomic (one state-file rename is the commit; a kill before it leaves the collection as it was), refused while
a sync writes the folder, and search results are the same before and after. See `siglip.bulk.compact`.
"""

from __future__ import annotations

import argparse
from typing import Any

from .common import check_positive


def register(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "compact",
        help="fold a collection's segments into one (drops deleted and replaced embeddings)",
        description="Rewrite the collection of `siglip embed SOURCE --out DIR` as one segment of its live items.",
    )
    parser.add_argument("folder", metavar="DIR", help="the --out folder of `siglip embed`")
    parser.add_argument("--shard-size", type=int, default=4096, help="items per shard (default: %(default)s)")
    parser.add_argument("--format", default="npy", choices=("npy", "safetensors"), help="shard file format")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..bulk import compact

    check_positive(args.shard_size, "--shard-size")
    print(compact(args.folder, shard_size=args.shard_size, fmt=args.format).line())
    return 0
