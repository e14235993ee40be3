"""The transformer blocks whose linears the int8 path rewrites, found by structure.

quantization/ sits below modeling/ and imports nothing from it: a block is a module whose class sets
`encoder_block = True` (modeling's `SiglipEncoderLayer`), laid out under the names SigLIP checkpoints use:
`layer_norm1`, `self_attn` (`q_proj`, `k_proj`, `v_proj`, `out_proj`; `num_heads`, `head_dim`), `layer_norm2`,
`mlp` (`fc1` -> activation -> `fc2`).
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

ATTENTION_LINEARS = ("q_proj", "k_proj", "v_proj", "out_proj")
MLP_LINEARS = ("fc1", "fc2")
SHARED_INPUT = ("q_proj", "k_proj", "v_proj")  # read one tensor: one activation scale, one Gram matrix


def input_key(owner: nn.Module, name: str) -> tuple[nn.Module, str]:
    """Which input a linear reads: q, k and v of one attention share theirs, every other linear has its own."""
    return owner, "qkv" if name in SHARED_INPUT else name


def encoder_blocks(model: nn.Module) -> Iterator[nn.Module]:
    """Every encoder block of `model`, in forward order (the towers' MAP head is not one)."""
    return (module for module in model.modules() if getattr(type(module), "encoder_block", False) is True)


def encoder_linears(model: nn.Module) -> Iterator[tuple[nn.Module, str]]:
    """(owner module, attribute name) of every linear the int8 path replaces, in forward order: each block's
    attention projections, then its MLP."""
    for block in encoder_blocks(model):
        yield from ((block.self_attn, name) for name in ATTENTION_LINEARS)
        yield from ((block.mlp, name) for name in MLP_LINEARS)
