"""`siglip eval TASK DATASET --model M [--model M2] [--dtype fp32 --dtype int8] [--out results.json]`: zero-shot,
retrieval or linear-probe metrics of one or more models / precisions on a dataset, as a table (and JSON, a chart).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import InputError
from .common import DEFAULT_DEVICE, DTYPES, check_positive, warn

TASK_NAMES = ("zero-shot", "retrieval", "linear-probe")


def register(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "eval",
        help="measure models on your data: zero-shot, retrieval, linear probe",
        description=(
            "Evaluate one or more models (and precisions) on a dataset: a class-folder tree (DIR/CLASS/IMG, or "
            "DIR/train|test/CLASS/IMG), a CSV/JSONL/Parquet table (image/path, label, caption/text, split columns), "
            "webdataset tars (.cls/.txt/.json) or a Karpathy-split caption JSON. Image features are cached and "
            "resumable: another template, another probe or a re-run after a kill embeds no finished image again."
        ),
    )
    parser.add_argument("task", choices=TASK_NAMES, help="what to measure")
    parser.add_argument("dataset", help="dataset folder, table, .tar / folder of tars, or caption .json")
    data = parser.add_argument_group("dataset")
    data.add_argument("--classnames", default=None, help="class names: one per line, a JSON list, or a JSON object")
    data.add_argument("--split", default=None, help="split to evaluate (default: test/val when the data has splits)")
    data.add_argument("--image-column", default=None, help="table column of image paths (default: image or path)")
    data.add_argument("--label-column", default=None, help="table column of labels (default: label)")
    data.add_argument("--caption-column", default=None, help="table column of captions (default: caption or text)")
    data.add_argument("--images-root", default=None, help="folder the caption JSON's images are relative to")
    task = parser.add_argument_group("task")
    task.add_argument(
        "--templates",
        default=None,
        help="prompt templates (file: one per line or a JSON list; several make an ensemble). Default: the model's own",
    )
    task.add_argument("--template", action="append", default=None, help="a prompt template with {} (repeatable)")
    task.add_argument("--ks", type=int, nargs="+", default=[1, 5, 10], help="retrieval recall@k (default: 1 5 10)")
    task.add_argument(
        "--shots", type=int, nargs="*", default=[1, 2, 4, 8, 16], help="k-shot probes (default: 1 2 4 8 16)"
    )
    task.add_argument("--seeds", type=int, default=3, help="seeds per k-shot probe (default: %(default)s)")
    task.add_argument(
        "--save", default=None, help="linear-probe: write the probe as a SiglipForImageClassification folder"
    )
    output = parser.add_argument_group("output")
    output.add_argument("--out", default=None, help="write results as JSON (CLIP_benchmark's keys)")
    output.add_argument("--plot", default=None, help="write a chart (PNG): accuracy vs speed, recall@k curves")
    output.add_argument("--per-class", action="store_true", help="print per-class recall")
    output.add_argument("--confusion", action="store_true", help="print the confusion matrix (classification)")
    model = parser.add_argument_group("model")
    model.add_argument("--model", "-m", action="append", required=True, help="Hub id or local folder (repeatable)")
    model.add_argument(
        "--dtype", action="append", default=None, choices=sorted(DTYPES), help="precision (repeatable; default auto)"
    )
    model.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    model.add_argument("--device", default=DEFAULT_DEVICE, help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    model.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: %(default)s)")
    model.add_argument("--workers", type=int, default=None, help="image decoding threads (default: up to 4)")
    model.add_argument("--cache-dir", default=None, help="image feature cache (default: ~/.cache/siglip/eval)")
    model.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    model.add_argument("--fast-decode", action="store_true", help="decode JPEGs at a reduced scale (approximate)")
    model.add_argument("--fast-preprocess", action="store_true", help="batched torch image resize (approximate)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import warnings

    from ..eval import ModelSpec, evaluate, format_table, read_dataset, write_json
    from ..eval.datasets import read_lines_or_json

    check_positive(args.batch_size, "--batch-size")
    check_positive(args.workers, "--workers")
    check_positive(args.seeds, "--seeds")
    for k in [*args.ks, *args.shots]:
        check_positive(k, "--ks / --shots")
    if args.save and args.task != "linear-probe":
        raise InputError("--save writes a linear probe: use it with the linear-probe task")
    templates = None
    if args.templates:
        templates = read_lines_or_json(args.templates, "prompt templates")
    if args.template:
        templates = (templates or []) + list(args.template)
    data = read_dataset(
        args.dataset,
        classnames=args.classnames,
        image_column=args.image_column,
        label_column=args.label_column,
        caption_column=args.caption_column,
        images_root=args.images_root,
    )
    specs = [
        ModelSpec(
            name,
            dtype=dtype,
            device=args.device,
            revision=args.revision,
            use_fast=args.fast_preprocess,
            fast_decode=args.fast_decode,
        )
        for name in args.model
        for dtype in (args.dtype or ["auto"])
    ]
    warn(data.describe())

    def make_bar(total: int, description: str) -> Any:
        from tqdm.auto import tqdm

        quiet = args.no_progress or total <= args.batch_size
        return tqdm(total=total, unit="img", desc=description, file=sys.stderr, disable=True if quiet else None)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = _show_warning
        results = evaluate(
            args.task,
            data,
            specs,
            templates=templates,
            split=args.split,
            cache_dir=args.cache_dir,
            batch_size=args.batch_size,
            workers=args.workers,
            ks=args.ks,
            shots=args.shots,
            seeds=range(args.seeds),
            save=args.save,
            make_bar=make_bar,
        )
    print(format_table(results, per_class=args.per_class))
    if args.confusion:
        for result in results:
            if "confusion" in result.details:
                print(_confusion(result))
    if args.out:
        write_json(results, args.out)
        warn(f"results written to {args.out}")
    if args.plot:
        from ..eval.plot import plot_results

        plot_results(results, args.plot)
        warn(f"chart written to {args.plot}")
    if args.save:
        warn(f"probe written to {args.save} (load it with AutoModelForImageClassification.from_pretrained)")
    return 0


def _show_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    warn(f"warning: {message}")


def _confusion(result: Any) -> str:
    names = result.details["classnames"]
    width = max(6, *(len(n) for n in names))
    lines = [f"{result.label}: confusion matrix (rows: true class, columns: predicted)"]
    lines.append(" " * width + " " + " ".join(f"{n[:6]:>6}" for n in names))
    for name, row in zip(names, result.details["confusion"]):
        lines.append(f"{name:<{width}} " + " ".join(f"{v:>6}" for v in row))
    return "\n".join(lines)
