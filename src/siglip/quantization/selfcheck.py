"""Calibration checks its own result: the int8 model against the float one on the calibration inputs.

If the smallest embedding cosine is below the target, the int8 linears step back, the costliest first, until it
holds: with static scales, first to per-call (dynamic) activation scales for the inputs whose fixed range costs
the most (still int8: nearly as fast), then, where that is not enough, to float, a few more each round. What
stayed float is reported (a warning, and `config.quantization_config["float_layers"]`), what went dynamic is
recorded (`["dynamic_layers"]`), and a saved model reloads the same.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels.int8 import Int8Linear, int8_linear
from .observe import LinearStats

MIN_COSINE = 0.999


def min_cosine(outputs: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    return min(float(F.cosine_similarity(o.float(), r.float(), dim=-1).min()) for o, r in zip(outputs, reference))


@torch.no_grad()
def local_error(quantized: Int8Linear, original: nn.Linear, stats: LinearStats, dynamic: bool = False) -> float:
    """Relative error of one int8 linear's output on its calibration input rows (with its own activation scale,
    or, `dynamic`, with the rows' own range as a per-call scale would take it)."""
    rows = stats.sample().to(original.weight.device)
    expected = F.linear(rows, original.weight.float(), None if original.bias is None else original.bias.float())
    scale = quantized.input_scale.clone()
    if dynamic:
        quantized.input_scale.zero_()
    try:
        got = int8_linear([quantized], rows).float()
    finally:
        quantized.input_scale.copy_(scale)
    return float((got - expected).norm() / expected.norm().clamp_min(1e-12))


@dataclass
class Swap:
    """One step back for a quantised linear (or a group sharing one input): `apply` takes it (to float, or to
    dynamic scales), `undo` returns; `error` ranks it (what the step saves)."""

    name: str
    apply: Callable[[], None]
    undo: Callable[[], None]
    error: float


def swap_until(target: float, measure: Callable[[], float], swaps: list[Swap]) -> tuple[float, list[str]]:
    """Apply swaps, largest error first, until `measure()` reaches `target`: 1, 1, 2, 4, ... per round, then the
    fewest of the last round found by bisection. Returns (cosine reached, names of the swaps applied)."""
    cosine = measure()
    ordered = sorted(swaps, key=lambda swap: -swap.error)
    count, step, below = 0, 1, 0  # `below`: a count known to miss the target
    while cosine < target and count < len(ordered):
        below = count
        for swap in ordered[count : count + step]:
            swap.apply()
        count = min(len(ordered), count + step)
        cosine = measure()
        step = step if count < 2 else step * 2
    while cosine >= target and count - below > 1:  # the fewest that reach it, between `below` and `count`
        middle = (below + count) // 2
        for swap in ordered[middle:count]:
            swap.undo()
        tried = measure()
        if tried >= target:
            count, cosine = middle, tried
        else:
            for swap in ordered[middle:count]:
                swap.apply()
            below = middle
    return cosine, [swap.name for swap in ordered[:count]]  # cosine was measured on the state left in place


# Linears named in the warning; the rest are counted (all of them: config.quantization_config["float_layers"]).
NAMED_IN_WARNING = 6


def report(cosine: float, target: float, restored: list[str], total: int) -> None:
    if restored:
        named = ", ".join(restored[:NAMED_IN_WARNING])
        more = len(restored) - NAMED_IN_WARNING
        if more > 0:
            named += f" and {more} more (all in config.quantization_config['float_layers'])"
        warnings.warn(
            f"int8 quantization kept {len(restored)} of {total} linears in float to reach embedding cosine "
            f"{cosine:.5f} (target {target}) on the calibration inputs: {named}",
            stacklevel=4,
        )
    if cosine < target:
        warnings.warn(
            f"int8 quantization reached embedding cosine {cosine:.5f} on the calibration inputs, below the target "
            f"{target}, with every linear back in float: the error is outside the linears",
            stacklevel=4,
        )


@torch.no_grad()
def logit_spread(attention: nn.Module, stats: LinearStats) -> float:
    """Standard deviation of an attention layer's scaled logits q.k / sqrt(d) on its calibration rows.

    An error in q or k moves the logits in proportion to their size: where LayerNorm gains feed outliers into
    q and k the logits reach the tens and the softmax turns on small differences, so the ranking weighs q and k's
    local error by this spread (at least 1)."""
    rows = stats.sample()
    heads, width = attention.num_heads, attention.head_dim

    def project(linear: nn.Linear) -> torch.Tensor:
        bias = None if linear.bias is None else linear.bias.float()
        return F.linear(rows, linear.weight.float(), bias).view(-1, heads, width).transpose(0, 1)

    logits = project(attention.q_proj) @ project(attention.k_proj).transpose(-1, -2) * width**-0.5
    return max(1.0, float(logits.std()))
