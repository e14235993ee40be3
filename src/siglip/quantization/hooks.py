"""What the model classes take from the int8 path: the `quantize` method (`Quantizable`), and the steps that
`from_pretrained` adds when int8 is asked for or stored (`LoadSteps`). modeling/ spells out neither.
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch
from torch import nn

from ..errors import CheckpointError, InputError
from ..kernels.int8 import check_int8_supported
from .convert import CONFIG_KEY, METHOD, convert_empty, int8_buffer_names, quantize_model

ModelT = TypeVar("ModelT", bound=nn.Module)


class Quantizable(nn.Module):
    """Mixin of the model classes: `quantize`."""

    def quantize(
        self: ModelT, method: str = "int8", calibration: Any = None, min_cosine: float | None = 0.999
    ) -> ModelT:
        """Opt-in CPU int8 inference, in place; returns the model (see siglip/quantization/).

        The encoder layers' linears get per-channel int8 weights and uint8 activations run through oneDNN's
        u8 x s8 GEMMs; embeddings, LayerNorms, attention products and heads stay in the model's dtype.
        `calibration` (pixel_values / input_ids tensors of a few real inputs, a dict of model inputs, or a list
        of those) fixes static activation scales (faster, batch-independent); without it each call measures its
        input. Outlier activation channels are first migrated into the weights (SmoothQuant), measured on
        `calibration` or on synthetic inputs. With `calibration` the result is checked: the linears that cost the
        most accuracy stay float until the smallest embedding cosine to the float model on those inputs reaches
        `min_cosine` (None: no check), with a warning naming them. `save_pretrained` then writes the int8
        tensors, and `from_pretrained` reloads them. CPU only: x86 with AVX2 (kernels/cpu.py picks 8-bit
        weights with VNNI/AMX, 7-bit without); refused elsewhere with an InputError.
        """
        if method != METHOD:
            raise InputError(f"quantize supports method='int8', got {method!r}")
        with torch.inference_mode(False):
            quantize_model(self, calibration, min_cosine)
        return self


class LoadSteps:
    """The steps `from_pretrained` adds for int8, asked for (`quantization="int8"`, optionally `calibration=`)
    or stored (a saved int8 model: config.json's `quantization_config`). For a float load each does nothing."""

    def __init__(self, quantization: Any = None, calibration: Any = None) -> None:
        if quantization not in (None, METHOD):
            raise InputError(f"quantization must be None or 'int8', got {quantization!r}")
        self.requested = quantization == METHOD
        self.calibration = calibration
        self.float_layers: list[str] | None = None  # set for a stored int8 checkpoint: the linears it kept float

    @classmethod
    def pop(cls, kwargs: dict[str, Any]) -> LoadSteps:
        """The steps for from_pretrained's keyword arguments, taking `quantization` and `calibration` out."""
        return cls(kwargs.pop("quantization", None), kwargs.pop("calibration", None))

    def read_config(self, config: Any, source: str) -> None:
        """Note whether the checkpoint is a saved int8 model, and which of its linears it kept float."""
        record = getattr(config, CONFIG_KEY, None)
        if record:
            self.float_layers = _float_layers(record, source)

    @property
    def stored(self) -> bool:
        return self.float_layers is not None

    def device(self, requested: Any) -> Any:
        """The device to resolve: int8 runs on the CPU, so "auto" means the CPU there."""
        return "cpu" if (self.requested or self.stored) and requested == "auto" else requested

    def check_device(self, device: torch.device) -> None:
        """int8 runs on x86 CPUs with AVX2 only: refused before anything is read (a saved int8 checkpoint too)."""
        if not (self.requested or self.stored):
            return
        if device.type != "cpu":
            raise InputError(
                f"int8 inference runs on CPU only (oneDNN kernels); device {device} was requested. "
                "On a GPU load with dtype=torch.bfloat16 or torch.float16 instead."
            )
        check_int8_supported()

    def build(self, model: nn.Module) -> set[str]:
        """On the meta-device `model` of a stored int8 checkpoint: its int8 layers, empty. Returns the state-dict
        names to read in their stored dtype (the int8 layers' tensors, scales included)."""
        if not self.stored:
            return set()
        convert_empty(model, "meta", self.float_layers)
        return int8_buffer_names(model)

    def finish(self, model: nn.Module) -> None:
        """After the float weights are in: quantize when int8 was asked for (a stored int8 model already is)."""
        if self.requested and not self.stored:
            model.quantize(METHOD, self.calibration)


def _float_layers(record: Any, source: str) -> list[str]:
    """The linears a calibrated int8 checkpoint kept float (`quantization_config["float_layers"]`)."""
    names = record.get("float_layers") if isinstance(record, dict) else None
    if names is None:
        return []
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise CheckpointError(f"{source}: config.json quantization_config.float_layers must be a list of layer names")
    return names
