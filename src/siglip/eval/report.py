"""Results as people read them: a text table (metric, its 95 % interval, images/s, peak memory) with the
comparison of every run against the first, and JSON in CLIP_benchmark's result layout.

A CLIP_benchmark result file is one JSON object `{"dataset", "model", "pretrained", "task", "metrics", "language"}`;
`to_json` writes that object for one run, a list of them for several, each with a `siglip` key holding what
CLIP_benchmark has no field for (intervals, throughput, memory, the settings used, per-class details).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

from .run import EvalResult
from .stats import Comparison, compare

MAX_CONFUSION_CLASSES = 200  # a larger confusion matrix stays out of the JSON (ImageNet's would be 1M numbers)


def comparisons(results: Sequence[EvalResult]) -> list[tuple[EvalResult, EvalResult, Comparison]]:
    """Every later run against the first, on its headline metric (same items: same dataset and split)."""
    if len(results) < 2:
        return []
    first = results[0]
    return [
        (first, other, compare(first.outcomes, other.outcomes))
        for other in results[1:]
        if len(other.outcomes) == len(first.outcomes)
    ]


def record(result: EvalResult, comparison: Comparison | None = None) -> dict[str, Any]:
    """One run as a CLIP_benchmark result object (+ the `siglip` extras)."""
    extras: dict[str, Any] = {
        "dtype": result.dtype,
        "images": result.images,
        "headline": result.headline,
        "ci95": {key: list(value) for key, value in result.intervals.items()},
        "images_per_second": result.images_per_second,
        "peak_memory_mib": result.peak_memory_mib,
        "settings": result.settings,
        "details": {
            key: value
            for key, value in result.details.items()
            if key != "predictions" and not (key == "confusion" and len(value) > MAX_CONFUSION_CLASSES)
        },
    }
    if comparison is not None:
        extras["versus_first"] = {
            "difference": comparison.difference,
            "ci95": [comparison.low, comparison.high],
            "paired_bootstrap_p": comparison.bootstrap_p,
            "mcnemar_p": comparison.mcnemar_p,
            "discordant": [comparison.a_only, comparison.b_only],
            "significant": comparison.significant,
        }
    return {
        "dataset": result.dataset,
        "model": result.model,
        "pretrained": result.dtype,
        "task": result.task,
        "metrics": result.metrics,
        "language": "en",
        "siglip": extras,
    }


def to_json(results: Sequence[EvalResult]) -> Any:
    versus = {id(other): comparison for _, other, comparison in comparisons(results)}
    records = [record(result, versus.get(id(result))) for result in results]
    return records[0] if len(records) == 1 else records


def write_json(results: Sequence[EvalResult], path: str | os.PathLike) -> None:
    from pathlib import Path

    from ..files import atomic_write

    text = json.dumps(to_json(results), indent=1, default=_plain)
    atomic_write(Path(path), lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _percent(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value * 100:.1f}"


SHORT_NAMES = {
    "acc1": "top1",
    "acc5": "top5",
    "mean_per_class_recall": "mean/class",
    "lp_acc1": "probe top1",
    "lp_acc5": "probe top5",
    "lp_mean_per_class_recall": "probe mean/class",
    "zeroshot_acc1": "zero-shot top1",
}


def short_name(metric: str) -> str:
    """A column title for the table (the JSON keeps CLIP_benchmark's names)."""
    if metric in SHORT_NAMES:
        return SHORT_NAMES[metric]
    for prefix, title in (("image_retrieval_recall@", "t2i R@"), ("text_retrieval_recall@", "i2t R@")):
        if metric.startswith(prefix):
            return title + metric.removeprefix(prefix)
    if metric.startswith("lp_acc1_") and metric.endswith("shot"):
        return metric.removeprefix("lp_acc1_").removesuffix("shot") + "-shot"
    return metric


def format_table(results: Sequence[EvalResult], per_class: bool = False) -> str:
    """The runs as a text table, then their comparison with the first run, and the settings used."""
    if not results:
        return ""
    names = list(results[0].metrics)
    header = [
        "model",
        "dtype",
        *map(short_name, names),
        f"{short_name(results[0].headline)} 95% CI",
        "images/s",
        "peak MiB",
    ]
    rows = []
    for result in results:
        low, high = result.intervals.get(result.headline, (None, None))
        rows.append(
            [
                result.model,
                result.dtype,
                *[_percent(result.metrics.get(name)) for name in names],
                f"{_percent(low)}-{_percent(high)}",
                "-" if result.images_per_second is None else f"{result.images_per_second:.1f}",
                "-" if result.peak_memory_mib is None else f"{result.peak_memory_mib:.0f}",
            ]
        )
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [f"{results[0].dataset}: {results[0].task}, {results[0].images} images (metrics in %)"]
    if results[0].task == "zeroshot_retrieval":
        lines[0] += "; t2i: text -> image (image_retrieval_recall@k), i2t: image -> text (text_retrieval_recall@k)"
    lines += ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    for first, other, comparison in comparisons(results):
        lines.append(f"{other.label} vs {first.label}, {short_name(first.headline)}: {comparison.line()}")
    for result in results:
        settings = result.settings
        templates = settings.get("templates")
        texts = "captions as given" if templates is None else f"templates {templates!r}"
        lines.append(
            f"{result.label}: {texts}; text {settings.get('padding')}; "
            f"images {settings.get('image_processor')} {settings.get('resize')}, {settings.get('preprocessing')}; "
            f"dtype {settings.get('dtype')}"
        )
        if "k_shot" in result.details and result.details["k_shot"]:
            shots = ", ".join(
                f"{k}-shot {v['mean'] * 100:.1f}±{v['std'] * 100:.1f}" for k, v in result.details["k_shot"].items()
            )
            lines.append(
                f"{result.label}: linear probe {shots} (seeds {next(iter(result.details['k_shot'].values()))['seeds']})"
            )
    if per_class:
        for result in results:
            lines.append(f"{result.label}: per class (recall %, count)")
            for row in result.details.get("per_class", []):
                lines.append(f"  {row['class']:<24} {_percent(row['recall']):>6}  {row['count']}")
    return "\n".join(lines)
