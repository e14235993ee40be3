"""The evaluation hook: image->text retrieval recall@1 and zero-shot accuracy on a held-out set.

An `EvalSet` holds preprocessed images, their captions and any number of zero-shot tasks (class prompts plus
one label per image, optionally restricted to a subset of the images). Caption files with a `label` column
give one task; the synthetic shapes give shape, colour and colour x shape tasks, each also measured on the
colour x shape combinations that training never showed.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

from ..encode import text_length, tokenize_as_trained
from ..modeling.model import l2_normalize
from . import synthetic


@dataclass
class ZeroShotTask:
    """Classify each image (of `subset`, or all) among `prompts`; `labels[i]` is image i's class index.

    With `prompt_classes`, prompt j stands for class `prompt_classes[j]` (several prompts per class: the colour of
    the best colour x shape prompt); otherwise prompt j is class j."""

    name: str
    prompts: list[str]
    labels: torch.Tensor
    subset: torch.Tensor | None = None
    prompt_classes: torch.Tensor | None = None


@dataclass
class EvalSet:
    pixel_values: torch.Tensor
    captions: list[str]
    tasks: list[ZeroShotTask] = field(default_factory=list)


def _pixels(processor: Any, images: list) -> torch.Tensor:
    return processor(images=images, return_tensors="pt")["pixel_values"]


def build_eval_set(source: Any, processor: Any, count: int) -> EvalSet:
    """The first `count` samples of a map-style source (or tar shard list) as an `EvalSet`."""
    from .data import iter_tar_samples

    if isinstance(source, synthetic.ShapesDataset):
        return shapes_eval_set(source, processor, count)
    if isinstance(source, list):
        samples = []
        for shard in source:
            samples.extend(iter_tar_samples(shard))
            if len(samples) >= count:
                break
        samples = samples[:count]
        labels = None
    else:
        samples = [source[i] for i in range(min(count, len(source)))]
        labels = getattr(source, "labels", None)
    images, captions = (list(column) for column in zip(*samples))
    tasks = []
    if labels is not None:
        labels = labels[: len(samples)]
        classes = sorted(set(labels))
        tasks.append(
            ZeroShotTask(
                "label", [f"a photo of a {c}" for c in classes], torch.tensor([classes.index(x) for x in labels])
            )
        )
    return EvalSet(_pixels(processor, images), captions, tasks)


def shapes_eval_set(source: synthetic.ShapesDataset, processor: Any, count: int) -> EvalSet:
    """Synthetic held-out images with shape / colour / combination tasks, overall and on unseen combinations."""
    images, captions, samples = [], [], []
    for index in range(count):
        image, text, sample = source.sample(index)
        images.append(image)
        captions.append(text)
        samples.append(sample)
    colours, shapes = list(synthetic.COLOURS), list(synthetic.SHAPES)
    pairs = synthetic.combos("all")
    unseen = torch.tensor([(s.colour, s.shape) in synthetic.HELD_OUT for s in samples])
    combo_prompts = [synthetic.COMBO_PROMPT.format(*p) for p in pairs]
    tasks = [
        ("shape", [synthetic.SHAPE_PROMPT.format(s) for s in shapes], [shapes.index(s.shape) for s in samples], None),
        ("colour", combo_prompts, [colours.index(s.colour) for s in samples], [colours.index(c) for c, _ in pairs]),
        ("combo", combo_prompts, [pairs.index((s.colour, s.shape)) for s in samples], None),
    ]
    zero_shot = []
    for name, prompts, labels, classes in tasks:
        classes = None if classes is None else torch.tensor(classes)
        zero_shot.append(ZeroShotTask(name, prompts, torch.tensor(labels), prompt_classes=classes))
        if unseen.any():
            zero_shot.append(ZeroShotTask(f"{name}_unseen", prompts, torch.tensor(labels), unseen, classes))
    return EvalSet(_pixels(processor, images), captions, zero_shot)


@torch.no_grad()
def evaluate(
    model: Any, eval_set: EvalSet, processor: Any, batch_size: int = 256, autocast_dtype: torch.dtype | None = None
) -> dict[str, float]:
    """Metrics on `eval_set`: i2t_recall@1 (a hit when the best caption's text equals the true one, since
    templated captions repeat) and `zeroshot_<task>` top-1 accuracies. Restores the model's train/eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    context = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
    length = text_length(model.config)

    def embed_texts(texts: list[str]) -> torch.Tensor:
        chunks = []
        for start in range(0, len(texts), batch_size):
            ids = tokenize_as_trained(processor, texts[start : start + batch_size], length)["input_ids"].to(device)
            with context:
                chunks.append(l2_normalize(model.get_text_features(input_ids=ids).float()))
        return torch.cat(chunks)

    with context:
        image_embeds = torch.cat(
            [
                l2_normalize(model.get_image_features(pixel_values=chunk.to(device)).float())
                for chunk in eval_set.pixel_values.split(batch_size)
            ]
        )
    unique = list(dict.fromkeys(eval_set.captions))
    text_embeds = embed_texts(unique)
    best = (image_embeds @ text_embeds.t()).argmax(dim=1).cpu()
    truth = torch.tensor([unique.index(c) for c in eval_set.captions])
    metrics = {"i2t_recall@1": (best == truth).float().mean().item()}
    for task in eval_set.tasks:
        predicted = (image_embeds @ embed_texts(task.prompts).t()).argmax(dim=1).cpu()
        if task.prompt_classes is not None:
            predicted = task.prompt_classes[predicted]
        correct = predicted == task.labels
        if task.subset is not None:
            correct = correct[task.subset]
        metrics[f"zeroshot_{task.name}"] = correct.float().mean().item()
    model.train(was_training)
    return metrics
