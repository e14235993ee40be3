"""Check an exported file before it is kept: ONNX's checker, an ONNX Runtime session, and parity with the model.

Parity is measured on inputs that differ from the traced ones (another batch size; for NaFlex other patch
counts and grid shapes), so a shape baked into the graph by tracing fails here instead of in a user's hands.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ExportError
from .towers import TowerGraph

# fp32: max |onnx - torch| relative to the embedding's largest magnitude (fp32 summation order differs).
FP32_TOLERANCE = 1e-4
# fp16 / int8: every embedding's cosine to the fp32 torch model.
MIN_COSINE = 0.999


@dataclass(frozen=True)
class Parity:
    """How close the exported file came to the torch model on the verification inputs."""

    max_abs_diff: float
    min_cosine: float


def check_file(path: Path, graph: TowerGraph) -> Parity:
    """Validate `path` with onnx.checker, run it in ONNX Runtime and measure it against the torch model.

    Raises ExportError when the file is invalid, does not load or run, or returns the wrong shape.
    """
    import onnx
    import onnxruntime

    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as error:
        raise ExportError(f"the exported {graph.tower} graph is not valid ONNX: {error}") from None
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # ORT raises its own pybind exception types (Fail, InvalidGraph, NotImplemented)
        raise ExportError(f"ONNX Runtime cannot load the exported {graph.tower} graph: {error}") from None
    parity = Parity(0.0, 1.0)
    for inputs in (graph.sample(3, 1), *graph.verify_batches):
        parity = _worst(parity, _compare(session, graph, inputs))
    return parity


def acceptable(parity: Parity, dtype: str) -> bool:
    """fp32: max relative difference <= FP32_TOLERANCE; fp16 / int8: every cosine >= MIN_COSINE."""
    return parity.max_abs_diff <= FP32_TOLERANCE if dtype == "fp32" else parity.min_cosine >= MIN_COSINE


def refuse(parity: Parity, dtype: str, tower: str) -> ExportError:
    """The error for a file that `acceptable` rejected."""
    if dtype == "fp32":
        return ExportError(
            f"the exported {tower} graph disagrees with the model: max relative difference "
            f"{parity.max_abs_diff:.2e} > {FP32_TOLERANCE:.0e}; the file was not kept."
        )
    return ExportError(
        f"the {dtype} {tower} graph is too far from the fp32 model: cosine {parity.min_cosine:.5f} < {MIN_COSINE}; "
        f"the file was not kept (export fp32, or fp16 instead of int8)."
    )


def _compare(session, graph: TowerGraph, inputs: dict[str, torch.Tensor]) -> Parity:
    with torch.inference_mode():
        expected = graph.reference(inputs).float()
    feed = {name: inputs[name].numpy() for name in graph.input_names}
    try:
        (output,) = session.run([graph.output_name], feed)
    except Exception as error:
        shapes = {name: tuple(value.shape) for name, value in feed.items()}
        raise ExportError(f"ONNX Runtime failed to run the exported {graph.tower} graph on {shapes}: {error}") from None
    actual = torch.from_numpy(output).float()
    if actual.shape != expected.shape:
        raise ExportError(
            f"the exported {graph.tower} graph returns shape {tuple(actual.shape)}, the model "
            f"{tuple(expected.shape)}; the file was not kept."
        )
    return embedding_parity(actual, expected)


def embedding_parity(actual: torch.Tensor, expected: torch.Tensor) -> Parity:
    """Max |difference| relative to max(1, max |expected|), and the smallest row-wise cosine."""
    scale = max(1.0, expected.abs().max().item())
    diff = (actual - expected).abs().max().item() / scale
    cosine = torch.nn.functional.cosine_similarity(actual.double(), expected.double(), dim=-1).min().item()
    if not (diff == diff and cosine == cosine):  # NaN anywhere is a failure, never a pass
        diff, cosine = float("inf"), -1.0
    return Parity(diff, cosine)


def _worst(a: Parity, b: Parity) -> Parity:
    return Parity(max(a.max_abs_diff, b.max_abs_diff), min(a.min_cosine, b.min_cosine))
