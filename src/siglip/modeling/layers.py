"""The transformer pieces both towers share: attention, MLP, pre-LN encoder block, encoder.

One encoder serves text and vision, SigLIP and SigLIP2. Numerics follow the reference: pre-LN blocks,
LayerNorm eps from the config, GELU (tanh approximation), attention softmax in fp32.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError, DependencyError

ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")


def _gelu_tanh_formula(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": F.gelu,
    "gelu_new": _gelu_tanh_formula,
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "relu": F.relu,
    "selu": F.selu,
}


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in ACTIVATIONS:
        raise ConfigError(f"hidden_act {name!r} is not supported; choose one of {sorted(ACTIVATIONS)}.")
    return ACTIVATIONS[name]


def check_attn_implementation(name: str | None) -> str:
    """Validate an `attn_implementation` name (None means the default, "sdpa")."""
    name = name or "sdpa"
    if name not in ATTENTION_IMPLEMENTATIONS:
        raise ConfigError(f"attn_implementation {name!r} is not one of {ATTENTION_IMPLEMENTATIONS}.")
    if name == "flash_attention_2":
        try:
            import flash_attn  # noqa: F401
        except ImportError:
            raise DependencyError(
                "attn_implementation='flash_attention_2' needs the flash-attn package and a CUDA GPU: "
                "`pip install flash-attn --no-build-isolation`, or use attn_implementation='sdpa'."
            ) from None
    return name


def key_padding_bias(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """(batch, keys) 0/1 mask -> additive (batch, 1, 1, keys) bias: 0 where kept, dtype-min where masked.

    Returns None when nothing is masked, so the attention kernels can take their unmasked fast path.
    """
    if attention_mask is None or bool(attention_mask.all()):
        return None
    keep = attention_mask[:, None, None, :].to(torch.bool)
    bias = torch.zeros(keep.shape, dtype=dtype, device=attention_mask.device)
    return bias.masked_fill(~keep, torch.finfo(dtype).min)


def scaled_dot_product(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    bias: torch.Tensor | None,
    implementation: str,
    dropout: float = 0.0,
    need_weights: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """softmax(q k^T / sqrt(d) + bias) v over (batch, heads, tokens, head_dim) tensors.

    "eager" (or any call that needs the weights) materialises the probabilities with an fp32 softmax, as the
    reference does; "sdpa" uses PyTorch's fused kernel; "flash_attention_2" calls flash-attn on CUDA for
    unmasked half-precision inputs and falls back to SDPA otherwise.
    """
    scale = query.shape[-1] ** -0.5
    if need_weights or implementation == "eager":
        scores = torch.matmul(query, key.transpose(-1, -2)) * scale
        if bias is not None:
            scores = scores + bias
        weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        weights = F.dropout(weights, p=dropout, training=dropout > 0)
        return torch.matmul(weights, value), weights
    if implementation == "flash_attention_2" and bias is None and query.is_cuda and query.dtype != torch.float32:
        from flash_attn import flash_attn_func

        output = flash_attn_func(
            query.transpose(1, 2),
            key.transpose(1, 2),
            value.transpose(1, 2),
            dropout_p=dropout,
            softmax_scale=scale,
        )
        return output.transpose(1, 2), None
    output = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, dropout_p=dropout, scale=scale)
    return output, None


class SiglipAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v/out projections (the checkpoint layout)."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.dropout = dropout
        self.implementation = "sdpa"
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(hidden_size, hidden_size)
        self.v_proj = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)

    def forward(
        self, hidden_states: torch.Tensor, bias: torch.Tensor | None = None, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, tokens, _ = hidden_states.shape
        split = (batch, tokens, self.num_heads, self.head_dim)
        query = self.q_proj(hidden_states).view(split).transpose(1, 2)
        key = self.k_proj(hidden_states).view(split).transpose(1, 2)
        value = self.v_proj(hidden_states).view(split).transpose(1, 2)
        dropout = self.dropout if self.training else 0.0
        output, weights = scaled_dot_product(query, key, value, bias, self.implementation, dropout, need_weights)
        output = output.transpose(1, 2).reshape(batch, tokens, -1)
        return self.out_proj(output), weights


class SiglipMLP(nn.Module):
    """fc1 -> activation -> fc2."""

    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str) -> None:
        super().__init__()
        self.activation_fn = activation(hidden_act)
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.fc2 = nn.Linear(intermediate_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(hidden_states)))


class SiglipEncoderLayer(nn.Module):
    """Pre-LN block: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, config) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = SiglipAttention(config.hidden_size, config.num_attention_heads, config.attention_dropout)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SiglipMLP(config.hidden_size, config.intermediate_size, config.hidden_act)

    def forward(
        self, hidden_states: torch.Tensor, bias: torch.Tensor | None = None, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.self_attn(self.layer_norm1(hidden_states), bias, need_weights)
        hidden_states = hidden_states + attended
        hidden_states = hidden_states + self.mlp(self.layer_norm2(hidden_states))
        return hidden_states, weights


class SiglipEncoder(nn.Module):
    """A stack of encoder layers, with optional activation checkpointing during training."""

    def __init__(self, config) -> None:
        super().__init__()
        self.layers = nn.ModuleList([SiglipEncoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.gradient_checkpointing = False

    def forward(
        self,
        hidden_states: torch.Tensor,
        bias: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None, tuple[torch.Tensor, ...] | None]:
        """Returns (last hidden state, hidden states incl. the input if asked, attentions if asked)."""
        all_hidden = [hidden_states] if output_hidden_states else None
        all_weights = [] if output_attentions else None
        for layer in self.layers:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                hidden_states, weights = checkpoint(layer, hidden_states, bias, output_attentions, use_reentrant=False)
            else:
                hidden_states, weights = layer(hidden_states, bias, output_attentions)
            if all_hidden is not None:
                all_hidden.append(hidden_states)
            if all_weights is not None:
                all_weights.append(weights)
        return (
            hidden_states,
            tuple(all_hidden) if all_hidden is not None else None,
            tuple(all_weights) if all_weights is not None else None,
        )
