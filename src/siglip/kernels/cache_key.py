"""What identifies a tensor's contents for the kernels' caches (packed and int8 weights)."""

from __future__ import annotations

import torch


def tensor_key(tensor: torch.Tensor) -> tuple:
    """What identifies a tensor's contents for a cache: storage, in-place version (None for inference tensors,
    which track none), dtype and device."""
    version = None if tensor.is_inference() else tensor._version
    return tensor.data_ptr(), version, tensor.dtype, tensor.device
