"""`BatchFeature`: the dict-like batch that tokenizers, image processors and processors return."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from .errors import InputError

TENSOR_TYPES = ("pt", "np", None)


def convert_to_tensors(value: Any, tensor_type: str | None) -> Any:
    """Turn a nested list / array / tensor into the requested type ("pt", "np" or None = unchanged)."""
    if tensor_type not in TENSOR_TYPES:
        raise InputError(f"return_tensors must be one of 'pt', 'np' or None, got {tensor_type!r}")
    if tensor_type is None:
        return value
    if tensor_type == "np":
        return value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if isinstance(value, torch.Tensor):
        return value
    return torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else torch.tensor(value)


class BatchFeature(dict):
    """A `dict` of model inputs with attribute access (`batch.input_ids`) and `.to(device or dtype)`.

    `.to(dtype)` casts only floating-point tensors (pixel values), never ids or masks, as the reference does.
    """

    def __init__(self, data: Mapping[str, Any] | None = None, tensor_type: str | None = None):
        super().__init__({key: convert_to_tensors(value, tensor_type) for key, value in (data or {}).items()})

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def convert_to_tensors(self, tensor_type: str | None) -> BatchFeature:
        for key, value in self.items():
            self[key] = convert_to_tensors(value, tensor_type)
        return self

    def to(self, *args: Any, **kwargs: Any) -> BatchFeature:
        """Move tensors to a device and/or cast floating tensors to a dtype; returns `self`."""
        casts_dtype = any(isinstance(arg, torch.dtype) for arg in args) or "dtype" in kwargs
        for key, value in self.items():
            if not isinstance(value, torch.Tensor):
                continue
            if casts_dtype and not value.is_floating_point():
                device = kwargs.get("device") or next((a for a in args if isinstance(a, (str, torch.device))), None)
                self[key] = value.to(device) if device is not None else value
            else:
                self[key] = value.to(*args, **kwargs)
        return self


BatchEncoding = BatchFeature


def model_inputs(inputs: Any, device: torch.device, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """A processor batch moved to the model's device; floating inputs (pixels) take the model's dtype."""
    moved = {}
    for key, value in dict(inputs).items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, dtype) if dtype is not None and value.is_floating_point() else value.to(device)
        moved[key] = value
    return moved
