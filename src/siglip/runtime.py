"""Model loading for services and the CLI alike: a `--dtype` name -> `from_pretrained` options, and the model +
processor pair a job runs. Below the CLI, so services (`bulk`, `eval`, ...) load models without importing it.

Imports nothing heavy at the top: `siglip --help` imports this module through `cli.common`.
"""

from __future__ import annotations

from typing import Any

from .errors import InputError

# --dtype names -> the dtype names `from_pretrained(dtype=...)` takes ("auto": as stored).
DTYPES = {
    "auto": "auto",
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "int8": "int8",  # CPU int8 inference (siglip/quantization/): see load_options
}


def load_options(dtype: str, device: Any = "auto") -> dict[str, Any]:
    """`from_pretrained` keyword arguments (dtype, device, quantization) for a --dtype name and --device.

    "int8" quantises the encoder linears (dynamic activation scales; a folder saved from a calibrated model keeps
    its static ones) and runs the rest in bf16 where the CPU has native bf16, else fp32. It runs on CPU only, so
    `--device auto` means the CPU there.
    """
    if dtype not in DTYPES:
        raise InputError(f"dtype must be one of {', '.join(sorted(DTYPES))}, got {dtype!r}")
    if DTYPES[dtype] != "int8":
        return {"dtype": DTYPES[dtype], "device": device}
    import torch

    bf16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return {
        "dtype": "bfloat16" if bf16 else "float32",
        "device": "cpu" if device in (None, "auto") else device,
        "quantization": "int8",
    }


def load_model_and_processor(
    model: str,
    *,
    dtype: str = "auto",
    device: Any = "auto",
    revision: str | None = None,
    use_fast: bool = False,
    fast_decode: bool = False,
) -> tuple[Any, Any]:
    """The model (AutoModel: `SiglipModel` / `Siglip2Model`) and processor `model` names, on `device` in the
    --dtype `dtype`, in eval mode; `use_fast` / `fast_decode` as in `encode.load_processor`."""
    from .auto import AutoModel
    from .encode import load_processor

    hub = {"revision": revision} if revision else {}
    processor = load_processor(model, use_fast=use_fast, fast_decode=fast_decode, **hub)
    loaded = AutoModel.from_pretrained(model, **load_options(dtype, device), **hub)
    return loaded.eval(), processor
