"""`siglip search DIR "a dog on a beach"` (text -> items) or `--image query.jpg` (image -> items): top-k table or JSON.

DIR is the output folder of `siglip embed SOURCE --out DIR`. Search is exact by default; `--ann` answers from
the graph `siglip index DIR` built (a graph older than the collection is not used: exact search answers, with a
warning). `--under`, `--glob` and `--where` filter the items before the top-k. `--json` prints JSON lines.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import InputError
from .common import DEFAULT_DEVICE, DTYPES, add_format_argument


def register(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "search",
        help="search an embedded collection by text or by image",
        description="Top-k items of a `siglip embed ... --out DIR` collection for texts or query images.",
    )
    parser.add_argument("folder", metavar="DIR", help="the --out folder of a bulk `siglip embed` job")
    parser.add_argument("queries", nargs="*", metavar="TEXT", help="text queries")
    parser.add_argument("--image", nargs="+", default=None, metavar="IMAGE", help="query images (image -> image)")
    add_format_argument(parser)
    parser.add_argument("--top-k", "-k", type=int, default=10, help="results per query (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per query (JSON lines)")
    parser.add_argument("--under", default=None, metavar="FOLDER", help="only items under this source subfolder")
    parser.add_argument("--glob", default=None, metavar="PATTERN", help="only items whose path matches, e.g. '*.png'")
    parser.add_argument(
        "--where",
        action="append",
        default=None,
        metavar="COLUMN=VALUE",
        help="only rows of a table source whose COLUMN equals VALUE (repeatable: all must hold)",
    )
    parser.add_argument("--ann", action="store_true", help="use the ANN index of `siglip index DIR` (approximate)")
    parser.add_argument("--model", "-m", default=None, help="encoder of the queries (default: the one of the job)")
    parser.add_argument("--device", default=DEFAULT_DEVICE, help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    parser.add_argument("--dtype", default="auto", choices=sorted(DTYPES), help="dtype of the query encoder")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..bulk.index import Index

    if bool(args.queries) == bool(args.image):
        raise InputError("give text queries or --image files, not both and not neither")
    if args.top_k < 1:
        raise InputError(f"--top-k must be >= 1, got {args.top_k}")
    index = Index.open(args.folder)
    mask = None
    if args.under is not None or args.glob is not None or args.where:
        mask = index.select(under=args.under, glob=args.glob, where=args.where)
    ann = args.ann and not _stale_ann(index)
    model = processor = None
    name = args.model or index.model_name
    if args.model is not None or args.device != "cpu" or args.dtype != "auto":
        from ..runtime import load_model_and_processor

        model, processor = load_model_and_processor(name, dtype=args.dtype, device=args.device)
    if args.image:
        queries = list(args.image)
        results = index.search_image(queries, args.top_k, ann=ann, model=model, processor=processor, mask=mask)
    else:
        queries = list(args.queries)
        results = index.search_text(queries, args.top_k, ann=ann, model=model, processor=processor, mask=mask)
    if args.json:
        for query, hits in zip(queries, results):
            record = {"query": query, "results": [{"path": h.path, "score": h.score, "index": h.index} for h in hits]}
            print(json.dumps(record, ensure_ascii=False))
        return 0
    for query, hits in zip(queries, results):
        print(query)
        for rank, hit in enumerate(hits, 1):
            print(f"{rank:>4}  {hit.score:8.4f}  {hit.path}")
    return 0


def _stale_ann(index: Any) -> bool:
    """True (after a warning) when the ANN graph no longer matches the collection: exact search answers."""
    from ..bulk.index import StaleAnnError
    from .common import warn

    try:
        index.ann()
    except StaleAnnError as error:
        warn(f"{error}; answering with exact search")
        return True
    return False
