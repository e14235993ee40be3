"""fp16 and int8 versions of an exported fp32 graph, with ONNX Runtime's own tools.

- fp16: weights and compute in float16 (`onnxruntime.transformers.float16`), inputs and output kept float32 so
  that the processors' outputs feed the graph unchanged. Softmax stays fp32 (the reference's attention softmax is
  fp32) and so does the NaFlex position-grid resize (coordinates up to hundreds lose too much in fp16);
  LayerNormalization runs in fp16 with its fp32 statistics (ONNX's default `stash_type`).
- int8: dynamic quantisation (`onnxruntime.quantization.quantize_dynamic`): 7-bit int8 weights per output
  channel (right on CPUs without VNNI too), activations quantised per tensor at run time (uint8), for MatMul/Conv/Gather. The NaFlex position resize is
  left in fp32. Per-tensor activation scales cost accuracy on some models, mostly in the first layers (errors
  made there pass through every later one): the exporter then retries with the embeddings and the first
  `fp32_layers` encoder layers left in fp32 (INT8_FP32_LAYERS, in that order) and keeps the first file that
  reaches the cosine target.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Node-name prefix of the NaFlex position resize (the `positions` submodule of NaflexImageEmbedding).
KEEP_FP32_SCOPE = "/positions/"
# int8 attempts: how many leading encoder layers (with the embeddings) stay fp32 in each.
INT8_FP32_LAYERS = (0, 1, 2, 4)


def fp32_scope_nodes(model) -> list[str]:
    """Names of the nodes that must keep fp32 (the NaFlex position resize)."""
    return [node.name for node in model.graph.node if node.name.startswith(KEEP_FP32_SCOPE)]


def to_fp16(model):
    """An fp16 copy of the fp32 ModelProto `model` (fp32 inputs and outputs, fp32 softmax)."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    converted = convert_float_to_float16(
        model,
        keep_io_types=True,
        op_block_list=[*DEFAULT_OP_BLOCK_LIST, "Softmax"],
        node_block_list=fp32_scope_nodes(model),
    )
    wrapped = OnnxModel(converted)
    wrapped.topological_sort()  # the converter appends the casts around blocked nodes after their consumers
    return wrapped.model


def to_int8(source: Path, target: Path, large: bool, fp32_layers: int = 0) -> None:
    """Write the dynamic-int8 version of the fp32 model file `source` to `target`; with `fp32_layers` > 0 the
    embeddings and the first `fp32_layers` encoder layers are not quantised."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(source), load_external_data=False).graph
    scopes = [KEEP_FP32_SCOPE]
    if fp32_layers:
        scopes += ["/embeddings/", *(f"/encoder/layers.{index}/" for index in range(fp32_layers))]
    exclude = [node.name for node in graph.node if any(scope in node.name for scope in scopes)]
    with _quiet("root"):  # quantize_dynamic logs a "consider pre-processing" warning on every call
        quantize_dynamic(
            source,
            target,
            per_channel=True,
            # 7-bit weights: without VNNI (AVX2, AVX-512 without VNNI) ONNX Runtime sums pairs of u8 x s8 products
            # in saturating 16-bit lanes, and full-range weights overflow them (cosine 0.93-0.97 to fp32 there).
            # The file is meant to run on any CPU, so it is built for the narrowest.
            reduce_range=True,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude,
            use_external_data_format=large,
        )


@contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger() if logger_name == "root" else logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
