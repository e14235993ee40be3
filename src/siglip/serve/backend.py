"""The seam between the server and what computes embeddings: a `Backend` takes a tower's batch and returns one
unnormalised float32 CPU row per item. The batchers run it on the engine's single model thread.

`TorchBackend` (the model in this process, through the library's own code paths) is the one there is; another
backend (an int8 build, ONNX Runtime, OpenVINO) plugs into `Engine(backend=...)` by implementing these two
methods, with no change to the routes or the batcher.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from ..encode import encode_texts, model_inputs


class Backend(Protocol):
    def embed_texts(self, texts: list[str]) -> list[torch.Tensor]:
        """One embedding row per text, tokenized as the model was trained (`encode.tokenize_as_trained`)."""
        ...

    def embed_images(self, inputs: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
        """One embedding row per image, each given as its processor tensors (a batch of 1)."""
        ...


class TorchBackend:
    """A loaded PyTorch model (+ its processor): text through `encode.encode_texts`, images through
    `get_image_features`, so the server gives what `siglip.pipeline` and `siglip.Index` give."""

    def __init__(self, model: Any, processor: Any) -> None:
        self.model, self.processor = model, processor

    def embed_texts(self, texts: list[str]) -> list[torch.Tensor]:
        features = encode_texts(self.model, self.processor, texts, batch_size=len(texts), normalize=False)
        return list(features.float().cpu())

    def embed_images(self, inputs: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
        batch = {key: torch.cat([item[key] for item in inputs]) for key in inputs[0]}
        with torch.inference_mode():
            features = self.model.get_image_features(**model_inputs(batch, self.model.device, self.model.dtype))
        return list(features.float().cpu())
