"""Zero-shot classification metrics: class embeddings from prompt templates (an ensemble: the mean of the
normalised prompt embeddings, normalised again, as the CLIP / SigLIP evaluators build them), then top-1 / top-5
accuracy, mean per-class recall, a per-class table and the confusion matrix.

An image's prediction is the class with the highest logit `cos * exp(logit_scale) + logit_bias` in fp32, which
with one template is exactly the zero-shot pipeline's top-1 (sigmoid is monotonic; the same text and image
embeddings).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import InputError

_WARNED_TEMPLATES: set[str] = set()


def check_templates(templates: Sequence[str]) -> list[str]:
    """The templates, each one lacking `{}` warned about once (every class would get the same prompt)."""
    templates = list(templates)
    if not templates:
        raise InputError("no prompt template given: give at least one, e.g. 'a photo of a {}.'")
    for template in templates:
        if not isinstance(template, str):
            raise InputError(f"prompt templates must be strings, got {template!r}")
        if "{}" not in template and template not in _WARNED_TEMPLATES:
            _WARNED_TEMPLATES.add(template)
            warnings.warn(
                f"prompt template {template!r} has no '{{}}': every class gets the same prompt from it, which "
                "lowers zero-shot accuracy silently. Put {} where the class name goes.",
                UserWarning,
                stacklevel=2,
            )
    return templates


def prompts_for(classnames: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Every (class, template) prompt, class-major: class c's prompts are [c * T, (c + 1) * T)."""
    try:
        return [
            template.format(name) if "{}" in template else template for name in classnames for template in templates
        ]
    except (IndexError, KeyError, ValueError) as error:
        raise InputError(f"a prompt template must hold one '{{}}' and no other braces: {error}") from None


def class_embeddings(prompt_embeds: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, D) class embeddings from (C * T, D) normalised prompt embeddings (class-major): the mean over
    templates, normalised; with one template, the prompt embedding itself."""
    grouped = prompt_embeds.float().reshape(num_classes, -1, prompt_embeds.shape[-1])
    if grouped.shape[1] == 1:
        return grouped[:, 0]
    mean = grouped.mean(dim=1)
    return mean / mean.norm(dim=-1, keepdim=True)


def zero_shot_logits(image_embeds: torch.Tensor, class_embeds: torch.Tensor, model: Any) -> torch.Tensor:
    """(N, C) logits, computed as the pipeline computes them (fp32, the model's logit scale and bias)."""
    scale, bias = model.logit_scale.detach().float().cpu(), model.logit_bias.detach().float().cpu()
    return (class_embeds.float() @ image_embeds.float().t() * scale.exp() + bias).t()


@dataclass
class ClassificationMetrics:
    """Accuracy metrics of predictions against labels; `correct` is per image (what the bootstrap and McNemar read)."""

    top1: float
    top5: float
    mean_per_class_recall: float
    correct: torch.Tensor  # bool (N,)
    predictions: torch.Tensor  # long (N,)
    per_class: list[dict[str, Any]] = field(default_factory=list)  # {"class", "count", "recall"}
    confusion: list[list[int]] = field(default_factory=list)  # [true][predicted]


def classification_metrics(
    logits: torch.Tensor, labels: torch.Tensor, classnames: Sequence[str]
) -> ClassificationMetrics:
    """top-1 / top-5 accuracy, mean per-class recall, per-class table and confusion matrix of (N, C) logits."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    if logits.shape[0] != labels.shape[0]:
        raise InputError(f"{logits.shape[0]} rows of logits for {labels.shape[0]} labels")
    num_classes = len(classnames)
    predictions = logits.argmax(dim=-1)
    correct = predictions == labels
    k = min(5, num_classes)
    top5 = (logits.topk(k, dim=-1).indices == labels[:, None]).any(dim=-1)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    confusion.index_put_((labels, predictions), torch.ones_like(labels), accumulate=True)
    counts = confusion.sum(dim=1)
    recalls = confusion.diag().double() / counts.clamp_min(1)
    present = counts > 0
    per_class = [
        {"class": classnames[c], "count": int(counts[c]), "recall": float(recalls[c]) if present[c] else None}
        for c in range(num_classes)
    ]
    count = max(1, len(labels))
    return ClassificationMetrics(
        top1=float(correct.sum()) / count,
        top5=float(top5.sum()) / count,
        mean_per_class_recall=float(recalls[present].mean()) if present.any() else 0.0,
        correct=correct,
        predictions=predictions,
        per_class=per_class,
        confusion=confusion.tolist(),
    )


def encode_prompts(model: Any, processor: Any, prompts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """Normalised text embeddings of `prompts` (each distinct prompt embedded once), fp32 on the CPU."""
    from ..encode import encode_texts

    unique = list(dict.fromkeys(prompts))
    embeds = encode_texts(model, processor, unique, batch_size).float().cpu()
    row = {prompt: i for i, prompt in enumerate(unique)}
    return embeds[[row[p] for p in prompts]]
