"""`siglip classify IMAGE_OR_DIR... --labels cat dog`: zero-shot scores per image, as a table or JSON."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import ImageError, InputError
from .common import add_model_arguments, load_model_and_processor, progress_bar, warn

DEFAULT_TEMPLATE = "This is a photo of {}."  # the pipeline's (zero_shot.DEFAULT_TEMPLATE); not imported: torch


def register(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "classify",
        help="zero-shot classification of images against free-text labels",
        description="Score each image against every label (sigmoid probabilities, independent per label).",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR", help="image files, folders or http(s) URLs")
    parser.add_argument(
        "--labels", "-l", nargs="+", required=True, help="candidate labels (several words, or one comma list)"
    )
    parser.add_argument("--template", default=DEFAULT_TEMPLATE, help="prompt template (default: %(default)r)")
    parser.add_argument("--top-k", type=int, default=None, help="keep the k best labels per image")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--skip-errors", action="store_true", help="report unreadable images and go on")
    parser.add_argument(
        "--ignore-exif", action="store_true", help="keep the stored orientation (default: apply EXIF, as transformers)"
    )
    add_model_arguments(parser)
    parser.set_defaults(run=run)


def parse_labels(values: list[str]) -> list[str]:
    """`--labels cat dog` or `--labels "cat, dog"`: one comma-separated value is split."""
    labels = [part.strip() for part in values[0].split(",")] if len(values) == 1 else list(values)
    if not any(labels):
        raise InputError("--labels is empty: give at least one label.")
    return labels


def run(args: argparse.Namespace) -> int:
    from ..image.batches import expand_image_paths
    from ..zero_shot import ZeroShotImageClassificationPipeline, rank_labels

    labels = parse_labels(args.labels)
    if args.top_k is not None and args.top_k < 1:
        raise InputError(f"--top-k must be >= 1, got {args.top_k}")
    if "{}" not in args.template:
        raise InputError(f"--template must contain '{{}}' where the label goes, got {args.template!r}")
    paths = expand_image_paths(args.images)
    if not paths:
        raise InputError(f"no image files found in {args.images}")
    model, processor = load_model_and_processor(args)
    pipe = ZeroShotImageClassificationPipeline(model, processor, batch_size=args.batch_size)

    records, failures = [], 0
    with progress_bar(len(paths), args) as bar:
        for index, scores in pipe.iter_scores(
            paths, labels, args.template, skip_errors=args.skip_errors, honor_exif=not args.ignore_exif
        ):
            bar.update(1)
            if isinstance(scores, ImageError):
                failures += 1
                warn(f"skipped {paths[index]}: {scores}")
                records.append({"image": paths[index], "error": str(scores)})
                continue
            records.append({"image": paths[index], "results": rank_labels(scores.tolist(), labels, args.top_k)})
    if args.json:
        json.dump(records, sys.stdout, indent=2)
        print()
    else:
        print_table(records)
    if failures:
        warn(f"{failures} of {len(paths)} images could not be read")
    return 1 if failures == len(paths) else 0


def print_table(records: list[dict[str, Any]]) -> None:
    """One block per image: path, then `score  label` lines from the best."""
    for record in records:
        print(record["image"])
        if "error" in record:
            print(f"  error: {record['error']}")
            continue
        for result in record["results"]:
            print(f"  {result['score']:8.4f}  {result['label']}")
