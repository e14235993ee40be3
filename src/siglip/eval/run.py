"""`evaluate`: one task on one dataset for one or more models / precisions, each a `EvalResult` (what
`siglip eval` runs). Images go through the resumable feature cache (`cache`); prompts and captions are embedded
once per distinct text; the metrics come from `zero_shot`, `retrieval` and `linear_probe`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from .cache import ImageFeatures, ModelSpec, image_features
from .datasets import EvalData
from .linear_probe import DEFAULT_SEEDS, DEFAULT_SHOTS, fit_probes, save_probe
from .retrieval import DEFAULT_KS, retrieval_metrics
from .stats import bootstrap_ci
from .zero_shot import (
    check_templates,
    class_embeddings,
    classification_metrics,
    encode_prompts,
    prompts_for,
    zero_shot_logits,
)

TASKS = {"zero-shot": "zeroshot_classification", "retrieval": "zeroshot_retrieval", "linear-probe": "linear_probe"}
TEST_SPLITS = ("test", "val", "valid", "validation")

# make_bar(total, description) -> an object with update(n) and close(), e.g. a tqdm bar
ProgressFactory = Callable[[int, str], Any]


@dataclass
class EvalResult:
    """One (dataset, model, dtype, task) run. `metrics` uses CLIP_benchmark's names (acc1, acc5,
    mean_per_class_recall, image_retrieval_recall@k, text_retrieval_recall@k, lp_acc1, ...); `intervals` the 95 %
    bootstrap interval of the headline metrics; `outcomes` the per-item right/wrong vector of `headline` (what a
    comparison of two runs reads); `settings` the template(s), padding, resize and dtype used."""

    dataset: str
    model: str
    dtype: str
    task: str
    metrics: dict[str, float]
    headline: str
    outcomes: torch.Tensor
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    images: int = 0
    images_per_second: float | None = None
    peak_memory_mib: float | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.model} ({self.dtype})"


def default_split(data: EvalData, task: str) -> str | None:
    """The split zero-shot and retrieval evaluate by default: "test" (or "val") when the data has splits."""
    names = data.split_names()
    return next((name for name in TEST_SPLITS if name in names), None) if names else None


def evaluate(
    task: str,
    data: EvalData,
    models: Sequence[ModelSpec],
    *,
    templates: Sequence[str] | None = None,
    split: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 32,
    workers: int | None = None,
    shard_size: int = 1024,
    ks: Sequence[int] = DEFAULT_KS,
    shots: Sequence[int] = DEFAULT_SHOTS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    save: str | os.PathLike | None = None,
    make_bar: ProgressFactory | None = None,
) -> list[EvalResult]:
    """Run `task` ("zero-shot", "retrieval", "linear-probe") on `data` for every model spec, in order.

    zero-shot and retrieval use `split` (default: the data's test split when it has splits, else every image);
    the linear probe trains on the "train" split and tests on `split` (default "test"). `templates` are the
    prompt templates of zero-shot (default: the dataset's, else each model's own, see `zero_shot.model_template`). `save` writes
    the full-data probe as a `SiglipForImageClassification` checkpoint (a subfolder per model when several).
    """
    if task not in TASKS:
        raise InputError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if not models:
        raise InputError("give at least one model to evaluate")
    if templates is None and data.templates:
        templates = (
            data.templates
        )  # the dataset's own prompt set (a webdataset's zeroshot_classification_templates.txt)
    if templates is not None:
        templates = check_templates(templates)
    options = dict(cache_dir=cache_dir, batch_size=batch_size, workers=workers, shard_size=shard_size)
    results = []
    for number, spec in enumerate(models):
        if task == "zero-shot":
            result = _zero_shot(data, spec, split, templates, options, make_bar)
        elif task == "retrieval":
            result = _retrieval(data, spec, split, ks, options, make_bar)
        else:
            target = None if save is None else Path(save) / (f"{number}" if len(models) > 1 else "")
            result = _linear_probe(data, spec, split, templates, shots, seeds, target, options, make_bar)
        results.append(result)
    return results


def _features(
    data: EvalData, spec: ModelSpec, options: dict[str, Any], make_bar: ProgressFactory | None
) -> ImageFeatures:
    bar = make_bar(len(data), f"{spec.label}: images") if make_bar is not None else None
    try:
        features = image_features(data, spec, progress=bar.update if bar is not None else None, **options)
    finally:
        if bar is not None:
            bar.close()
    if features.failures:
        shown = "; ".join(f"{item}: {error}" for item, error in features.failures[:3])
        warnings.warn(
            f"{len(features.failures)} of {len(data)} images could not be read and are left out: {shown}",
            UserWarning,
            stacklevel=3,
        )
    return features


def _concat(first: ImageFeatures, second: ImageFeatures) -> ImageFeatures:
    """Two splits' features as one (each split is its own cache entry: a zero-shot run on the test split and a
    probe on train + test share the test images' features)."""
    counts = (len(first.ok), len(second.ok))
    speeds = (first.images_per_second, second.images_per_second)
    speed = None
    if all(speeds):
        speed = sum(counts) / sum(count / rate for count, rate in zip(counts, speeds))
    peaks = [peak for peak in (first.peak_memory_mib, second.peak_memory_mib) if peak is not None]
    return ImageFeatures(
        torch.cat([first.embeds, second.embeds]),
        torch.cat([first.pooled, second.pooled]),
        np.concatenate([first.ok, second.ok]),
        first.failures + second.failures,
        first.embedded + second.embedded,
        speed,
        max(peaks) if peaks else None,
    )


def _settings(spec: ModelSpec, templates: Sequence[str] | None) -> dict[str, Any]:
    """What decides the numbers and is easy to get wrong silently: template, padding, resize, dtype."""
    from ..encode import text_length

    model, processor = spec.load()
    image_processor = getattr(processor, "image_processor", processor)
    resize = {
        key: getattr(image_processor, key)
        for key in ("size", "resample", "max_num_patches", "patch_size")
        if getattr(image_processor, key, None) is not None
    }
    length = text_length(model.config)
    return {
        "templates": list(templates) if templates is not None else None,
        "padding": f"max_length={length} (as trained)",
        "resize": {key: value if isinstance(value, int | str | dict) else str(value) for key, value in resize.items()},
        "image_processor": type(image_processor).__name__,
        "dtype": (
            f"int8 linears, the rest {str(model.dtype).removeprefix('torch.')}"
            if spec.dtype == "int8"
            else spec.dtype_name()
        ),
        "preprocessing": spec.preprocessing(),
        "model_class": type(model).__name__,
    }


def _require_labels(data: EvalData, task: str) -> None:
    if data.labels is None or data.classnames is None:
        raise InputError(f"{task} needs class labels: {data.name} has none (a class-folder tree or a label column)")


def _class_logits(
    spec: ModelSpec, classnames: Sequence[str], templates: Sequence[str] | None, image_embeds: torch.Tensor
) -> tuple[torch.Tensor, list[str]]:
    from ..zero_shot import model_template

    model, processor = spec.load()
    used = list(templates) if templates is not None else [model_template(model)]
    prompts = prompts_for(classnames, used)
    classes = class_embeddings(encode_prompts(model, processor, prompts), len(classnames))
    return zero_shot_logits(image_embeds, classes, model), used


def _base_result(data: EvalData, spec: ModelSpec, task: str, features: ImageFeatures, count: int) -> dict[str, Any]:
    return dict(
        dataset=data.name,
        model=str(spec.name),
        dtype="int8" if spec.dtype == "int8" else spec.dtype_name(),
        task=TASKS[task],
        images=count,
        images_per_second=features.images_per_second,
        peak_memory_mib=features.peak_memory_mib,
    )


def _zero_shot(
    data: EvalData,
    spec: ModelSpec,
    split: str | None,
    templates: Sequence[str] | None,
    options: dict[str, Any],
    make_bar: ProgressFactory | None,
) -> EvalResult:
    _require_labels(data, "zero-shot classification")
    data = data.select(split if split is not None else default_split(data, "zero-shot"))
    features = _features(data, spec, options, make_bar)
    ok = torch.from_numpy(features.ok)
    logits, used = _class_logits(spec, data.classnames, templates, features.embeds[ok])
    metrics = classification_metrics(logits, torch.tensor(data.labels)[ok], data.classnames)
    settings = _settings(spec, used)
    return EvalResult(
        **_base_result(data, spec, "zero-shot", features, int(ok.sum())),
        metrics={"acc1": metrics.top1, "acc5": metrics.top5, "mean_per_class_recall": metrics.mean_per_class_recall},
        headline="acc1",
        outcomes=metrics.correct,
        intervals={"acc1": bootstrap_ci(metrics.correct)},
        settings=settings,
        details={"per_class": metrics.per_class, "confusion": metrics.confusion, "classnames": list(data.classnames)},
    )


def _retrieval(
    data: EvalData,
    spec: ModelSpec,
    split: str | None,
    ks: Sequence[int],
    options: dict[str, Any],
    make_bar: ProgressFactory | None,
) -> EvalResult:
    if data.captions is None:
        raise InputError(
            f"retrieval needs captions: {data.name} has none (a caption column, .txt members, or a caption JSON)"
        )
    data = data.select(split if split is not None else default_split(data, "retrieval"))
    features = _features(data, spec, options, make_bar)
    keep = [i for i in range(len(data)) if features.ok[i] and data.captions[i]]
    captions = [data.captions[i] for i in keep]
    model, processor = spec.load()
    texts = [text for group in captions for text in group]
    text_embeds = encode_prompts(model, processor, texts)
    metrics = retrieval_metrics(features.embeds[keep], captions, text_embeds, ks)
    values = {}
    for k in metrics.ks:
        values[f"image_retrieval_recall@{k}"] = metrics.text_to_image[k]
        values[f"text_retrieval_recall@{k}"] = metrics.image_to_text[k]
    outcomes = metrics.text_ranks < 1
    return EvalResult(
        **_base_result(data, spec, "retrieval", features, len(keep)),
        metrics=values,
        headline="image_retrieval_recall@1",
        outcomes=outcomes,
        intervals={
            "image_retrieval_recall@1": bootstrap_ci(outcomes),
            "text_retrieval_recall@1": bootstrap_ci(metrics.image_ranks < 1),
        },
        settings=_settings(spec, None),
        details={"captions": len(texts), "ks": list(metrics.ks)},
    )


def _linear_probe(
    data: EvalData,
    spec: ModelSpec,
    split: str | None,
    templates: Sequence[str] | None,
    shots: Sequence[int],
    seeds: Sequence[int],
    save: Path | None,
    options: dict[str, Any],
    make_bar: ProgressFactory | None,
) -> EvalResult:
    _require_labels(data, "the linear probe")
    if "train" not in data.split_names():
        raise InputError(
            f"the linear probe needs a train split: {data.name} has "
            f"{'splits ' + ', '.join(data.split_names()) if data.split_names() else 'no splits'} (use DIR/train/CLASS/ "
            "and DIR/test/CLASS/ folders, or a 'split' column)"
        )
    test_split = split if split is not None else next((s for s in TEST_SPLITS if s in data.split_names()), None)
    if test_split is None or test_split == "train":
        raise InputError(f"the linear probe needs a test split besides train: {data.name} has {data.split_names()}")
    train, test = data.select("train"), data.select(test_split)
    features = _concat(_features(train, spec, options, make_bar), _features(test, spec, options, make_bar))
    ok = torch.from_numpy(features.ok)
    labels = torch.tensor(train.labels + test.labels)
    is_train = torch.arange(len(labels)) < len(train)
    fit, evaluate_on = ok & is_train, ok & ~is_train
    result = fit_probes(
        features.pooled[fit],
        labels[fit],
        features.pooled[evaluate_on],
        labels[evaluate_on],
        data.classnames,
        shots=shots,
        seeds=seeds,
    )
    logits, used = _class_logits(spec, data.classnames, templates, features.embeds[evaluate_on])
    zero_shot = classification_metrics(logits, labels[evaluate_on], data.classnames)
    metrics = {
        "lp_acc1": result.full.top1,
        "lp_acc5": result.full.top5,
        "lp_mean_per_class_recall": result.full.mean_per_class_recall,
        "zeroshot_acc1": zero_shot.top1,
    }
    for k, (mean, _) in result.k_shot_summary().items():
        metrics[f"lp_acc1_{k}shot"] = mean
    if save is not None:
        save_probe(result.probe, data.classnames, spec.name, save, revision=spec.revision)
    return EvalResult(
        **_base_result(test, spec, "linear-probe", features, int(evaluate_on.sum())),
        metrics=metrics,
        headline="lp_acc1",
        outcomes=result.full.correct,
        intervals={"lp_acc1": bootstrap_ci(result.full.correct), "zeroshot_acc1": bootstrap_ci(zero_shot.correct)},
        settings=_settings(spec, used),
        details={
            "weight_decay": result.probe.weight_decay,
            "train_images": int(fit.sum()),
            "k_shot": {
                str(k): {"mean": m, "std": s, "seeds": list(seeds)} for k, (m, s) in result.k_shot_summary().items()
            },
            "per_class": result.full.per_class,
            "confusion": result.full.confusion,
            "classnames": list(data.classnames),
            "saved": str(save) if save is not None else None,
            "predictions": result.full.predictions.tolist(),
        },
    )
