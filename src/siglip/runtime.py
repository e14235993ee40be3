"""Model loading for services and the CLI alike: the one dtype vocabulary (`DTYPES`), a `--dtype` name ->
`from_pretrained` options, and the one place that loads a model (`load_model`) and its processor
(`load_model_and_processor`). Below the CLI, so services (`serve`, `bulk`, `eval`, ...) load models without
importing it.

Imports nothing heavy at the top: `siglip --help` imports this module through `cli.common`.
"""

from __future__ import annotations

import os
import sys
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
    from .kernels.cpu import cpu_features

    features = cpu_features()
    bf16 = features.native_bf16
    if not features.int8_supported:  # the fastest correct path instead, said in one line
        fallback = "bfloat16" if bf16 else "float32"
        print(
            f"siglip: notice: int8 needs an x86 CPU with AVX2 (this is {features.machine}, {features.onednn_isa}); "
            f"running {fallback} instead",
            file=sys.stderr,
        )
        return {"dtype": fallback, "device": device}
    return {
        "dtype": "bfloat16" if bf16 else "float32",
        "device": "cpu" if device in (None, "auto") else device,
        "quantization": "int8",
    }


def dtype_names(*canonical: str) -> tuple[str, ...]:
    """The `DTYPES` names (long and short, in table order) that mean one of the `canonical` dtypes, e.g.
    `dtype_names("float32", "bfloat16")` -> ("float32", "fp32", "bfloat16", "bf16"): a command that takes only
    some precisions still speaks the one vocabulary."""
    return tuple(name for name, value in DTYPES.items() if value in canonical)


def canonical_dtype(dtype: str, config: Any) -> str:
    """The dtype name a model runs in for the --dtype `dtype` ("auto" resolved to the checkpoint's `config`),
    e.g. "float32"."""
    if dtype not in DTYPES:
        raise InputError(f"dtype must be one of {', '.join(sorted(DTYPES))}, got {dtype!r}")
    if dtype == "auto":
        return str(getattr(config, "dtype", None) or "float32")
    return str(DTYPES[dtype]).removeprefix("torch.")


def load_model(
    model: str | os.PathLike,
    *,
    dtype: Any = "auto",
    device: Any = "auto",
    revision: str | None = None,
    **options: Any,
) -> Any:
    """The model `model` names (AutoModel: `SiglipModel` / `Siglip2Model` / a tower, by config.json), on `device`
    in `dtype`, in eval mode.

    `dtype` is a --dtype name (`DTYPES`, translated by `load_options`) or anything `from_pretrained(dtype=...)`
    takes (a torch dtype or its name), passed on as it is. `options` are further `from_pretrained` options (Hub:
    `cache_dir`, `token`, ...; `quantization`; config fields)."""
    from .auto import AutoModel

    if isinstance(dtype, str) and dtype in DTYPES:
        settings = load_options(dtype, device)
    else:
        settings = {"dtype": dtype, "device": device}
    if settings.get("quantization") == "int8" and "calibration" not in options:
        return _load_int8(model, settings, revision, options)
    return AutoModel.from_pretrained(model, **settings, revision=revision, **options).eval()


def _load_int8(model: str | os.PathLike, settings: dict[str, Any], revision: str | None, options: dict) -> Any:
    """--dtype int8: the model quantised to int8 (a saved int8 folder as it is), unless int8 would not make it
    faster on this CPU (every tower narrower than int8 pays for, `kernels.int8.int8_speed_note`): then it runs
    in the float dtype, said in one line."""
    from .auto import AutoModel
    from .kernels.int8 import Int8Linear
    from .quantization.convert import narrow_model_note

    rest = {key: value for key, value in settings.items() if key != "quantization"}
    loaded = AutoModel.from_pretrained(model, **rest, revision=revision, **options).eval()
    if any(isinstance(module, Int8Linear) for module in loaded.modules()):
        return loaded  # a saved int8 model, rebuilt as int8 by from_pretrained
    note = narrow_model_note(loaded)
    if note is not None:
        print(f"siglip: notice: {note}; running {rest['dtype']} instead of int8", file=sys.stderr)
        return loaded
    return loaded.quantize("int8")


def load_model_and_processor(
    model: str | os.PathLike,
    *,
    dtype: Any = "auto",
    device: Any = "auto",
    revision: str | None = None,
    use_fast: bool = False,
    fast_decode: bool = False,
    processor: Any = None,
    model_options: dict[str, Any] | None = None,
    **hub: Any,
) -> tuple[Any, Any]:
    """(model, processor) `model` names: the model as `load_model` loads it (`model_options` go to its
    `from_pretrained` only), the processor as `encode.load_processor` does (`use_fast` / `fast_decode`: the
    approximate preprocessing modes), unless `processor` is given. `hub`: Hub options for both (`cache_dir`,
    `token`, `local_files_only`, ...)."""
    from .encode import load_processor

    if processor is None:
        processor = load_processor(str(model), use_fast=use_fast, fast_decode=fast_decode, revision=revision, **hub)
    options = {**hub, **(model_options or {})}
    return load_model(model, dtype=dtype, device=device, revision=revision, **options), processor
