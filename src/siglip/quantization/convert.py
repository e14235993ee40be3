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

import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..kernels.cpu import cpu_features
from ..kernels.int8 import WMAX, Int8Linear, check_int8_supported, int8_speed_note
from .blocks import encoder_blocks, encoder_linears, input_key
from .calibration import synthetic_batches
from .observe import as_batches, embeddings, observe
from .rounding import DAMPING, error_feedback_round
from .selfcheck import MIN_COSINE, Swap, local_error, logit_spread, report, swap_until
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
# Dynamic int8 (no calibration) fits its 7-bit weights to synthetic inputs (seed 0) and checks on others (this
# seed). Their Gram matrices are damped 10x harder than real calibration inputs' (rounding.DAMPING): a fit that
# leans less on how a few synthetic inputs correlate (base towers, capped to AVX2: image 0.99985 on real photos,
# none float, where plain rounding kept 22 of 72 linears float; text 0.99989 on short padded texts, 0.99942 on
# full-length random ones).
CHECK_SEED = 1
SYNTHETIC_DAMPING = 0.1


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
    float one on the same inputs and steps back where it costs the most (static scales to per-call ones, then
    linears to float) until the smallest embedding cosine there is within a quarter of `min_cosine`'s allowance
    (MARGIN; None: no check); see selfcheck.py.
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
    note = narrow_model_note(model)
    if note is not None:
        warnings.warn(note, stacklevel=3)
    static = calibration is not None
    batches = as_batches(calibration) if static else synthetic_batches(model)
    # Without calibration the self-check runs on other synthetic inputs than the ones the weights were fitted to
    # (error-feedback rounding): fitted and checked on the same few, it passed inputs that came later less well.
    checked = batches if static else synthetic_batches(model, seed=CHECK_SEED)
    places = list(encoder_linears(model))
    linears = [getattr(owner, name) for owner, name in places]
    stats, reference = {}, []
    limit = cpu_features().int8_weight_max
    feedback = limit < WMAX  # 7-bit weights: rounded with error feedback over each input's Gram matrix
    if batches:
        stats = observe(model, linears, batches, gram=feedback)
        if smooth(model, {linear: found.channel_peak for linear, found in stats.items()}):
            stats = observe(model, linears, batches, gram=feedback)  # the smoothed inputs
        with torch.no_grad():  # the float model by the path it runs (packed): what the int8 one is measured against
            reference = [embeddings(model, batch) for batch in checked]
    names = _linear_names(model)
    spreads = {  # q and k's errors weigh by their layer's logit spread (selfcheck.logit_spread)
        owner: logit_spread(owner, stats[owner.q_proj])
        for owner, name in places
        if name == "q_proj" and owner.q_proj in stats
    }
    damping = DAMPING if static else SYNTHETIC_DAMPING
    rounded = _feedback_rounded(places, stats, limit, damping) if feedback and stats else {}
    quantized: dict[nn.Module, Int8Linear] = {}
    for (owner, name), linear in zip(places, linears):
        quantized[linear] = Int8Linear.from_linear(linear, rounded.get(linear))
        if static and linear in stats:
            low, high = stats[linear].low, stats[linear].high
            quantized[linear].set_input_range(min(low, 0.0) * CALIBRATION_MARGIN, max(high, 0.0) * CALIBRATION_MARGIN)
        setattr(owner, name, quantized[linear])
    _link_consumers(model)

    def weighted_error(owner: nn.Module, name: str, linear: nn.Module, dynamic: bool = False) -> float:
        error = local_error(quantized[linear], linear, stats[linear], dynamic)
        return error * spreads[owner] if name in ("q_proj", "k_proj") else error

    restored: list[str] = []
    switched: list[str] = []  # static linears that went to per-call scales
    measured = [(owner, name, linear) for (owner, name), linear in zip(places, linears) if linear in stats]
    if min_cosine is not None and measured:
        target = 1 - (1 - min_cosine) * MARGIN  # a quarter of the allowance, so that it holds on inputs not seen
        for batch, expected in zip(checked, reference):  # one tower at a time: its own linears, its own inputs
            tower = _tower_prefix(batch, names.values())
            own = [(o, n, lin) for o, n, lin in measured if names[lin].startswith(tower) and names[lin] not in restored]

            def measure(batch=batch, expected=expected) -> float:
                _link_consumers(model)
                with torch.no_grad():
                    return min_cosine_of([embeddings(model, batch)], [expected])

            float_swaps = partial(_float_swaps, own, names, quantized, weighted_error)
            dynamic = _dynamic_swaps(own, names, quantized, weighted_error) if static else []
            cosine, kept, steps = _step_back(target, measure, dynamic, float_swaps)
            report(cosine, min_cosine, kept, len(own))
            restored += kept
            switched += [name for step in steps for name in step.split("|")]
        _link_consumers(model)
    config = getattr(model, "config", None)
    if config is not None:
        record = {"quant_method": METHOD, "activations": "static" if static else "dynamic",
                  "smoothing": SMOOTHING if batches else None, "float_layers": restored,
                  "dynamic_layers": [name for name in switched if name not in restored]}  # fmt: skip
        config.extras[CONFIG_KEY] = record
        setattr(config, CONFIG_KEY, record)
    return model


def narrow_model_note(model: nn.Module) -> str | None:
    """Why int8 would not make `model` faster on this CPU (every tower narrower than int8 pays for), or None."""
    widths = [owner.q_proj.in_features for owner, name in encoder_linears(model) if name == "q_proj"]
    return int8_speed_note(max(widths)) if widths else None


def _feedback_rounded(
    places: list[tuple[nn.Module, str]], stats: dict, limit: int, damping: float
) -> dict[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    """{linear: (int8 weight, scale)} by error-feedback rounding (rounding.py), one pass per input: q, k and v
    share theirs, so their rows are rounded together. Frees the Gram matrices."""
    from tqdm.auto import tqdm  # a bar on a terminal: ~15 s for a base tower on 2 cores

    groups: dict[tuple[nn.Module, str], list[nn.Module]] = {}
    for owner, name in places:
        linear = getattr(owner, name)
        if linear in stats and stats[linear].gram is not None:
            groups.setdefault(input_key(owner, name), []).append(linear)
    rounded = {}
    for members in tqdm(groups.values(), desc="int8 rounding", unit="input", leave=False, disable=None):
        weight = torch.cat([linear.weight for linear in members])
        integers, scale = error_feedback_round(weight, stats[members[0]].gram, limit, damping)
        rows = [linear.out_features for linear in members]
        for linear, part, part_scale in zip(members, integers.split(rows), scale.split(rows)):
            rounded[linear] = (part.contiguous(), part_scale.contiguous())
    for found in stats.values():
        found.gram = None
    return rounded


def _step_back(
    target: float, measure: Callable[[], float], dynamic: list[Swap], float_swaps: Callable[[], dict[str, Swap]]
) -> tuple[float, list[str], list[str]]:
    """Static scales step back first to per-call scales, for the inputs whose fixed range costs the most (`dynamic`;
    empty for a dynamic model), then linears go float. If every input went dynamic and that was not enough, the
    float step is also tried from static scales, and the way with fewer float linears is kept (float costs far
    more time than a per-call scale). Returns (cosine reached, linears float, dynamic steps taken)."""
    cosine, steps = swap_until(target, measure, dynamic) if dynamic else (-1.0, [])
    if cosine >= target:
        return cosine, [], steps
    swaps = float_swaps()
    cosine, kept = swap_until(target, measure, list(swaps.values()))
    if not steps:
        return cosine, kept, []
    for swap in [*(swaps[name] for name in kept), *dynamic]:
        swap.undo()
    from_static = float_swaps()  # ranked again: the errors with static scales
    static_cosine, static_kept = swap_until(target, measure, list(from_static.values()))
    if len(static_kept) <= len(kept):
        return static_cosine, static_kept, []
    for name in static_kept:  # back to per-call scales with their float linears
        from_static[name].undo()
    for swap in [*dynamic, *(swaps[name] for name in kept)]:
        swap.apply()
    return cosine, kept, steps


def _float_swaps(
    own: list[tuple[nn.Module, str, nn.Module]],
    names: dict[nn.Module, str],
    quantized: dict[nn.Module, Int8Linear],
    weighted_error: Callable[..., float],
) -> dict[str, Swap]:
    """One swap per int8 linear: back to its float original, ranked by what it costs as it runs now."""
    return {
        names[linear]: Swap(
            names[linear],
            lambda owner=owner, name=name, linear=linear: setattr(owner, name, linear),
            lambda owner=owner, name=name, linear=linear: setattr(owner, name, quantized[linear]),
            weighted_error(owner, name, linear),
        )
        for owner, name, linear in own
    }


def _dynamic_swaps(
    own: list[tuple[nn.Module, str, nn.Module]],
    names: dict[nn.Module, str],
    quantized: dict[nn.Module, Int8Linear],
    weighted_error: Callable[..., float],
) -> list[Swap]:
    """One swap per quantised input (q, k and v share theirs): static -> dynamic scales, ranked by the error the
    switch saves. Names are the linears' names joined by "|"."""
    groups: dict[tuple[nn.Module, str], list[tuple[str, nn.Module]]] = {}
    for owner, name, linear in own:
        groups.setdefault(input_key(owner, name), []).append((name, linear))
    swaps = []
    for (owner, _), members in groups.items():
        layers = [quantized[linear] for _, linear in members]
        scales = [layer.input_scale.clone() for layer in layers]
        saved = sum(
            weighted_error(owner, name, linear) - weighted_error(owner, name, linear, dynamic=True)
            for name, linear in members
        )

        def to_dynamic(layers=layers) -> None:
            for layer in layers:
                layer.input_scale.zero_()

        def to_static(layers=layers, scales=scales) -> None:
            for layer, scale in zip(layers, scales):
                layer.input_scale.copy_(scale)

        swaps.append(Swap("|".join(names[linear] for _, linear in members), to_dynamic, to_static, saved))
    return swaps


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
