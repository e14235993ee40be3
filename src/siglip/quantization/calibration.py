"""Calibration inputs for static int8 scales: a few real images and texts, preprocessed as the model sees them.

`calibration_batch(model, processor, images, texts)` is what `model.quantize("int8", calibration=...)` takes.
Without texts, the text tower is calibrated on DEFAULT_TEXTS: short captions of everyday scenes, tokenized as
SigLIP was trained (padded to the model's length), so that the padding tokens' ranges are covered as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..errors import InputError

DEFAULT_TEXTS = (
    "a photo of a dog",
    "a photo of a cat sleeping on a sofa",
    "two people walking on a beach at sunset",
    "a plate of pasta with tomato sauce",
    "a red car parked in the street",
    "a city skyline at night",
    "a bird sitting on a branch",
    "a screenshot of a spreadsheet",
    "a bowl of fruit on a wooden table",
    "a mountain lake with snow-capped peaks",
    "a child playing football in a park",
    "a close-up of a flower",
    "an astronaut in a white space suit",
    "a cup of coffee",
    "a rocket launching into the sky",
    "a diagram with arrows and labels",
    "a black and white portrait of an old man",
    "a kitchen with white cabinets",
    "a cartoon drawing of a robot",
    "a crowd at a concert",
    "a horse running in a field",
    "handwritten notes on lined paper",
    "a bicycle leaning against a wall",
    "an aerial view of farmland",
)


def calibration_batch(
    model: Any, processor: Any, images: Sequence[Any] = (), texts: Sequence[str] | None = None
) -> dict[str, torch.Tensor]:
    """Model inputs for `model.quantize("int8", calibration=...)`: `images` (PIL images) through the image
    processor, `texts` (default DEFAULT_TEXTS where the model has a text tower) through the tokenizer."""
    from ..encode import model_inputs

    has_vision = hasattr(model, "get_image_features") or hasattr(model.config, "image_size")
    has_text = hasattr(model, "get_text_features") or hasattr(model.config, "vocab_size")
    batch: dict[str, torch.Tensor] = {}
    if has_vision and images:
        batch.update(processor(images=list(images), return_tensors="pt"))
    elif has_vision and not has_text:
        raise InputError("calibrating an image tower needs at least one image")
    if has_text:
        text_config = getattr(model.config, "text_config", model.config)
        length = text_config.max_position_embeddings
        chosen = list(texts) if texts else list(DEFAULT_TEXTS)
        tokens = processor(text=chosen, padding="max_length", truncation=True, max_length=length, return_tensors="pt")
        batch["input_ids"] = tokens["input_ids"]
    return model_inputs(batch, model.device, model.dtype)
