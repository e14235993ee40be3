"""Weight initialisation for models built from a config (training from scratch or a new head).

Follows the big_vision / reference scheme: lecun-normal (truncated) for linear and conv layers, xavier-uniform
for attention and MLP weights, tiny-normal MLP biases, 1/sqrt(width) position embeddings, zero logit
scale and bias (training sets its own starting values, see the training issue). Loading a checkpoint does not
run any of this.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# The std of a unit normal truncated to [-2, 2]: dividing by it makes the truncated draw have the wanted std.
TRUNCATED_STD = 0.87962566103423978


def truncated_normal_(tensor: torch.Tensor, scale: float, bound: float = 2.0) -> torch.Tensor:
    """Fill `tensor` in place with N(0, scale^2) truncated to [-bound * scale, bound * scale].

    By the inverse CDF, in four vectorised passes: u ~ U(erf(-bound/sqrt 2), erf(bound/sqrt 2)), then
    x = sqrt(2) * scale * erfinv(u). The same distribution as `nn.init.trunc_normal_`, whose rejection loop in
    recent torch made building a base-size model from its config take 40-78 s (~4x slower per tensor, plus
    Python overhead per draw). Computed in fp32 for half-precision tensors (erfinv needs it).
    """
    limit = math.erf(bound / math.sqrt(2.0))
    with torch.no_grad():
        work = (
            tensor if tensor.dtype in (torch.float32, torch.float64) else torch.empty_like(tensor, dtype=torch.float32)
        )
        work.uniform_(-limit, limit).erfinv_().mul_(math.sqrt(2.0) * scale).clamp_(-bound * scale, bound * scale)
        if work is not tensor:
            tensor.copy_(work)
    return tensor


def variance_scaling_(tensor: torch.Tensor, distribution: str = "truncated_normal") -> None:
    """fan-in variance scaling: std = 1/sqrt(fan_in); truncated at 2 std and rescaled as in jax."""
    fan_in = tensor.shape[1] * tensor[0][0].numel() if tensor.dim() > 1 else tensor.shape[0]
    std = math.sqrt(1.0 / fan_in)
    with torch.no_grad():
        if distribution == "truncated_normal":
            truncated_normal_(tensor, scale=std / TRUNCATED_STD)
        else:
            nn.init.normal_(tensor, std=std)


def init_module(module: nn.Module) -> None:
    """Initialise one module in place: its class's own rule (`init_own_weights`, next to the class it
    initialises), else the generic one for embeddings, linear / conv layers and LayerNorms.

    `nn.Module.apply` visits children before parents, so a parent's rule (xavier for attention projections,
    the classifier's std) overrides the generic lecun-normal its linears received first.
    """
    own_rule = getattr(module, "init_own_weights", None)
    if own_rule is not None:
        own_rule()
    elif isinstance(module, nn.Embedding):
        variance_scaling_(module.weight, distribution="normal")
    elif isinstance(module, nn.Linear | nn.Conv2d):
        variance_scaling_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
