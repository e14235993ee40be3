"""Scale migration (SmoothQuant, Xiao et al. 2023): move activation outliers into the weights before int8.

Trained transformers carry a few input channels of very large magnitude into their linears (LayerNorm gains
and "massive activations" in the residual stream). One per-tensor uint8 scale must cover them, and every other
channel is left with a few levels: the int8 result drifts (cosine 0.96-0.97 to fp32 on towers with 20-100x
channels). For a linear y = x W^T, dividing input channel j by s_j and multiplying weight column j by s_j
changes nothing in exact arithmetic; with s_j = peak|x_j|^alpha / peak|W_:,j|^(1 - alpha) the activation's
channels become even and the weights absorb the difference, where per-output-channel weight scales cope with
it. The division is folded into what produces x, so it costs nothing at run time:
- q, k, v (input: layer_norm1's output) and fc1 (layer_norm2's output): into the LayerNorm's weight and bias;
- out_proj (input: the attention output, linear in v per channel): into v_proj's rows and bias.
fc2's input (after GELU) has no linear producer and keeps its scale. Equal in float up to rounding: the
smoothed float model gives the same embeddings (tested to 1e-5).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from .blocks import encoder_blocks

ALPHA = 0.5  # migration strength: 0.5 splits the range evenly between activations and weights
# Only inputs with outlier channels are smoothed: largest channel peak over the median one above this. Evened-out
# channels leave static scales no headroom for inputs a little larger than the calibration's (a base-width tower
# calibrated on 2 photos: cosine 0.9986 on unseen photos smoothed, 0.9996 not); without outliers, nothing to gain.
OUTLIER_RATIO = 6.0
SCALE_LIMITS = (1e-4, 1e4)


@dataclass
class SmoothingGroup:
    """Linears that read one input, and the producer whose output channels can absorb 1 / s."""

    consumers: tuple[nn.Linear, ...]
    producer: nn.Module  # a LayerNorm (weight, bias per channel) or a Linear (rows per channel)


def smoothing_groups(model: nn.Module) -> Iterator[SmoothingGroup]:
    for block in encoder_blocks(model):
        attention = block.self_attn
        yield SmoothingGroup((attention.q_proj, attention.k_proj, attention.v_proj), block.layer_norm1)
        yield SmoothingGroup((attention.out_proj,), attention.v_proj)
        yield SmoothingGroup((block.mlp.fc1,), block.layer_norm2)


def migration_scales(activation_peak: torch.Tensor, weights: list[torch.Tensor], alpha: float = ALPHA) -> torch.Tensor:
    """s_j = peak|x_j|^alpha / peak|W_:,j|^(1-alpha) over the group's weights; 1 where a channel never moved."""
    weight_peak = torch.stack([w.detach().float().abs().amax(dim=0) for w in weights]).amax(dim=0)
    scales = activation_peak.float().clamp_min(1e-8).pow(alpha) / weight_peak.clamp_min(1e-8).pow(1 - alpha)
    scales = torch.where((activation_peak > 0) & (weight_peak > 0), scales, torch.ones_like(scales))
    return scales.clamp(*SCALE_LIMITS)


@torch.no_grad()
def smooth(model: nn.Module, channel_peaks: dict[nn.Module, torch.Tensor], alpha: float = ALPHA) -> int:
    """Migrate activation scale into the weights of every group whose input has outlier channels (its peaks
    recorded in `channel_peaks`, OUTLIER_RATIO); returns the number of groups smoothed. The model must still be
    float (before quantisation)."""
    count = 0
    for group in smoothing_groups(model):
        peak = channel_peaks.get(group.consumers[0])
        if peak is None or float(peak.max()) <= OUTLIER_RATIO * float(peak.median().clamp_min(1e-12)):
            continue
        scales = migration_scales(peak, [linear.weight for linear in group.consumers], alpha)
        producer = group.producer
        if isinstance(producer, nn.LayerNorm):
            if producer.weight is None:
                continue  # no per-channel gain to fold 1 / s into
            producer.weight.div_(scales.to(producer.weight.dtype))
            if producer.bias is not None:
                producer.bias.div_(scales.to(producer.bias.dtype))
        else:
            producer.weight.div_(scales.to(producer.weight.dtype)[:, None])
            if producer.bias is not None:
                producer.bias.div_(scales.to(producer.bias.dtype))
        for linear in group.consumers:
            linear.weight.mul_(scales.to(linear.weight.dtype)[None, :])
        count += 1
    return count
