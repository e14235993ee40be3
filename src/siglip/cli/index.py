"""`siglip index DIR`: build the ANN (usearch HNSW) index of an embedded collection and report its recall@k."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import InputError

# CLI names (those of --dtype elsewhere, and the old usearch ones) -> usearch's names
VECTOR_DTYPES = {
    "fp32": "f32",
    "float32": "f32",
    "f32": "f32",
    "fp16": "f16",
    "float16": "f16",
    "f16": "f16",
    "bf16": "bf16",
    "bfloat16": "bf16",
    "i8": "i8",
    "int8": "i8",
}


def register(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "index",
        help="build an approximate-nearest-neighbour index over an embedded collection",
        description="Build ann.usearch beside the shards of `siglip embed ... --out DIR` (needs siglip[ann]).",
    )
    parser.add_argument("folder", metavar="DIR", help="the --out folder of a bulk `siglip embed` job")
    parser.add_argument(
        "--dtype",
        default="fp16",
        choices=sorted(VECTOR_DTYPES),
        help="stored vector type: fp32, fp16, bf16 or i8 (also float32/f32, float16/f16, bfloat16, int8) "
        "(default: %(default)s)",
    )
    parser.add_argument("--connectivity", type=int, default=16, help="HNSW edges per node (default: %(default)s)")
    parser.add_argument("--expansion-add", type=int, default=128, help="build-time beam (default: %(default)s)")
    parser.add_argument("--expansion-search", type=int, default=64, help="search-time beam (default: %(default)s)")
    parser.add_argument("--recall-queries", type=int, default=1000, help="queries for recall@10 (default: %(default)s)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..bulk.index import Index

    if min(args.connectivity, args.expansion_add, args.expansion_search, args.recall_queries) < 1:
        raise InputError("--connectivity, --expansion-add, --expansion-search and --recall-queries must be >= 1")
    index = Index.open(args.folder)
    info = index.build_ann(
        dtype=VECTOR_DTYPES[args.dtype],
        connectivity=args.connectivity,
        expansion_add=args.expansion_add,
        expansion_search=args.expansion_search,
        queries=args.recall_queries,
    )
    print(
        f"indexed {info.count} vectors (D={info.dim}, {info.dtype}) in {info.build_seconds:.1f}s; "
        f"recall@{info.k} vs exact search: {info.recall_at_k:.4f} on {info.queries} queries"
    )
    return 0
