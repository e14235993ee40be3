"""Turn a loaded model's encoder linears into `Int8Linear`s, calibrate their activation scales, or rebuild the
int8 structure of a saved int8 checkpoint before its tensors are read.

What becomes int8: every encoder layer's q, k, v and output projections and its MLP (fc1, fc2): ~98 % of a
tower's GEMM work. What stays float (the model's dtype): the patch and token embeddings, every LayerNorm, the
attention products and softmax, the vision MAP head and the text head, where int8 would cost accuracy for
little time. Calibration runs the float model once over `calibration` inputs and records each linear's input
range (min / max), widened by CALIBRATION_MARGIN so that inputs a little outside what the few calibration
images showed are not clipped; activations are then quantised with fixed scales (fast, batch-independent).
Without calibration each call measures its own input (dynamic).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..kernels.int8 import Int8Linear, check_int8_supported
from .blocks import encoder_blocks, encoder_linears
from .calibration import synthetic_batches
from .observe import as_batches, embeddings, observe
from .selfcheck import MIN_COSINE, Swap, keep_float_until, local_error, logit_spread, report
from .selfcheck import min_cosine as min_cosine_of
from .smoothing import ALPHA, smooth

METHOD = "int8"
# config.quantization_config of a saved int8 model; from_pretrained rebuilds the int8 modules when it is set.
CONFIG_KEY = "quantization_config"
# Calibrated ranges are widened by this factor (away from 0). Calibrated on 2 photos and measured on 8 (random
# towers, widths 64 and 768), the worst embedding cosine to fp32 was 0.9914 at 1.0x, 0.9976 at 1.25x and 0.9998
# at 1.5x; the extra resolution lost costs nothing measurable at the base width (0.99995 either way).
CALIBRATION_MARGIN = 1.5
SMOOTHING = f"smoothquant-{ALPHA}"  # recorded in quantization_config
# The self-check aims at 1 - (1 - min_cosine) * MARGIN on the inputs it measures: calibrated on 4 photos of a tower
# whose attention logits amplify errors (LayerNorm gains x20 before q/k), half the allowance there (0.9995) gave
# 0.9982 on 4 unseen photos, a quarter 0.999+.
MARGIN = 0.25


def _link_consumers(model: nn.Module) -> None:
    """fc1 knows its fc2, so that with static scales fc1's GELU output leaves the GEMM as uint8."""
    for mlp in (block.mlp for block in encoder_blocks(model)):
        if isinstance(mlp.fc1, Int8Linear):
            mlp.fc1.__dict__["consumer"] = mlp.fc2 if isinstance(mlp.fc2, Int8Linear) else None


def _linear_names(model: nn.Module) -> dict[nn.Module, str]:
    return {module: name for name, module in model.named_modules()}


def convert_empty(model: nn.Module, device: torch.device | str | None = None, float_layers: Any = ()) -> None:
    """Replace the linears by int8 ones of the same shapes with unset contents (a saved int8 checkpoint fills
    them); used by from_pretrained on the meta device. `float_layers`: names of linears the calibration kept float."""
    keep = set(float_layers or ())
    names = _linear_names(model)
    for owner, name in list(encoder_linears(model)):
        linear = getattr(owner, name)
        if names.get(linear) in keep:
            continue
        setattr(owner, name, Int8Linear(linear.in_features, linear.out_features, linear.bias is not None, device))
    _link_consumers(model)


def quantize_model(model: nn.Module, calibration: Any = None, min_cosine: float | None = MIN_COSINE) -> nn.Module:
    """Make `model`'s encoder linears int8 in place (CPU only); `calibration`: inputs for static scales.

    Activation outliers are first migrated into the weights (smoothing.py), measured on `calibration` or, without
    it, on a few synthetic inputs (calibration.synthetic_batches). The int8 model is then checked against the
    float one on the same inputs, and the linears that cost the most go back to float until the smallest
    embedding cosine there is within a quarter of `min_cosine`'s allowance (MARGIN; None: no check); see
    selfcheck.py.
    """
    check_int8_supported()
    if next(model.parameters()).device.type != "cpu":
        raise InputError(
            "int8 inference runs on CPU only (oneDNN's x86 int8 kernels); this model is on "
            f"{next(model.parameters()).device}. Move it with model.to('cpu') first, or use bf16/fp16 on the GPU."
        )
    if any(isinstance(m, Int8Linear) for m in model.modules()):
        raise InputError(
            "this model is already quantized to int8; to calibrate it, load the float checkpoint and call "
            "quantize('int8', calibration=...) once (or from_pretrained(..., quantization='int8', calibration=...))"
        )
    if min_cosine is not None and not 0 < min_cosine <= 1:
        raise InputError(f"min_cosine must be in (0, 1] or None, got {min_cosine!r}")
    static = calibration is not None
    batches = as_batches(calibration) if static else synthetic_batches(model)
    places = list(encoder_linears(model))
    linears = [getattr(owner, name) for owner, name in places]
    stats, reference = {}, []
    if batches:
        stats = observe(model, linears, batches)
        if smooth(model, {linear: found.channel_peak for linear, found in stats.items()}):
            stats = observe(model, linears, batches)  # the smoothed inputs (nothing smoothed: nothing changed)
        with torch.no_grad():  # the float model by the path it runs (packed): what the int8 one is measured against
            reference = [embeddings(model, batch) for batch in batches]
    names = _linear_names(model)
    spreads = {  # q and k's errors weigh by their layer's logit spread (selfcheck.logit_spread)
        owner: logit_spread(owner, stats[owner.q_proj])
        for owner, name in places
        if name == "q_proj" and owner.q_proj in stats
    }
    swaps = []
    for (owner, name), linear in zip(places, linears):
        quantized = Int8Linear.from_linear(linear)
        if static and linear in stats:
            low, high = stats[linear].low, stats[linear].high
            quantized.set_input_range(min(low, 0.0) * CALIBRATION_MARGIN, max(high, 0.0) * CALIBRATION_MARGIN)
        setattr(owner, name, quantized)
        if linear in stats:
            error = local_error(quantized, linear, stats[linear])
            if name in ("q_proj", "k_proj"):
                error *= spreads[owner]
            to_float = lambda owner=owner, name=name, linear=linear: setattr(owner, name, linear)  # noqa: E731
            to_int8 = lambda owner=owner, name=name, q=quantized: setattr(owner, name, q)  # noqa: E731
            swaps.append(Swap(names[linear], to_float, to_int8, error))
    _link_consumers(model)
    restored: list[str] = []
    if min_cosine is not None and swaps:
        for batch, expected in zip(batches, reference):  # one tower at a time: its own linears, its own inputs
            tower = _tower_prefix(batch, names.values())
            own = [swap for swap in swaps if swap.name.startswith(tower) and swap.name not in restored]

            def measure(batch=batch, expected=expected) -> float:
                _link_consumers(model)
                with torch.no_grad():
                    return min_cosine_of([embeddings(model, batch)], [expected])

            # a quarter of the allowed error on the inputs measured, so that the target holds on inputs not seen
            cosine, kept = keep_float_until(1 - (1 - min_cosine) * MARGIN, measure, own)
            report(cosine, min_cosine, kept, len(own))
            restored += kept
        _link_consumers(model)
    config = getattr(model, "config", None)
    if config is not None:
        record = {"quant_method": METHOD, "activations": "static" if static else "dynamic",
                  "smoothing": SMOOTHING if batches else None, "float_layers": restored}  # fmt: skip
        config.extras[CONFIG_KEY] = record
        setattr(config, CONFIG_KEY, record)
    return model


def _tower_prefix(batch: dict, names: Any) -> str:
    """The module-name prefix of the tower `batch` feeds in a two-tower model ("" for one tower, or both)."""
    if "pixel_values" in batch and "input_ids" in batch:
        return ""
    prefix = "vision_model." if "pixel_values" in batch else "text_model."
    return prefix if any(name.startswith(prefix) for name in names) else ""


def int8_buffer_names(model: nn.Module) -> set[str]:
    """State-dict names of the int8 modules' tensors (kept in their own dtypes when a model is loaded)."""
    names = set()
    for prefix, module in model.named_modules():
        if isinstance(module, Int8Linear):
            names.update(f"{prefix}.{name}" for name, _ in module.named_buffers(recurse=False))
    return names
