"""`siglip classify IMAGE_OR_DIR... --labels cat dog`: zero-shot scores per image, as a table or JSON lines."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import ImageError, InputError
from ..prompt_template import DEFAULT_TEMPLATE, check_template
from .common import add_model_arguments, check_positive, load_model_and_processor, progress_bar, shown, warn


def register(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "classify",
        help="zero-shot classification of images against free-text labels",
        description="Score each image against every label (sigmoid probabilities, independent per label).",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR", help="image files, folders or http(s) URLs")
    parser.add_argument(
        "--labels",
        "-l",
        nargs="+",
        required=True,
        help="candidate labels: several words, or one comma list (its blank items dropped); '' is a valid label",
    )
    parser.add_argument(
        "--template",
        default=None,
        help="prompt template with {} for the label (default: the model's own, a 'hypothesis_template' in its "
        f"config.json, else {DEFAULT_TEMPLATE!r})",
    )
    parser.add_argument("--top-k", "-k", type=int, default=None, help="keep the k best labels per image")
    parser.add_argument(
        "--json", action="store_true", help='print JSON lines: {"image": ..., "results": [...]} per image'
    )
    parser.add_argument("--skip-errors", action="store_true", help="report unreadable images and go on")
    parser.add_argument(
        "--ignore-exif", action="store_true", help="keep the stored orientation (default: apply EXIF, as transformers)"
    )
    add_model_arguments(parser)
    parser.set_defaults(run=run)


def parse_labels(values: list[str]) -> list[str]:
    """`--labels cat dog` (taken as given; an empty string is a label, as in the pipeline) or
    `--labels "cat, dog"` (one value with commas is split; its blank items are dropped)."""
    if len(values) == 1 and "," in values[0]:
        labels = [part.strip() for part in values[0].split(",") if part.strip()]
        if not labels:
            raise InputError(f"--labels {values[0]!r} lists no label: give at least one.")
        return labels
    return list(values)


def run(args: argparse.Namespace) -> int:
    from ..image.batches import expand_image_paths
    from ..zero_shot import ZeroShotImageClassificationPipeline, rank_labels

    labels = parse_labels(args.labels)
    check_positive(args.top_k, "--top-k")
    if args.template is not None:
        check_template(args.template, "--template (hypothesis_template)")
    paths = expand_image_paths(args.images)
    if not paths:
        raise InputError(f"no image files found in {[shown(name) for name in args.images]}")
    model, processor = load_model_and_processor(args)
    pipe = ZeroShotImageClassificationPipeline(model, processor, batch_size=args.batch_size)
    template = pipe.template(args.template)

    failures = 0
    with progress_bar(len(paths), args) as bar:
        for index, scores in pipe.iter_scores(
            paths, labels, template, skip_errors=args.skip_errors, honor_exif=not args.ignore_exif
        ):
            bar.update(1)
            if isinstance(scores, ImageError):
                failures += 1
                warn(f"skipped {shown(paths[index])}: {scores}")
                record = {"image": paths[index], "error": str(scores)}
            else:
                record = {"image": paths[index], "results": rank_labels(scores.tolist(), labels, args.top_k)}
            print_record(record, args.json)
    if failures:
        warn(f"{failures} of {len(paths)} images could not be read")
    return 1 if failures == len(paths) else 0


def print_record(record: dict[str, Any], as_json: bool) -> None:
    """One image's result as it comes: a JSON line, or a table block (path, then `score  label` from the best)."""
    if as_json:
        print(json.dumps(record, ensure_ascii=False), flush=True)
        return
    print(shown(record["image"]))
    if "error" in record:
        print(f"  error: {record['error']}")
        return
    for result in record["results"]:
        print(f"  {result['score']:8.4f}  {shown(result['label']) or repr('')}")
