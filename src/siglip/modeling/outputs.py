"""Model outputs with the reference's field names.

An output is a dataclass that also behaves like the tuple of its non-None fields: `out[0]`, `a, b = out`,
`len(out)`; like a mapping: `out["logits"]`, `out.keys()`, `dict(out)`; and by attribute: `out.logits`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class ModelOutput:
    """Base class: tuple-like over the fields that are not None, in declaration order."""

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]

    def values(self) -> list[Any]:
        return [getattr(self, key) for key in self.keys()]

    def items(self) -> list[tuple[str, Any]]:
        return [(key, getattr(self, key)) for key in self.keys()]

    def to_tuple(self) -> tuple[Any, ...]:
        """The non-None fields as a tuple; nested outputs become tuples too (as `return_dict=False`)."""
        return tuple(value.to_tuple() if isinstance(value, ModelOutput) else value for value in self.values())

    def __getitem__(self, index: int | slice | str) -> Any:
        if isinstance(index, str):
            if index not in self.keys():
                raise KeyError(index)
            return getattr(self, index)
        return tuple(self.values())[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.values())

    def __len__(self) -> int:
        return len(self.keys())

    def __contains__(self, key: object) -> bool:
        return key in self.keys()


@dataclass
class BaseModelOutputWithPooling(ModelOutput):
    """A tower's output: per-token states, the pooled vector, and optional per-layer states/attentions."""

    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class SiglipOutput(ModelOutput):
    """SiglipModel's output: sigmoid loss (if asked), both logit matrices, normalised embeddings, tower outputs."""

    loss: torch.Tensor | None = None
    logits_per_image: torch.Tensor | None = None
    logits_per_text: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    text_model_output: BaseModelOutputWithPooling | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None


@dataclass
class ImageClassifierOutput(ModelOutput):
    """Classification output: loss (if labels were given), logits, optional states and attentions."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
