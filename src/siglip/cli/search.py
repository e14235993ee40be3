"""`siglip search DIR "a dog on a beach"` (text -> items) or `--image query.jpg` (image -> items): top-k table or JSON.

DIR is the output folder of `siglip embed SOURCE --out DIR`. Search is exact by default; `--ann` answers from
the graph `siglip index DIR` built.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import InputError


def register(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "search",
        help="search an embedded collection by text or by image",
        description="Top-k items of a `siglip embed ... --out DIR` collection for texts or query images.",
    )
    parser.add_argument("folder", metavar="DIR", help="the --out folder of a bulk `siglip embed` job")
    parser.add_argument("queries", nargs="*", metavar="TEXT", help="text queries")
    parser.add_argument("--image", nargs="+", default=None, metavar="IMAGE", help="query images (image -> image)")
    parser.add_argument("--top-k", "-k", type=int, default=10, help="results per query (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--ann", action="store_true", help="use the ANN index of `siglip index DIR` (approximate)")
    parser.add_argument("--model", "-m", default=None, help="encoder of the queries (default: the one of the job)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..index import Index

    if bool(args.queries) == bool(args.image):
        raise InputError("give text queries or --image files, not both and not neither")
    if args.top_k < 1:
        raise InputError(f"--top-k must be >= 1, got {args.top_k}")
    index = Index.open(args.folder)
    model = processor = None
    name = args.model or index.model_name
    if args.model is not None or args.device != "cpu":
        from ..auto import AutoModel, AutoProcessor

        model = AutoModel.from_pretrained(name, device=args.device).eval()
        processor = AutoProcessor.from_pretrained(name)
    if args.image:
        queries = list(args.image)
        results = index.search_image(queries, args.top_k, ann=args.ann, model=model, processor=processor)
    else:
        queries = list(args.queries)
        results = index.search_text(queries, args.top_k, ann=args.ann, model=model, processor=processor)
    if args.json:
        records = [
            {"query": query, "results": [{"path": h.path, "score": h.score, "index": h.index} for h in hits]}
            for query, hits in zip(queries, results)
        ]
        print(json.dumps(records, ensure_ascii=False, indent=1))
        return 0
    for query, hits in zip(queries, results):
        print(query)
        for rank, hit in enumerate(hits, 1):
            print(f"{rank:>4}  {hit.score:8.4f}  {hit.path}")
    return 0
