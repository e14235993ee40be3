"""Zero-shot image classification with cached label embeddings.

The reference pipeline re-encodes every candidate label for every image: N images x K labels cost N x K text
passes. Here a label's text embedding is computed once per (pipeline, prompt text) and reused across images
and calls, so the cost is about N image passes + K text passes. Because SigLIP scores each (image, text)
pair independently (sigmoid, no softmax over labels), caching changes no number: results equal the
reference's to float rounding. Images are decoded and preprocessed in a background thread while the model
runs the previous batch.

Prompt template: the caller's `hypothesis_template`, else the model's own (a `"hypothesis_template"` key in its
`config.json`, for models trained on captions of another form: the demo model's is "a {}"), else the
reference's "This is a photo of {}.". Scores are plain tensors: computed without autograd.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from .encode import encode_texts, iter_encoded_images
from .errors import ConfigError, ImageError, InputError
from .image.batches import ImageBatch
from .prompt_template import DEFAULT_TEMPLATE, check_template

TASKS = ("zero-shot-image-classification",)


class ZeroShotImageClassificationPipeline:
    """Score images against free-text labels: `pipe(image, candidate_labels=[...])`.

    `model` is a SiglipModel / Siglip2Model, `processor` the matching SiglipProcessor / Siglip2Processor.
    Label embeddings live in `self.text_cache` (prompt text -> normalised embedding); it assumes frozen
    weights, so call `clear_cache()` after changing the model.
    """

    task = "zero-shot-image-classification"

    def __init__(self, model, processor, batch_size: int = 16, text_batch_size: int = 64) -> None:
        self.model = model.eval()
        self.processor = processor
        self.batch_size = batch_size
        self.text_batch_size = text_batch_size
        self.text_cache: dict[str, torch.Tensor] = {}
        self.default_template = model_template(model)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def clear_cache(self) -> None:
        self.text_cache.clear()

    # ---- public call ----------------------------------------------------------------------------------
    def __call__(
        self,
        image: Any = None,
        candidate_labels: Sequence[str] | None = None,
        hypothesis_template: str | None = None,
        top_k: int | None = None,
        timeout: float | None = None,
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """Classify one image (-> list of {"score", "label"}) or a list of images (-> one list per image).

        Images may be PIL images, file paths or http(s) URLs. Scores are sigmoid probabilities, sorted from
        highest; `top_k` keeps the best k.
        """
        if image is None:
            image = kwargs.pop("images", None)
        if kwargs:
            raise InputError(f"unexpected arguments {sorted(kwargs)}.")
        if image is None:
            raise InputError("the zero-shot pipeline needs an image (PIL image, path or URL) or a list of them.")
        labels = _check_labels(candidate_labels)
        hypothesis_template = self.template(hypothesis_template)
        single = not isinstance(image, list | tuple)
        images = [image] if single else list(image)
        scores = self.scores(images, labels, hypothesis_template, timeout=timeout, batch_size=batch_size)
        results = [rank_labels(row.tolist(), labels, top_k) for row in scores]
        return results[0] if single else results

    def scores(
        self,
        images: Sequence[Any],
        candidate_labels: Sequence[str],
        hypothesis_template: str | None = None,
        timeout: float | None = None,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        """(N images, K labels) sigmoid probabilities, in input order (a tensor without grad)."""
        rows = [row for _, row in self.iter_scores(images, candidate_labels, hypothesis_template, timeout, batch_size)]
        return torch.stack(rows) if rows else torch.empty(0, len(candidate_labels))

    def iter_scores(
        self,
        images: Sequence[Any],
        candidate_labels: Sequence[str],
        hypothesis_template: str | None = None,
        timeout: float | None = None,
        batch_size: int | None = None,
        *,
        skip_errors: bool = False,
        honor_exif: bool = True,
    ) -> Iterator[tuple[int, torch.Tensor | ImageError]]:
        """Yield (index, K sigmoid scores) per image in input order; with `skip_errors`, (index, ImageError)
        for an unreadable image instead of raising."""
        text_embeds = self.label_embeddings(candidate_labels, hypothesis_template)
        for batch, image_embeds in self.iter_image_embeddings(
            images, timeout, batch_size or self.batch_size, skip_errors=skip_errors, honor_exif=honor_exif
        ):
            with torch.no_grad():  # scores are results, not part of a graph (`.numpy()` must work)
                probs = (
                    None
                    if image_embeds is None
                    else torch.sigmoid(self.logits(image_embeds, text_embeds)).float().cpu()
                )
            results: list[tuple[int, Any]] = list(batch.failures)
            results += [(index, probs[row]) for row, index in enumerate(batch.indices)]
            yield from sorted(results, key=lambda pair: pair[0])

    # ---- building blocks ----------------------------------------------------------------------------
    def template(self, hypothesis_template: str | None = None) -> str:
        """The prompt template to use: the one given, else the model's (`self.default_template`); checked."""
        return check_template(self.default_template if hypothesis_template is None else hypothesis_template)

    def label_embeddings(self, labels: Sequence[str], template: str | None = None) -> torch.Tensor:
        """Normalised text embeddings (K, D) of `template.format(label)` (default: `self.default_template`),
        computing only uncached prompts."""
        template = self.template(template)
        prompts = [template.format(label) for label in labels]
        missing = list(dict.fromkeys(p for p in prompts if p not in self.text_cache))
        if missing:
            embeds = encode_texts(self.model, self.processor, missing, self.text_batch_size)
            self.text_cache.update(zip(missing, embeds))
        return torch.stack([self.text_cache[p] for p in prompts])

    def iter_image_embeddings(
        self,
        images: Sequence[Any],
        timeout: float | None = None,
        batch_size: int = 16,
        *,
        skip_errors: bool = False,
        honor_exif: bool = True,
    ) -> Iterator[tuple[ImageBatch, torch.Tensor | None]]:
        """Yield (batch, normalised image embeddings of batch.indices); later batches decode meanwhile."""
        return iter_encoded_images(
            self.model,
            self.processor,
            images,
            batch_size,
            skip_errors=skip_errors,
            honor_exif=honor_exif,
            timeout=timeout,
        )

    def logits(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """image x text logits: cosine * exp(logit_scale) + logit_bias, as SiglipModel computes them, in fp32
        whatever the model's dtype (bf16 logits of a scale-100 model move in steps of ~0.4: ties in the scores)."""
        scale, bias = self.model.logit_scale.float(), self.model.logit_bias.float()
        return (text_embeds.float() @ image_embeds.float().t() * scale.exp() + bias).t()


def model_template(model: Any) -> str:
    """The zero-shot prompt template a model folder carries (`"hypothesis_template"` in config.json), else
    the reference's `DEFAULT_TEMPLATE`."""
    template = getattr(getattr(model, "config", None), "hypothesis_template", None)
    if template is None:
        return DEFAULT_TEMPLATE
    return check_template(template, "the model's config.json hypothesis_template", ConfigError)


def _check_labels(candidate_labels: Any) -> list[str]:
    if isinstance(candidate_labels, str):
        candidate_labels = [label.strip() for label in candidate_labels.split(",")]
    if not candidate_labels:
        raise InputError("candidate_labels is empty: give at least one label, e.g. ['a cat', 'a dog'].")
    labels = list(candidate_labels)
    wrong = [label for label in labels if not isinstance(label, str)]
    if wrong:
        raise InputError(f"candidate_labels must be strings; got {wrong[:3]!r}.")
    return labels


def rank_labels(scores: list[float], labels: list[str], top_k: int | None) -> list[dict[str, Any]]:
    ranked = sorted(zip(scores, labels), key=lambda pair: -pair[0])
    if top_k is not None:
        if top_k < 1:
            raise InputError(f"top_k must be >= 1, got {top_k}.")
        ranked = ranked[:top_k]
    return [{"score": score, "label": label} for score, label in ranked]


def pipeline(
    task: str = "zero-shot-image-classification",
    model: Any = None,
    *,
    device: Any = None,
    dtype: Any = None,
    torch_dtype: Any = None,
    batch_size: int = 16,
    fast_decode: bool = False,
    model_kwargs: dict[str, Any] | None = None,
    **hub_kwargs: Any,
) -> ZeroShotImageClassificationPipeline:
    """Build a task pipeline from a Hub id, a local folder or a loaded model (`processor=` then required).

    `fast_decode=True` decodes JPEG files at a reduced scale (faster, approximate; see `image.loading.load_image`).
    `model_kwargs` go to the model's `from_pretrained`, as in transformers (e.g. `{"quantization": "int8"}`)."""
    if task not in TASKS:
        raise InputError(f"task {task!r} is not supported; siglip provides {TASKS}.")
    if model is None:
        raise InputError("pipeline() needs model=<Hub id or local folder>, e.g. 'google/siglip-base-patch16-224'.")
    processor = hub_kwargs.pop("processor", None)
    if isinstance(model, str | os.PathLike):
        from .runtime import load_model_and_processor

        model_options = dict(model_kwargs or {})  # as in transformers, they may set dtype and device too
        dtype = model_options.pop("dtype", (torch_dtype if torch_dtype is not None else dtype) or "auto")
        device = model_options.pop("device", device)
        model, processor = load_model_and_processor(
            model, dtype=dtype, device=device, processor=processor, model_options=model_options, **hub_kwargs
        )
    elif processor is None:
        raise InputError("pass processor= together with a loaded model.")
    elif device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    if fast_decode and hasattr(processor.image_processor, "draft_size"):
        processor.image_processor.fast_decode = True
    return ZeroShotImageClassificationPipeline(model, processor, batch_size=batch_size)
