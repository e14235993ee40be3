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
    from ..batch import model_inputs

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


# Synthetic inputs for the scale migration of dynamic int8 (no calibration given): the outlier channels it
# corrects come from the weights (LayerNorm gains, residual-stream "massive activations") and show on any input.
SYNTHETIC_IMAGES = 4
SYNTHETIC_TEXTS = 8


def synthetic_batches(model: Any, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """A few smooth random images and random token sequences (padded as SigLIP pads) in the model's input
    format: one batch per tower the model has (SigLIP2 NaFlex: patch sequences with their grids)."""
    generator = torch.Generator().manual_seed(seed)
    config = model.config
    vision = getattr(config, "vision_config", config if hasattr(config, "patch_size") else None)
    text = getattr(config, "text_config", config if hasattr(config, "vocab_size") else None)
    dtype, device = model.dtype, model.device
    batches = []
    if vision is not None:
        if getattr(vision, "num_patches", None) and not getattr(vision, "image_size", None):  # NaFlex
            side = int(vision.num_patches**0.5)
            images = _smooth_images(generator, vision.num_channels, side * vision.patch_size, side * vision.patch_size)
            patches = images.unfold(2, vision.patch_size, vision.patch_size).unfold(
                3, vision.patch_size, vision.patch_size
            )
            patches = patches.permute(0, 2, 3, 4, 5, 1).reshape(SYNTHETIC_IMAGES, side * side, -1)
            batches.append({
                "pixel_values": patches.to(device, dtype),
                "pixel_attention_mask": torch.ones(SYNTHETIC_IMAGES, side * side, dtype=torch.long, device=device),
                "spatial_shapes": torch.tensor([[side, side]] * SYNTHETIC_IMAGES, device=device),
            })  # fmt: skip
        else:
            images = _smooth_images(generator, vision.num_channels, vision.image_size, vision.image_size)
            batches.append({"pixel_values": images.to(device, dtype)})
    if text is not None:
        length = text.max_position_embeddings
        pad = text.pad_token_id if text.pad_token_id is not None else 1
        ids = torch.full((SYNTHETIC_TEXTS, length), pad, dtype=torch.long)
        for row in range(SYNTHETIC_TEXTS):
            count = int(torch.randint(4, max(5, length // 3), (1,), generator=generator))
            ids[row, :count] = torch.randint(
                min(3, text.vocab_size - 1), text.vocab_size, (count,), generator=generator
            )
        batches.append({"input_ids": ids.to(device)})
    return batches


def _smooth_images(generator: torch.Generator, channels: int, height: int, width: int) -> torch.Tensor:
    """Normalised images in [-1, 1]: coarse random colour fields plus fine noise."""
    coarse = torch.rand(SYNTHETIC_IMAGES, channels, 6, 6, generator=generator)
    images = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    noise = torch.randn(SYNTHETIC_IMAGES, channels, height, width, generator=generator) * 0.1
    return (images * 2 - 1 + noise).clamp(-1, 1)
