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
from ..kernels import linear as kernels
from ..kernels import streams
from ..kernels.attention import (  # noqa: F401 (Segments and scaled_dot_product are re-exported)
    Segments,
    folded_one_query_attention,
    folding_applies,
    scaled_dot_product,
)

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

    Returns None when nothing is masked, so the attention kernels can take their unmasked fast path (in eager
    only: under torch.compile that test would read a value and break the graph, and an all-zero bias is exact).
    """
    if attention_mask is None or (not torch.compiler.is_compiling() and bool(attention_mask.all())):
        return None
    keep = attention_mask[:, None, None, :].to(torch.bool)
    bias = torch.zeros(keep.shape, dtype=dtype, device=attention_mask.device)
    return bias.masked_fill(~keep, torch.finfo(dtype).min)


class SiglipAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v/out projections (the checkpoint layout).

    q, k and v are one `kernels.fused_linear` call (one GEMM where the kernel allows), and the residual goes into
    the output projection's call; the parameters stay the reference's.
    """

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

    def init_own_weights(self) -> None:
        """Initialisation from scratch (modeling/init.py): xavier-uniform projections, zero biases."""
        for linear in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(
        self,
        hidden_states: torch.Tensor,
        bias: torch.Tensor | Segments | None = None,
        need_weights: bool = False,
        residual: torch.Tensor | None = None,
        last_query_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attention over `hidden_states` (batch, tokens, hidden); `residual` is added to the output if given.
        With `last_query_only` only the last position attends (to every key): the output is (batch, 1, hidden)."""
        plain = need_weights or self.training or isinstance(bias, Segments)
        if last_query_only and not plain and folding_applies(hidden_states):
            folded = self._last_query_folded(hidden_states, bias, residual)
            if folded is not None:
                return folded, None
        query, key, value = self.project_qkv(hidden_states)
        if last_query_only:
            query = query[:, :, -1:]
            residual = residual[:, -1:] if residual is not None else None
        batch, tokens = query.shape[0], query.shape[2]
        dropout = self.dropout if self.training else 0.0
        output, weights = scaled_dot_product(query, key, value, bias, self.implementation, dropout, need_weights)
        output = output.transpose(1, 2).reshape(batch, tokens, self.num_heads * self.head_dim)
        return kernels.linear(self.out_proj, output, residual=residual), weights

    def _last_query_folded(
        self, hidden_states: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor | None
    ) -> torch.Tensor | None:
        """The last position's attention output, keys and values folded into its query (attention.py's
        `folded_one_query_attention`: ~1.5 % of the base text tower's work saved); None where the key or value
        projection is not a plain or int8 linear."""
        weights = [kernels.float_weight(module) for module in (self.k_proj, self.v_proj)]
        if weights[0] is None or weights[1] is None:
            return None
        (key_weight, _), (value_weight, value_bias) = weights
        batch = hidden_states.shape[0]
        query = kernels.linear(self.q_proj, hidden_states[:, -1]).view(batch, self.num_heads, self.head_dim)
        output = folded_one_query_attention(query, hidden_states, key_weight, value_weight, value_bias, bias)
        return kernels.linear(self.out_proj, output, residual=None if residual is None else residual[:, -1:])

    def project_qkv(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(batch, tokens, hidden) -> query, key, value as (batch, heads, tokens, head_dim) views."""
        fused = kernels.fused_linear((self.q_proj, self.k_proj, self.v_proj), hidden_states)
        # view with the input's own sizes (not unflatten): the ONNX tracer keeps them symbolic
        fused = fused.view(*hidden_states.shape[:-1], 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return fused[0], fused[1], fused[2]


class SiglipMLP(nn.Module):
    """fc1 -> activation -> fc2, plus the optional residual: one `kernels.mlp` call, which may fuse them."""

    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str) -> None:
        super().__init__()
        self.hidden_act = hidden_act
        self.activation_fn = activation(hidden_act)
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.fc2 = nn.Linear(intermediate_size, hidden_size)

    def init_own_weights(self) -> None:
        """Initialisation from scratch (modeling/init.py): xavier-uniform weights, tiny-normal biases."""
        for linear in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.normal_(linear.bias, std=1e-6)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """fc2(act(fc1(x))), plus `residual` if given."""
        return kernels.mlp(self.fc1, self.fc2, self.hidden_act, self.activation_fn, hidden_states, residual)


class SiglipEncoderLayer(nn.Module):
    """Pre-LN block: x + attn(LN(x)), then x + MLP(LN(x))."""

    # The checkpoints' block layout under these attribute names: code that rewrites a model's linears finds the
    # blocks by this marker rather than by importing the class.
    encoder_block = True

    def __init__(self, config) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = SiglipAttention(config.hidden_size, config.num_attention_heads, config.attention_dropout)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SiglipMLP(config.hidden_size, config.intermediate_size, config.hidden_act)

    def forward(
        self, hidden_states: torch.Tensor, bias: torch.Tensor | Segments | None = None, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        hidden_states, weights = self.self_attn(self.layer_norm1(hidden_states), bias, need_weights, hidden_states)
        hidden_states = self.mlp(self.layer_norm2(hidden_states), hidden_states)
        return hidden_states, weights

    def last_position(self, hidden_states: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """This layer's output at the last position alone, (batch, 1, hidden): keys and values still come from
        every position, but the attention output, the residuals and the MLP run for that one row."""
        attended, _ = self.self_attn(self.layer_norm1(hidden_states), bias, False, hidden_states, True)
        return self.mlp(self.layer_norm2(attended), attended)


class SiglipEncoder(nn.Module):
    """A stack of encoder layers, with optional activation checkpointing during training."""

    def __init__(self, config) -> None:
        super().__init__()
        self.layers = nn.ModuleList([SiglipEncoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.gradient_checkpointing = False

    def forward(
        self,
        hidden_states: torch.Tensor,
        bias: torch.Tensor | Segments | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        last_position_only: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None, tuple[torch.Tensor, ...] | None]:
        """Returns (last hidden state, hidden states incl. the input if asked, attentions if asked).

        `last_position_only` (no hidden states or attentions asked): the final layer runs for the last position
        only, and the last hidden state is (batch, 1, hidden), for a head that reads nothing else.
        CPU inference splits a large enough batch across concurrent streams (streams.py)."""
        if last_position_only and (output_attentions or output_hidden_states or isinstance(bias, Segments)):
            raise ValueError("last_position_only gives no hidden states or attentions, and no packed sequences")
        count = 1 if isinstance(bias, Segments) else streams.stream_count(hidden_states, self.training)
        if count > 1:
            parts = streams.run_in_streams(
                count,
                self._layers,
                hidden_states.shape[0],
                hidden_states,
                bias,
                output_attentions,
                output_hidden_states,
                last_position_only,
            )
            return tuple(_concatenated([part[i] for part in parts]) for i in range(3))
        return self._layers(hidden_states, bias, output_attentions, output_hidden_states, last_position_only)

    def _layers(
        self,
        hidden_states: torch.Tensor,
        bias: torch.Tensor | Segments | None,
        output_attentions: bool,
        output_hidden_states: bool,
        last_position_only: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None, tuple[torch.Tensor, ...] | None]:
        all_hidden = [hidden_states] if output_hidden_states else None
        all_weights = [] if output_attentions else None
        for index, layer in enumerate(self.layers):
            if last_position_only and index == len(self.layers) - 1:
                hidden_states = layer.last_position(hidden_states, bias)
            elif self.gradient_checkpointing and self.training and torch.is_grad_enabled():
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


def _concatenated(parts: list) -> torch.Tensor | tuple[torch.Tensor, ...] | None:
    """The streams' results joined along the batch: tensors, or tuples of tensors (one per layer), or None."""
    if parts[0] is None:
        return None
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts)
    return tuple(torch.cat(layer) for layer in zip(*parts))
