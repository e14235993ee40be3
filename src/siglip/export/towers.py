"""What each exported graph computes: one torch module per tower that returns its embedding, the inputs it
takes (the model's own forward names), sample inputs to trace and to verify with, and the model call the
exported file must agree with.

Outputs are the towers' pooled embeddings before L2 normalisation, i.e. `get_text_features` /
`get_image_features`: normalise them before taking cosine similarities or logits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from .naflex import NaflexPositions


@dataclass
class TowerGraph:
    """One tower to export: the module to trace, its input/output names and axes, and how to check it."""

    tower: str  # "text" or "vision"
    module: nn.Module  # forward(*inputs in input_names order) -> (batch, dim) embedding
    input_names: tuple[str, ...]
    output_name: str
    dynamic_axes: dict[str, dict[int, str]]
    sample: Callable[[int, int], dict[str, torch.Tensor]]  # (batch, seed) -> inputs by name
    reference: Callable[[dict[str, torch.Tensor]], torch.Tensor]  # the model's own forward on those inputs
    num_layers: int  # encoder layers (int8 may keep the first ones in fp32)
    verify_batches: tuple[dict[str, torch.Tensor], ...] = ()  # extra inputs beyond sample() (NaFlex lengths)

    @property
    def file_stem(self) -> str:
        return f"{self.tower}_model"


class TextEmbedding(nn.Module):
    """input_ids (batch, tokens) -> the text tower's pooled embedding (batch, projection_size)."""

    def __init__(self, text_model: nn.Module) -> None:
        super().__init__()
        self.text_model = text_model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.text_model.pooled_output(input_ids)  # the last layer at the last position only


class ImageEmbedding(nn.Module):
    """pixel_values (batch, channels, size, size) -> the MAP head's pooled embedding (batch, hidden)."""

    def __init__(self, vision_model: nn.Module) -> None:
        super().__init__()
        self.vision_model = vision_model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vision_model(pixel_values, return_dict=True).pooler_output


class NaflexImageEmbedding(nn.Module):
    """NaFlex patches -> pooled embedding, with the position-grid resize inside the graph (see naflex.py).

    The model's embeddings resize once per distinct shape with `torch.unique` (not traceable) and skip the mask
    when nothing is padded (a data-dependent branch); this module computes the same thing for any batch:
    patch linear + resized positions, an additive key bias from `pixel_attention_mask`, then the model's own
    encoder, post LayerNorm and masked MAP head.
    """

    def __init__(self, vision_model: nn.Module) -> None:
        super().__init__()
        self.vision_model = vision_model
        self.positions = NaflexPositions(vision_model.embeddings)

    def forward(
        self, pixel_values: torch.Tensor, pixel_attention_mask: torch.Tensor, spatial_shapes: torch.Tensor
    ) -> torch.Tensor:
        embeddings = self.vision_model.embeddings
        dtype = embeddings.patch_embedding.weight.dtype
        hidden = embeddings.patch_embedding(pixel_values.to(dtype)) + self.positions(
            spatial_shapes, pixel_values.shape[1]
        )
        keep = pixel_attention_mask[:, None, None, :] != 0
        bias = torch.zeros(keep.shape, dtype=dtype).masked_fill(~keep, torch.finfo(dtype).min)
        return self.vision_model.encode_embeddings(hidden, bias, False, False).pooler_output


def tower_graphs(model: nn.Module, towers: tuple[str, ...]) -> list[TowerGraph]:
    """The graphs to export for `towers` ("text", "vision") of a two-tower model or a single tower model."""
    graphs = []
    for tower in towers:
        part = _tower_module(model, tower)
        if tower == "text":
            graphs.append(_text_graph(part))
        elif hasattr(part.config, "num_patches"):
            graphs.append(_naflex_graph(part))
        else:
            graphs.append(_image_graph(part))
    return graphs


def _tower_module(model: nn.Module, tower: str) -> nn.Module:
    """The text or vision encoder inside `model` (or `model` itself when it is that tower)."""
    attribute = f"{tower}_model"
    part = getattr(model, attribute, None)
    if part is None and type(model).__name__.lower().endswith(f"{tower}model"):
        part = model
    if part is None:
        raise ConfigError(f"{type(model).__name__} has no {tower} tower to export; choose --tower accordingly.")
    if tower == "vision" and getattr(part, "head", None) is None:
        raise ConfigError("this model's vision tower has vision_use_head=False, so it has no image embedding.")
    return part


def _text_graph(text_model: nn.Module) -> TowerGraph:
    config = text_model.config

    length = config.max_position_embeddings
    pad = config.pad_token_id if config.pad_token_id is not None and 0 <= config.pad_token_id < config.vocab_size else 0

    def sample(batch: int, seed: int) -> dict[str, torch.Tensor]:
        """Texts as the processor makes them: a few random tokens, then padding to the full length."""
        generator = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, config.vocab_size, (batch, length), generator=generator)
        words = torch.randint(1, max(2, length // 2) + 1, (batch, 1), generator=generator)
        return {"input_ids": torch.where(torch.arange(length)[None] < words, ids, pad)}

    generator = torch.Generator().manual_seed(7)
    unpadded = torch.randint(0, config.vocab_size, (2, max(1, length // 2)), generator=generator)
    return TowerGraph(
        tower="text",
        module=TextEmbedding(text_model),
        input_names=("input_ids",),
        output_name="text_embeds",
        dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "text_embeds": {0: "batch"}},
        sample=sample,
        reference=lambda inputs: text_model(inputs["input_ids"], return_dict=True).pooler_output,
        num_layers=config.num_hidden_layers,
        verify_batches=({"input_ids": unpadded},),  # fewer tokens, no padding: the sequence axis is dynamic
    )


def _image_graph(vision_model: nn.Module) -> TowerGraph:
    config = vision_model.config

    def sample(batch: int, seed: int) -> dict[str, torch.Tensor]:
        shape = (batch, config.num_channels, config.image_size, config.image_size)
        return {"pixel_values": synthetic_pixels(shape, seed)}

    return TowerGraph(
        tower="vision",
        module=ImageEmbedding(vision_model),
        input_names=("pixel_values",),
        output_name="image_embeds",
        dynamic_axes={"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}},
        sample=sample,
        reference=lambda inputs: vision_model(inputs["pixel_values"], return_dict=True).pooler_output,
        num_layers=config.num_hidden_layers,
    )


def _naflex_graph(vision_model: nn.Module) -> TowerGraph:
    config = vision_model.config
    row = config.num_channels * config.patch_size**2

    def naflex_inputs(shapes: list[tuple[int, int]], length: int, seed: int) -> dict[str, torch.Tensor]:
        spatial_shapes = torch.tensor(shapes, dtype=torch.long)
        sizes = spatial_shapes.prod(dim=-1, keepdim=True)
        mask = (torch.arange(length)[None] < sizes).to(torch.int32)  # the processors' dtypes: int32 mask, int64 shapes
        pixels = synthetic_pixels((len(shapes), length, row), seed) * mask[..., None]
        return {"pixel_values": pixels, "pixel_attention_mask": mask, "spatial_shapes": spatial_shapes}

    def sample(batch: int, seed: int) -> dict[str, torch.Tensor]:
        length = config.num_patches
        return naflex_inputs(_grid_shapes(length, batch), length, seed)

    # Other patch counts than the traced one: a bigger budget (upsampled positions) and a small one (padding).
    bigger, smaller = 2 * config.num_patches + 3, max(4, config.num_patches // 2)
    verify = (
        naflex_inputs(_grid_shapes(bigger, 5), bigger, 11),
        naflex_inputs(_grid_shapes(smaller, 2), smaller, 12),
    )
    names = ("pixel_values", "pixel_attention_mask", "spatial_shapes")
    return TowerGraph(
        tower="vision",
        module=NaflexImageEmbedding(vision_model),
        input_names=names,
        output_name="image_embeds",
        dynamic_axes={
            "pixel_values": {0: "batch", 1: "patches"},
            "pixel_attention_mask": {0: "batch", 1: "patches"},
            "spatial_shapes": {0: "batch"},
            "image_embeds": {0: "batch"},
        },
        sample=sample,
        reference=lambda inputs: vision_model(*(inputs[name] for name in names), return_dict=True).pooler_output,
        num_layers=config.num_hidden_layers,
        verify_batches=verify,
    )


def _grid_shapes(length: int, count: int) -> list[tuple[int, int]]:
    """`count` patch grids that fit `length` patches: wide, tall, square-ish, one column, ... (some padded)."""
    side = max(1, int(length**0.5))
    candidates = [
        (max(1, length // (2 * side)), 2 * side),  # wide
        (2 * side, max(1, length // (2 * side))),  # tall
        (side, side),  # square, full when length is a square
        (min(length, 3), 1),  # one column
        (1, length),  # one row, full
    ]
    fitting = [(rows, cols) for rows, cols in candidates if rows * cols <= length]
    return [fitting[index % len(fitting)] for index in range(count)]


def synthetic_pixels(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Deterministic values in [-1, 1] with image-like structure (smooth waves plus a little noise)."""
    generator = torch.Generator().manual_seed(seed)
    steps = torch.linspace(0, 6.28, shape[-1])
    waves = torch.sin(steps * (1 + torch.rand(shape[:-1] + (1,), generator=generator) * 3))
    noise = torch.rand(shape, generator=generator) * 2 - 1
    return (0.8 * waves + 0.2 * noise).clamp(-1, 1)
