"""Attention kernels: softmax(q k^T / sqrt(d) + bias) v by the path that suits the inputs and this machine.

PyTorch's SDPA (its flash kernel on CPU), an eager form that returns the weights, flash-attn on CUDA, a blocked
bf16 form for CPU inference, and per-sequence attention over SigLIP2's packed sequences (`Segments`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .cpu import cpu_features


@dataclass(frozen=True)
class Segments:
    """Packed sequences: sequence i holds rows `bounds[i]` of a (1, total, hidden) batch, and attention stays
    within each sequence. Passed where a key-padding bias would go (SigLIP2's packed mode)."""

    bounds: tuple[tuple[int, int], ...]

    @classmethod
    def from_lengths(cls, lengths: list[int]) -> Segments:
        ends = list(itertools.accumulate(lengths))
        return cls(tuple(zip([0, *ends[:-1]], ends)))

    def __len__(self) -> int:
        return len(self.bounds)


def segment_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, segments: Segments, dropout: float = 0.0
) -> torch.Tensor:
    """SDPA per sequence over packed keys/values (1, heads, total, head_dim).

    `query` is either packed the same way (self-attention) or holds one batch row per sequence (the MAP head's
    probe). The result has `query`'s shape, laid out (batch, tokens, heads, head_dim) underneath so that the
    caller's transpose + reshape is free.
    """
    per_sequence_query = query.shape[0] == len(segments) and query.shape[2] != key.shape[2]
    batch, heads, tokens, head_dim = query.shape
    output = query.new_empty(batch, tokens, heads, head_dim).transpose(1, 2)
    scale = head_dim**-0.5
    for index, (start, end) in enumerate(segments.bounds):
        rows = query[index : index + 1] if per_sequence_query else query[:, :, start:end]
        target = output[index : index + 1] if per_sequence_query else output[:, :, start:end]
        keys, values = key[:, :, start:end], value[:, :, start:end]
        if _use_blocked_cpu_attention(rows, dropout):
            target.copy_(blocked_cpu_attention(rows, keys, values, None, scale))
        else:
            target.copy_(F.scaled_dot_product_attention(rows, keys, values, dropout_p=dropout, scale=scale))
    return output


def scaled_dot_product(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    bias: torch.Tensor | Segments | None,
    implementation: str,
    dropout: float = 0.0,
    need_weights: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """softmax(q k^T / sqrt(d) + bias) v over (batch, heads, tokens, head_dim) tensors.

    "eager" (or any call that needs the weights) materialises the probabilities with an fp32 softmax, as the
    reference does; "sdpa" uses PyTorch's fused kernel (bf16 inference on CPU: `blocked_cpu_attention`, twice as
    fast there); "flash_attention_2" calls flash-attn on CUDA for
    unmasked half-precision inputs and falls back to SDPA otherwise. `Segments` in place of a bias runs SDPA
    within each packed sequence (no weights, no dropout: inference of SigLIP2's packed mode).
    """
    if isinstance(bias, Segments):
        return segment_attention(query, key, value, bias, dropout), None
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
    if _use_blocked_cpu_attention(query, dropout):
        return blocked_cpu_attention(query, key, value, bias, scale), None
    output = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, dropout_p=dropout, scale=scale)
    return output, None


def folding_applies(inputs: torch.Tensor) -> bool:
    """Where `folded_one_query_attention` replaces the projected form: fp32 inference. Under autograd the
    reference's graph runs (the key bias gets its gradient), and bf16 keeps the reference's rounding of k and v."""
    return inputs.dtype == torch.float32 and not torch.is_grad_enabled()


def folded_one_query_attention(
    query: torch.Tensor,
    inputs: torch.Tensor,
    key_weight: torch.Tensor,
    value_weight: torch.Tensor,
    value_bias: torch.Tensor | None,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """Attention of one query per sequence over keys and values that are linear in `inputs`, without projecting
    them: `query` (batch, heads, head_dim), already projected; `inputs` (batch, keys, hidden), what k_proj and v_proj
    read; `bias` an additive key mask (batch or 1, 1, 1, keys). Returns the heads' outputs as (batch, 1, hidden).

    Per head h: q.k_j = (W_k,h^T q).x_j + q.b_k,h, and the second term, the same for every key, leaves the softmax
    as is (so the key bias is not needed); sum_j p_j v_j = W_v,h (sum_j p_j x_j) + b_v,h as the p_j sum to 1. The
    query is carried back to the input width (2 d^2 per sequence) instead of keys and values forward for every
    position (4 d^2 per key): the same numbers up to rounding. For the text tower's last layer and the MAP head."""
    batch, keys, hidden = inputs.shape
    heads, head_dim = query.shape[1], query.shape[2]
    # (heads, batch, head_dim) x (heads, head_dim, hidden): each head's query in the input space
    carried = torch.bmm(query.transpose(0, 1), key_weight.reshape(heads, head_dim, hidden))
    scores = torch.bmm(carried.transpose(0, 1), inputs.transpose(1, 2)).mul_(head_dim**-0.5)  # (batch, heads, keys)
    if bias is not None:
        scores += bias.reshape(bias.shape[0], 1, keys)
    mixed = torch.bmm(torch.softmax(scores, dim=-1), inputs)  # (batch, heads, hidden)
    values = torch.bmm(mixed.transpose(0, 1), value_weight.reshape(heads, head_dim, hidden).transpose(1, 2))
    if value_bias is not None:
        values += value_bias.reshape(heads, 1, head_dim)
    return values.transpose(0, 1).reshape(batch, 1, hidden)


# Score elements (batch x heads x queries x keys) per block of blocked_cpu_attention: ~8 MB of bf16 scores.
CPU_ATTENTION_BLOCK_SCORES = 1 << 22
# With AMX, PyTorch's CPU flash-attention kernel (AMX tiles) beats the blocked GEMMs from this many queries on:
# base image tower at 196 tokens, batch 32, 7 interleaved rounds on a 2-core AMX Xeon: bf16 27.9 vs 26.3 img/s,
# int8 37.0 vs 32.4; text tower at 64 tokens: bf16 97.0 vs 102.7 texts/s (blocked ahead), int8 level.
AMX_FLASH_MIN_QUERIES = 128
_CPU_HAS_AMX = cpu_features().amx
# Blocked bf16 GEMMs need bf16 dot products: emulated (AVX2, AVX-512 without bf16) a batched bf16 matmul of the
# base tower's attention scores took 630 ms where fp32 took 27 ms and bf16 SDPA 16 ms (AVX2 cap on the AMX Xeon).
_CPU_HAS_NATIVE_BF16 = cpu_features().native_bf16


def _use_blocked_cpu_attention(query: torch.Tensor, dropout: float) -> bool:
    """bf16 inference on a CPU with native bf16: without AMX, PyTorch's CPU flash-attention kernel runs bf16 at
    ~80 GFLOP/s, while oneDNN's batched GEMMs plus a bf16 softmax do the same work about twice as fast
    (benchmarks/results_models.md); with AMX the flash kernel wins on long sequences (AMX_FLASH_MIN_QUERIES);
    without native bf16, SDPA (which computes bf16 in fp32 blocks) is the fast one."""
    if not _CPU_HAS_NATIVE_BF16 or (_CPU_HAS_AMX and query.shape[-2] >= AMX_FLASH_MIN_QUERIES):
        return False
    return query.device.type == "cpu" and query.dtype == torch.bfloat16 and dropout == 0 and not query.requires_grad


@torch.compiler.disable  # traced by inductor instead, a compiled vision bf16 batch took 3.58 s instead of 3.17 s
def blocked_cpu_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """softmax(scale q k^T + bias) v with bf16 scores, a few sequences at a time so the scores stay in cache.

    The scores are rounded to bf16 before the softmax (as the reference's eager bf16 attention does); the softmax
    itself computes in fp32. The result is laid out (batch, tokens, heads, head_dim) underneath, so the caller's
    transpose + reshape is free.
    """
    batch, heads, tokens, head_dim = query.shape
    keys = key.shape[2]
    output = query.new_empty(batch, tokens, heads, head_dim).transpose(1, 2)
    step = max(1, CPU_ATTENTION_BLOCK_SCORES // (heads * tokens * keys))
    for start in range(0, batch, step):
        rows = slice(start, start + step)
        scores = torch.matmul(query[rows], key[rows].transpose(-1, -2)).mul_(scale)
        if bias is not None:
            scores += bias[rows] if bias.shape[0] == batch else bias
        output[rows] = torch.matmul(torch.softmax(scores, dim=-1), value[rows])
    return output
