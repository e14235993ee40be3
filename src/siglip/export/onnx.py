"""`export_onnx`: a SigLIP / SigLIP2 checkpoint -> one verified `.onnx` file per tower, plus its processor files.

Each tower is traced with PyTorch's TorchScript-based exporter (`torch.onnx.export(..., dynamo=False)`: it
needs no extra package and handles the dynamic batch / patch axes directly) on the plain torch path (the packed
oneDNN linears are turned off for the trace and restored after). The file is then converted (fp16) or quantised
(int8) with ONNX Runtime's tools, annotated, checked with `onnx.checker`, loaded in ONNX Runtime and compared
with the torch model on inputs other than the traced ones. Only a file that passes reaches `out_dir`; anything
else raises `ExportError` and leaves nothing behind.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import DependencyError, ExportError, InputError
from ..files import atomic_write
from ..runtime import DTYPES as DTYPE_NAMES
from ..runtime import dtype_names
from .files import copy_companion_files
from .towers import TowerGraph, tower_graphs
from .verify import Parity, acceptable, check_file, refuse

DTYPES = ("fp32", "fp16", "int8")  # the file precisions, by their short `runtime.DTYPES` names (long ones accepted)
TOWERS = {"text": ("text",), "vision": ("vision",), "both": ("text", "vision")}
DEFAULT_OPSET = 17  # LayerNormalization is a single op from 17 on; ONNX Runtime >= 1.14 and transformers.js run it
# Above this many parameter bytes the weights go to a `<file>.data` beside the graph (protobuf's 2 GB limit).
EXTERNAL_DATA_BYTES = 1_500_000_000
FILE_SUFFIX = {"fp32": "", "fp16": "_fp16", "int8": "_int8"}


@dataclass(frozen=True)
class ExportedFile:
    """One written graph: where it is, what it takes and returns, and how close it came to the model."""

    path: Path
    tower: str
    dtype: str
    input_names: tuple[str, ...]
    output_name: str
    parity: Parity  # measured against the fp32 torch model on inputs other than the traced ones
    fp32_layers: int = 0  # int8: leading encoder layers (and the embeddings) left in fp32 to reach the cosine


def export_onnx(
    model: str | os.PathLike | nn.Module,
    out_dir: str | os.PathLike,
    *,
    tower: str = "both",
    dtype: str = "fp32",
    opset: int = DEFAULT_OPSET,
    revision: str | None = None,
) -> list[ExportedFile]:
    """Export the text and/or vision tower of `model` (Hub id, folder or loaded fp32 CPU model) to `out_dir`.

    Writes `text_model{suffix}.onnx` / `vision_model{suffix}.onnx` (suffix "", "_fp16", "_int8") and, for a
    Hub id or folder, its config, tokenizer and processor files (for a loaded model: its config.json).
    Outputs are unnormalised embeddings (`get_text_features` / `get_image_features`), shape (batch, dim).
    """
    _require_onnx()
    if tower not in TOWERS:
        raise InputError(f"tower must be one of {sorted(TOWERS)}, got {tower!r}.")
    if dtype not in dtype_names("float32", "float16", "int8"):
        raise InputError(f"dtype must be one of {DTYPES}, got {dtype!r}.")
    dtype = dict(zip(("float32", "float16", "int8"), DTYPES))[DTYPE_NAMES[dtype]]
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 1:
        raise InputError(f"opset must be a positive integer, got {opset!r}.")
    source = None
    if isinstance(model, (str, os.PathLike)):
        from ..runtime import load_model

        source = model
        model = load_model(model, dtype=torch.float32, device="cpu", revision=revision)
    _check_exportable(model)
    graphs = tower_graphs(model, TOWERS[tower])
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    with plain_torch_path(model):
        written = [_export_graph(graph, model, out, dtype, opset) for graph in graphs]
    if source is not None:
        copy_companion_files(source, out, _hub_options(revision))
    else:
        model.config.save_pretrained(out)
    return written


def _export_graph(graph: TowerGraph, model: nn.Module, out: Path, dtype: str, opset: int) -> ExportedFile:
    """Trace, convert, annotate and verify one tower in a scratch folder; move it to `out` only if it passes."""
    from . import precision

    name = f"{graph.file_stem}{FILE_SUFFIX[dtype]}.onnx"
    large = sum(p.numel() * p.element_size() for p in graph.module.parameters()) > EXTERNAL_DATA_BYTES
    attempts = [k for k in precision.INT8_FP32_LAYERS if k <= graph.num_layers] if dtype == "int8" else [0]
    with tempfile.TemporaryDirectory(prefix=".siglip-export-", dir=out) as scratch:
        work = Path(scratch)
        traced = work / "traced.onnx"
        _trace(graph, traced, opset)
        candidate = work / name
        for fp32_layers in attempts:
            _convert(traced, candidate, graph, model, dtype, large, fp32_layers)
            parity = check_file(candidate, graph)
            if acceptable(parity, dtype):
                break
        else:
            raise refuse(parity, dtype, graph.tower)
        if large:  # the weights first: the graph that names them appears last
            atomic_write(out / f"{name}.data", lambda temporary: os.replace(work / f"{name}.data", temporary))
        atomic_write(out / name, lambda temporary: os.replace(candidate, temporary))
    return ExportedFile(out / name, graph.tower, dtype, graph.input_names, graph.output_name, parity, fp32_layers)


def _convert(
    traced: Path, target: Path, graph: TowerGraph, model: nn.Module, dtype: str, large: bool, fp32_layers: int
) -> None:
    """The traced fp32 file in `dtype` (int8: the first `fp32_layers` layers kept fp32), annotated, at `target`."""
    import onnx

    from . import precision

    source = traced
    if dtype == "int8":
        source = traced.with_name("int8.onnx")
        precision.to_int8(traced, source, large, fp32_layers)
    proto = onnx.load(str(source))
    if dtype == "fp16":
        proto = precision.to_fp16(proto)
    _annotate(proto, graph, model, dtype, fp32_layers)
    for stale in (target, target.with_name(f"{target.name}.data")):  # external data would be appended to
        stale.unlink(missing_ok=True)
    _save(proto, target, large)


def _trace(graph: TowerGraph, path: Path, opset: int) -> None:
    inputs = graph.sample(2, 0)
    try:
        with warnings.catch_warnings(), _stdout_to_devnull():
            # The legacy exporter's deprecation notice, and tracer notes about the towers' shape checks (shapes
            # are constants there; verification re-runs the file at other shapes to prove they do not matter).
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            torch.onnx.export(
                graph.module,
                tuple(inputs[name] for name in graph.input_names),
                str(path),
                input_names=list(graph.input_names),
                output_names=[graph.output_name],
                dynamic_axes=graph.dynamic_axes,
                opset_version=opset,
                dynamo=False,
                do_constant_folding=True,
            )
    except Exception as error:  # torch.onnx raises RuntimeError, OnnxExporterError, UnsupportedOperatorError...
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExportError(f"torch.onnx could not export the {graph.tower} tower at opset {opset}: {message}") from error


@contextmanager
def _stdout_to_devnull() -> Iterator[None]:
    """Silence file descriptor 1: on a failed export, the TorchScript exporter's C++ logger dumps its whole IR
    graph to stdout whatever `verbose` says (torch 2.13 tests a function object for truth); the error is ours."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _annotate(proto: Any, graph: TowerGraph, model: nn.Module, dtype: str, fp32_layers: int) -> None:
    """Describe the output and record what the file is in its metadata (read by `onnxruntime` as custom map)."""
    import onnx

    proto.graph.output[0].doc_string = (
        "Pooled embedding (batch, dim) before L2 normalisation, as get_text_features / get_image_features; "
        "normalise it before cosine similarities or logits."
    )
    metadata = {
        "siglip.tower": graph.tower,
        "siglip.dtype": dtype,
        "siglip.model_type": str(getattr(model.config, "model_type", "")),
        "siglip.normalized": "false",
    }
    if dtype == "int8":
        metadata["siglip.int8_fp32_layers"] = str(fp32_layers)
    for name in ("logit_scale", "logit_bias"):
        parameter = getattr(model, name, None)
        if isinstance(parameter, torch.Tensor):  # logits = cos(text, image) * exp(logit_scale) + logit_bias
            metadata[f"siglip.{name}"] = repr(float(parameter.detach().float().reshape(-1)[0]))
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, metadata)


def _save(proto: Any, path: Path, large: bool) -> None:
    import onnx

    if large:
        onnx.save_model(proto, str(path), save_as_external_data=True, location=f"{path.name}.data")
    else:
        onnx.save_model(proto, str(path))


@contextmanager
def plain_torch_path(model: nn.Module) -> Iterator[None]:
    """Eval mode, no autograd and the plain (non-oneDNN) linears for the trace; the model's state restored after."""
    from ..kernels import packed

    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    packing = any(packed.module_cache(m).enabled for m in linears)
    training = model.training
    model.set_weight_packing(False)
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.set_weight_packing(packing)
        model.train(training)


def _check_exportable(model: nn.Module) -> None:
    if not hasattr(model, "set_weight_packing"):
        raise InputError(f"export_onnx needs a siglip model, a Hub id or a folder; got {type(model).__name__}.")
    if getattr(model.config, "quantization_config", None):
        raise InputError(
            "this model is siglip's int8 CPU model (model.quantize / siglip quantize), whose int8 layers call "
            "oneDNN kernels that ONNX has no operator for; export the float checkpoint it was made from "
            "(--dtype int8 writes an int8 ONNX file)."
        )
    for name, tensor in (*model.named_parameters(), *model.named_buffers()):
        if tensor.is_floating_point() and (tensor.dtype != torch.float32 or tensor.device.type != "cpu"):
            raise InputError(
                f"export needs an fp32 model on CPU ({name} is {tensor.dtype} on {tensor.device}); load it with "
                "dtype=torch.float32, or pass its Hub id or folder; fp16 / int8 files are made with dtype=."
            )


def _hub_options(revision: str | None):
    from ..hub import HubOptions

    return HubOptions(revision=revision)


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as error:
        raise DependencyError(
            f"ONNX export needs onnx and onnxruntime ({error.name} is missing): pip install 'siglip[onnx]'."
        ) from None
