"""One float pass over calibration inputs, watching every linear the int8 path replaces.

For each linear: its input's min / max (static activation scales), its per-input-channel peak |x| (scale
migration, smoothing.py) and a few of its input rows (the per-layer error ranking of selfcheck.py).
`embeddings` is what the int8 model is measured by.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import InputError

# Input rows kept per linear for the error ranking: evenly spaced over the calibration batch.
SAMPLE_ROWS = 256


@dataclass
class LinearStats:
    """What one linear's inputs looked like over the calibration pass."""

    low: float = float("inf")
    high: float = float("-inf")
    channel_peak: torch.Tensor | None = None  # (in_features,) max |x| per input channel, fp32
    rows: list[torch.Tensor] = field(default_factory=list)  # fp32 input samples
    gram: torch.Tensor | None = None  # (in, in) sum of x x^T over every input row, when observe(gram=True)

    def update(self, inputs: torch.Tensor, gram: torch.Tensor | None = None) -> None:
        if gram is not None:
            self.gram = gram.clone() if self.gram is None else self.gram.add_(gram)
        flat = inputs.detach().reshape(-1, inputs.shape[-1]).float()
        low, high = torch.aminmax(flat)
        self.low, self.high = min(self.low, float(low)), max(self.high, float(high))
        peak = flat.abs().amax(dim=0)
        self.channel_peak = peak if self.channel_peak is None else torch.maximum(self.channel_peak, peak)
        step = max(1, flat.shape[0] // SAMPLE_ROWS)
        self.rows.append(flat[::step][:SAMPLE_ROWS].clone())

    def sample(self) -> torch.Tensor:
        return torch.cat(self.rows)[: 2 * SAMPLE_ROWS]


def observe(
    model: nn.Module, linears: Iterable[nn.Module], batches: list[dict], gram: bool = False
) -> dict[nn.Module, LinearStats]:
    """{linear: LinearStats} from one float pass (packing off: the plain float path throughout, every linear called
    as a module so that its hook sees the input); `gram`: also each input's Gram matrix (rounding.py), computed once for linears that
    share an input (q, k and v)."""
    stats: dict[nn.Module, LinearStats] = {}
    last: list = [None, None]  # (input tensor, its Gram matrix): q, k and v are called on the same tensor

    def record(module: nn.Module, args: tuple) -> None:
        inputs, product = args[0], None
        if gram:
            if last[0] is not inputs:
                flat = inputs.detach().reshape(-1, inputs.shape[-1]).float()
                last[:] = [inputs, flat.T @ flat]
            product = last[1]
        stats.setdefault(module, LinearStats()).update(inputs, product)

    handles = [linear.register_forward_pre_hook(record) for linear in linears]
    set_packing = getattr(model, "set_weight_packing", None)
    try:
        if set_packing is not None:
            set_packing(False)  # hooked linears are called as modules anyway; the rest goes plain too
        with torch.no_grad():
            for batch in batches:
                embeddings(model, batch)
    finally:
        last.clear()
        for handle in handles:
            handle.remove()
        if set_packing is not None:
            set_packing(True)
    return stats


def as_batches(calibration: Any) -> list[dict]:
    """Calibration inputs as a list of model-input dicts: a tensor (pixel_values, or input_ids when integer), a
    dict of model inputs, or a list of either."""
    batches = calibration if isinstance(calibration, (list, tuple)) else [calibration]
    result = []
    for batch in batches:
        if isinstance(batch, dict):
            result += _per_tower(dict(batch))
        elif torch.is_tensor(batch):
            result.append({"input_ids" if not batch.is_floating_point() else "pixel_values": batch})
        else:
            raise InputError(
                f"calibration must be a tensor, a dict of model inputs or a list of them, got {type(batch).__name__}"
            )
    return result


def embeddings(model: nn.Module, inputs: dict) -> torch.Tensor:
    """The embedding(s) `model` gives for `inputs`, as one (rows, width) fp32 tensor: image features, the text
    tower's pooled output over every position, or both for a two-tower call."""
    images = "pixel_values" in inputs and "input_ids" not in inputs
    texts = "input_ids" in inputs and "pixel_values" not in inputs
    if images and hasattr(model, "get_image_features"):
        return model.get_image_features(**inputs).float()
    if texts and hasattr(model, "text_model"):
        return model.text_model(**inputs).pooler_output.float()  # every position (get_text_features skips most)
    output = model(**inputs)
    for names in (("image_embeds", "text_embeds"), ("pooler_output",), ("logits",)):
        found = [getattr(output, name, None) for name in names]
        found = [part.float().flatten(1) for part in found if torch.is_tensor(part)]
        if found:
            return torch.cat(found)
    return output.last_hidden_state.float().mean(dim=1)


TEXT_KEYS = ("input_ids", "attention_mask", "position_ids")


def _per_tower(inputs: dict) -> list[dict]:
    """A two-tower input dict as one image and one text batch (each tower is measured on its own inputs)."""
    if "pixel_values" not in inputs or "input_ids" not in inputs:
        return [inputs]
    text = {key: value for key, value in inputs.items() if key in TEXT_KEYS}
    images = {key: value for key, value in inputs.items() if key not in TEXT_KEYS}
    return [images, text]
