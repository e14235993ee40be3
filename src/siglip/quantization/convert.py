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

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..kernels.int8 import Int8Linear
from ..modeling.layers import SiglipAttention, SiglipEncoder, SiglipMLP

METHOD = "int8"
# config.quantization_config of a saved int8 model; from_pretrained rebuilds the int8 modules when it is set.
CONFIG_KEY = "quantization_config"
# Calibrated ranges are widened by this factor (away from 0). Calibrated on 2 photos and measured on 8 (random
# towers, widths 64 and 768), the worst embedding cosine to fp32 was 0.9914 at 1.0x, 0.9976 at 1.25x and 0.9998
# at 1.5x; the extra resolution lost costs nothing measurable at the base width (0.99995 either way).
CALIBRATION_MARGIN = 1.5


def encoder_linears(model: nn.Module) -> Iterator[tuple[nn.Module, str]]:
    """(owner module, attribute name) of every linear the int8 path replaces, in forward order."""
    for encoder in (m for m in model.modules() if isinstance(m, SiglipEncoder)):
        for layer in encoder.layers:
            for owner in layer.modules():
                if isinstance(owner, SiglipAttention):
                    yield from ((owner, name) for name in ("q_proj", "k_proj", "v_proj", "out_proj"))
                elif isinstance(owner, SiglipMLP):
                    yield from ((owner, name) for name in ("fc1", "fc2"))


def _link_consumers(model: nn.Module) -> None:
    """fc1 knows its fc2, so that with static scales fc1's GELU output leaves the GEMM as uint8."""
    for mlp in (m for m in model.modules() if isinstance(m, SiglipMLP)):
        if isinstance(mlp.fc1, Int8Linear) and isinstance(mlp.fc2, Int8Linear):
            mlp.fc1.__dict__["consumer"] = mlp.fc2


def convert_empty(model: nn.Module, device: torch.device | str | None = None) -> None:
    """Replace the linears by int8 ones of the same shapes with unset contents (a saved int8 checkpoint fills
    them); used by from_pretrained on the meta device."""
    for owner, name in encoder_linears(model):
        linear = getattr(owner, name)
        setattr(owner, name, Int8Linear(linear.in_features, linear.out_features, linear.bias is not None, device))
    _link_consumers(model)


def observe_ranges(model: nn.Module, run: Any) -> dict[nn.Module, tuple[float, float]]:
    """Min / max of each replaced linear's input while `run()` calls the float model (plain path, no packing)."""
    ranges: dict[nn.Module, tuple[float, float]] = {}

    def record(module: nn.Module, args: tuple) -> None:
        low, high = torch.aminmax(args[0].detach().float())
        old = ranges.get(module, (float("inf"), float("-inf")))
        ranges[module] = (min(old[0], float(low)), max(old[1], float(high)))

    linears = [getattr(owner, name) for owner, name in encoder_linears(model)]
    handles = [linear.register_forward_pre_hook(record) for linear in linears]
    set_packing = getattr(model, "set_weight_packing", None)
    try:
        if set_packing is not None:
            set_packing(False)  # the packed path bypasses module calls, and so the hooks
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
        if set_packing is not None:
            set_packing(True)
    return ranges


def quantize_model(model: nn.Module, calibration: Any = None) -> nn.Module:
    """Make `model`'s encoder linears int8 in place (CPU only); `calibration`: inputs for static scales."""
    if next(model.parameters()).device.type != "cpu":
        raise InputError(
            "int8 inference runs on CPU only (oneDNN VNNI/AMX kernels); this model is on "
            f"{next(model.parameters()).device}. Move it with model.to('cpu') first, or use bf16/fp16 on the GPU."
        )
    if any(isinstance(m, Int8Linear) for m in model.modules()):
        raise InputError(
            "this model is already quantized to int8; to calibrate it, load the float checkpoint and call "
            "quantize('int8', calibration=...) once (or from_pretrained(..., quantization='int8', calibration=...))"
        )
    ranges = observe_ranges(model, lambda: _run_calibration(model, calibration)) if calibration is not None else {}
    for owner, name in encoder_linears(model):
        linear = getattr(owner, name)
        quantized = Int8Linear.from_linear(linear)
        if linear in ranges:
            low, high = ranges[linear]
            quantized.set_input_range(min(low, 0.0) * CALIBRATION_MARGIN, max(high, 0.0) * CALIBRATION_MARGIN)
        setattr(owner, name, quantized)
    _link_consumers(model)
    config = getattr(model, "config", None)
    if config is not None:
        record = {"quant_method": METHOD, "activations": "static" if ranges else "dynamic"}
        config.extras[CONFIG_KEY] = record
        setattr(config, CONFIG_KEY, record)
    return model


def _run_calibration(model: nn.Module, calibration: Any) -> None:
    """One float forward over `calibration`: a tensor (pixel_values or input_ids, by the model's tower), a dict
    of model inputs, or a list of either."""
    batches = calibration if isinstance(calibration, (list, tuple)) else [calibration]
    for batch in batches:
        if isinstance(batch, dict):
            inputs = dict(batch)
        elif torch.is_tensor(batch):
            key = "input_ids" if not batch.is_floating_point() else "pixel_values"
            inputs = {key: batch}
        else:
            raise InputError(
                f"calibration must be a tensor, a dict of model inputs or a list of them, got {type(batch).__name__}"
            )
        if "pixel_values" in inputs and "input_ids" not in inputs and hasattr(model, "get_image_features"):
            model.get_image_features(**inputs)
        elif "input_ids" in inputs and "pixel_values" not in inputs and hasattr(model, "text_model"):
            model.text_model(**inputs)  # every position (get_text_features skips most of the last layer's)
        else:
            model(**inputs)


def int8_buffer_names(model: nn.Module) -> set[str]:
    """State-dict names of the int8 modules' tensors (kept in their own dtypes when a model is loaded)."""
    names = set()
    for prefix, module in model.named_modules():
        if isinstance(module, Int8Linear):
            names.update(f"{prefix}.{name}" for name, _ in module.named_buffers(recurse=False))
    return names
