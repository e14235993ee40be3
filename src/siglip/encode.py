"""Batched text and image encoding with a model + processor: what the pipeline, the CLI and bulk jobs share."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

import torch

from .batch import model_inputs  # noqa: F401 (re-exported: encode.model_inputs)
from .image.batches import ImageBatch, iter_image_batches
from .image.loading import load_image
from .modeling.model import l2_normalize


def load_rgb(
    source: Any, *, honor_exif: bool = True, timeout: float | None = None, draft_size: tuple[int, int] | None = None
) -> Any:
    """An image as the reference pipeline reads one: decoded, EXIF orientation applied, converted to RGB
    with Pillow (an alpha band is dropped, not composited). `honor_exif=False` keeps the stored orientation;
    `draft_size` decodes JPEGs approximately at a reduced scale (`image.loading.load_image`)."""
    options = {"timeout": timeout} if timeout else {}
    image = load_image(source, honor_exif=honor_exif, draft_size=draft_size, **options)
    return image if image.mode == "RGB" else image.convert("RGB")


def text_length(config: Any) -> int:
    """The text length a model was trained with (a two-tower or a text-tower config): its `max_position_embeddings`,
    64 for every released checkpoint and the length the reference pipeline pads to."""
    return getattr(config, "text_config", config).max_position_embeddings


def tokenize_as_trained(processor: Any, texts: Sequence[str], max_length: int, **inputs: Any) -> Any:
    """`processor(text=texts)` as SigLIP was trained: padded with the pad token to `max_length` (`text_length`) and
    truncated there, as torch tensors. SigLIP pools the last position, so every caller (inference, training,
    evaluation, calibration) must pad alike; the SigLIP2 tokenizer lowercases (see `check_text_case`). `inputs` go
    along to the processor (e.g. `images=` for a training batch)."""
    return processor(
        text=list(texts), padding="max_length", truncation=True, max_length=max_length, return_tensors="pt", **inputs
    )


def encode_texts(
    model: Any,
    processor: Any,
    texts: Sequence[str],
    batch_size: int = 64,
    *,
    normalize: bool = True,
    progress: Callable[[int], Any] | None = None,
) -> torch.Tensor:
    """(N, D) text embeddings, tokenized as SigLIP was trained: padded and truncated to the model's
    `max_position_embeddings` (64 for every released checkpoint, the length the reference pipeline uses).

    `normalize` L2-normalises them (what cosine scores and zero-shot need); `progress(n)` is called per batch.
    """
    length = text_length(model.config)
    check_text_case(model, processor, texts)
    chunks = []
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start : start + batch_size])
        inputs = tokenize_as_trained(processor, chunk, length)
        with torch.inference_mode():
            features = model.get_text_features(**model_inputs(inputs, model.device))
        chunks.append(l2_normalize(features) if normalize else features)
        if progress is not None:
            progress(len(chunk))
    if not chunks:
        return torch.empty(0, model.config.text_config.projection_size or model.config.text_config.hidden_size)
    return torch.cat(chunks)


_warned_case = False  # check_text_case warns once per process


def check_text_case(model: Any, processor: Any, texts: Sequence[str]) -> None:
    """Warn (once) when SigLIP2 text with capitals reaches a tokenizer that does not lowercase (a GemmaTokenizer
    given in place of the Siglip2Tokenizer that SigLIP2 checkpoints load with): SigLIP2 was trained on lowercased
    text, so capitals are embedded off its training distribution. Nothing is changed."""
    global _warned_case
    if _warned_case or getattr(model.config, "model_type", None) != "siglip2":
        return
    if getattr(getattr(processor, "tokenizer", processor), "lowercase", True):
        return
    if any(text != text.lower() for text in texts):
        _warned_case = True
        warnings.warn(
            "SigLIP2 was trained on lowercased text, but this tokenizer does not lowercase and the text has capitals: "
            "use the Siglip2Tokenizer (AutoProcessor / AutoTokenizer pick it) or lowercase the text first.",
            UserWarning,
            stacklevel=3,
        )


def load_processor(model: str, *, use_fast: bool = False, fast_decode: bool = False, **hub: Any) -> Any:
    """`AutoProcessor.from_pretrained(model, **hub)` with the approximate preprocessing options of the CLI and
    bulk jobs: `use_fast` picks the batched torch image processor, `fast_decode` reduced-scale JPEG decoding."""
    from .auto import AutoProcessor

    processor = AutoProcessor.from_pretrained(model, **hub, **({"use_fast": True} if use_fast else {}))
    if fast_decode and hasattr(processor.image_processor, "draft_size"):
        processor.image_processor.fast_decode = True
    return processor


def draft_size(processor: Any) -> tuple[int, int] | None:
    """The reduced JPEG decoding size when the (image) processor has `fast_decode` set, else None (exact)."""
    image_processor = getattr(processor, "image_processor", processor)
    fast = getattr(image_processor, "fast_decode", False) and hasattr(image_processor, "draft_size")
    return image_processor.draft_size() if fast else None


def iter_encoded_images(
    model: Any,
    processor: Any,
    images: Sequence[Any],
    batch_size: int = 16,
    *,
    normalize: bool = True,
    skip_errors: bool = False,
    honor_exif: bool = True,
    timeout: float | None = None,
    workers: int | None = None,
) -> Iterator[tuple[ImageBatch, torch.Tensor | None]]:
    """Yield (batch, embeddings of `batch.indices`) in input order; later batches decode in threads meanwhile.

    Images are PIL images, paths or URLs, read as `load_rgb` reads them. Unreadable ones raise `ImageError` naming the file, or with
    `skip_errors` are listed in `batch.failures` (embeddings None when a whole batch failed). When the image
    processor has `fast_decode` set, JPEG files are decoded at a reduced scale (`SiglipImageProcessor.draft_size`).
    """
    load = partial(load_rgb, honor_exif=honor_exif, timeout=timeout, draft_size=draft_size(processor))

    def preprocess(loaded: list[Any]) -> Any:
        return processor(images=loaded, return_tensors="pt")

    batches = iter_image_batches(images, preprocess, batch_size, load=load, skip_errors=skip_errors, workers=workers)
    for batch in batches:
        if batch.inputs is None:
            yield batch, None
            continue
        with torch.inference_mode():
            features = model.get_image_features(**model_inputs(batch.inputs, model.device, model.dtype))
        yield batch, l2_normalize(features) if normalize else features
