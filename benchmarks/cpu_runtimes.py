"""The contenders of bench_cpu_runtimes.py: one tower of the same weights in each CPU runtime and precision.

Every builder takes a `Setup` and returns a `Run`: a function that maps the tower's model inputs
(`pixel_values` float32 or `input_ids` int64, batch first) to the pooled embedding (batch, dim) as a float32
torch tensor, so timing and accuracy treat every runtime alike. A builder that cannot run here (a package or an
API that is missing) raises `Skip` with the reason; the benchmark prints it as a row instead of failing.
ONNX Runtime and OpenVINO read the tower's ONNX file written by siglip's own exporter (`siglip.export`),
which carries siglip's graph shortcuts (the text tower's last layer at the last position only, the one-query
folds); the rows marked "transformers' graph" read transformers' own tower exported by `torch.onnx.export`
(the graph optimum writes: every layer at every position), the runtime as a user without siglip gets it.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import siglip

TOWER_CLASSES = {
    "vision": ("SiglipVisionModel", siglip.SiglipVisionModel),
    "text": ("SiglipTextModel", siglip.SiglipTextModel),
}
Inputs = dict[str, torch.Tensor]


class Skip(Exception):
    """This contender cannot run on this machine or install; the message says why."""


@dataclass
class Setup:
    """What every builder needs: the tower, the saved weights, threads, and calibration inputs."""

    tower: str  # "vision" or "text"
    folder: Path  # transformers' save_pretrained of the random base-patch16-224 tower
    threads: int
    calibration: torch.Tensor  # real photo crops (pixel_values) or token ids, for static int8 scales
    scratch: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="cpu_runtimes_")))
    _onnx: dict[str, Path] = field(default_factory=dict)

    @property
    def input_name(self) -> str:
        return "pixel_values" if self.tower == "vision" else "input_ids"


Run = Callable[[Inputs], torch.Tensor]  # model inputs -> float32 embeddings (batch, dim)
Builder = Callable[["Setup"], Run]


def _require(module: str, package: str):
    """Import an optional benchmark dependency or skip the contender, naming the pip package."""
    try:
        imported = __import__(module)
    except ImportError as error:
        raise Skip(f"{package} is not installed (pip install '.[bench]'): {error}") from None
    if module == "nncf":
        imported.set_log_level(logging.ERROR)  # its per-model statistics tables would bury the benchmark's rows
    return imported


# ---- PyTorch: transformers, siglip, torch quantize_dynamic ---------------------------------------------------
def transformers_fp32(setup: Setup) -> Run:
    """The parity oracle: transformers' eager model (its default attention) in fp32."""
    model = _transformers_model(setup)
    return lambda inputs: model(**inputs).pooler_output.float()


def _transformers_model(setup: Setup) -> torch.nn.Module:
    transformers = _require("transformers", "transformers")
    return getattr(transformers, TOWER_CLASSES[setup.tower][0]).from_pretrained(setup.folder).eval()


def torch_dynamic_int8(setup: Setup) -> Run:
    """torch.ao `quantize_dynamic` (qint8 weights, per-tensor dynamic activations) on transformers' model."""
    from torch.ao.quantization import quantize_dynamic

    model = quantize_dynamic(_transformers_model(setup), {torch.nn.Linear}, dtype=torch.qint8)
    return lambda inputs: model(**inputs).pooler_output.float()


def siglip_model(dtype: torch.dtype, int8: str | None = None, streams: int | str = "auto") -> Builder:
    """siglip's CPU path in `dtype`; `int8` = "dynamic" or "static" (calibrated) via `model.quantize` (what is
    not int8 stays in `dtype`); `streams`: siglip.set_cpu_streams while it runs ("auto" is the default)."""

    def build(setup: Setup) -> Run:
        model = TOWER_CLASSES[setup.tower][1].from_pretrained(setup.folder, dtype=dtype)
        if int8 is not None:
            if not hasattr(model, "quantize"):
                raise Skip("this siglip has no model.quantize() yet (the int8 path has not landed)")
            model.quantize("int8", calibration=setup.calibration if int8 == "static" else None)
            kept = (getattr(model.config, "quantization_config", None) or {}).get("float_layers", [])
            quantized = sum(type(module).__name__ == "Int8Linear" for module in model.modules())
        if streams != "auto" and not hasattr(siglip, "set_cpu_streams"):
            raise Skip("this siglip has no CPU streams (siglip.set_cpu_streams)")

        # the text embedding as get_text_features computes it (the last layer at the last position only)
        embed = getattr(model, "pooled_output", None) or (lambda **inputs: model(**inputs).pooler_output)

        def run(inputs: Inputs) -> torch.Tensor:
            typed = {key: value.to(dtype) if value.is_floating_point() else value for key, value in inputs.items()}
            if streams != "auto":
                siglip.set_cpu_streams(streams)
            try:
                return embed(**typed).float()
            finally:
                if streams != "auto":
                    siglip.set_cpu_streams("auto")

        if int8 is not None:  # what the accuracy self-check kept float, for the table's footnote
            run.kept_float = (len(kept), len(kept) + quantized)  # type: ignore[attr-defined]
        return run

    return build


# ---- ONNX Runtime -------------------------------------------------------------------------------------------
class _Pooled(torch.nn.Module):
    """transformers' tower with one output, the pooled embedding, for torch.onnx.export."""

    def __init__(self, tower: torch.nn.Module):
        super().__init__()
        self.tower = tower

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.tower(inputs).pooler_output


def _export_reference(setup: Setup, path: Path) -> None:
    """transformers' tower, fp32, through the TorchScript exporter (opset 17, dynamic batch), as optimum does."""
    sample = torch.randn(2, 3, 224, 224) if setup.tower == "vision" else torch.randint(0, 100, (2, 64))
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice, tracer notes
        torch.onnx.export(
            _Pooled(_transformers_model(setup)),
            (sample,),
            str(path),
            input_names=[setup.input_name],
            output_names=["pooler_output"],
            dynamic_axes={setup.input_name: {0: "batch"}, "pooler_output": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )


def onnx_file(setup: Setup, variant: str = "fp32") -> Path:
    """The tower exported by `siglip.export.export_onnx` ("fp32"), its ORT dynamic QInt8 version ("int8"), or
    transformers' own tower through torch.onnx ("reference"); cached."""
    if variant in setup._onnx:
        return setup._onnx[variant]
    if variant == "reference":
        _require("onnx", "onnx")
        path = setup.scratch / "onnx" / f"{setup.tower}_transformers.onnx"
        _export_reference(setup, path)
    elif variant == "fp32":
        _require("onnx", "onnx")
        from siglip.errors import SiglipError
        from siglip.export import export_onnx

        model = TOWER_CLASSES[setup.tower][1].from_pretrained(setup.folder)
        try:
            (written,) = export_onnx(model, setup.scratch / "onnx", tower=setup.tower, dtype="fp32")
        except SiglipError as error:
            raise Skip(f"siglip export failed: {error}") from None
        path = written.path
    else:  # int8: ONNX Runtime's dynamic quantisation, int8 weights per output channel
        _require("onnxruntime", "onnxruntime")
        from onnxruntime.quantization import QuantType, quantize_dynamic

        path = setup.scratch / "onnx" / f"{setup.tower}_ort_int8.onnx"
        quantize_dynamic(onnx_file(setup), path, per_channel=True, weight_type=QuantType.QInt8)
    setup._onnx[variant] = path
    return path


def onnxruntime_session(variant: str) -> Builder:
    """ONNX Runtime's CPU provider on the exported file: "fp32", "int8" (quantize_dynamic, QInt8 weights), or
    "reference" (transformers' graph, fp32)."""

    def build(setup: Setup) -> Run:
        ort = _require("onnxruntime", "onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = setup.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no busy-waiting between calls: interleaved rounds must not feed one runtime's spinning to the next
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(onnx_file(setup, variant)), options, providers=["CPUExecutionProvider"])
        feed = session.get_inputs()[0].name

        def run(inputs: Inputs) -> torch.Tensor:
            return torch.from_numpy(session.run(None, {feed: inputs[setup.input_name].numpy()})[0]).float()

        return run

    return build


# ---- OpenVINO (+ NNCF) --------------------------------------------------------------------------------------
def openvino_model(precision: str, hint: str, nncf_mode: str | None = None, graph: str = "fp32") -> Builder:
    """OpenVINO CPU on the exported file, compute `precision` ("f32"/"bf16") and `hint` ("LATENCY": one
    request on all threads; "THROUGHPUT": the batch split over the plugin's streams). `nncf_mode`:
    "weights" = `nncf.compress_weights` (int8 weight-only), "ptq" = `nncf.quantize` calibrated on `calibration`.
    `graph`: "fp32" siglip's export, "reference" transformers' graph (onnx_file)."""

    def build(setup: Setup) -> Run:
        ov = _require("openvino", "openvino")
        core = ov.Core()
        model = core.read_model(str(onnx_file(setup, graph)))
        if nncf_mode == "weights":
            nncf = _require("nncf", "nncf")
            model = nncf.compress_weights(model)  # INT8_ASYM per output channel
        elif nncf_mode == "ptq":
            nncf = _require("nncf", "nncf")
            items = [setup.calibration[index : index + 1].numpy() for index in range(len(setup.calibration))]
            model = nncf.quantize(
                model, nncf.Dataset(items), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(items)
            )
        config = {
            "INFERENCE_PRECISION_HINT": precision,
            "PERFORMANCE_HINT": hint,
            "INFERENCE_NUM_THREADS": setup.threads,
        }
        compiled = core.compile_model(model, "CPU", config)
        if hint == "LATENCY":
            request = compiled.create_infer_request()

            def run(inputs: Inputs) -> torch.Tensor:
                result = request.infer({0: inputs[setup.input_name].numpy()})
                return torch.from_numpy(np.array(result[0])).float()

            return run
        return _streamed(ov, compiled)

    return build


def _streamed(ov, compiled) -> Callable[[Inputs], torch.Tensor]:
    """Split each batch over the plugin's optimal number of requests, run them asynchronously, join in order."""
    count = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    queue = ov.AsyncInferQueue(compiled, count)
    parts: dict[int, np.ndarray] = {}
    queue.set_callback(lambda request, index: parts.__setitem__(index, request.get_output_tensor(0).data.copy()))

    def run(inputs: Inputs) -> torch.Tensor:
        (array,) = (value.numpy() for value in inputs.values())
        parts.clear()
        for index, chunk in enumerate(np.array_split(array, min(count, len(array)))):
            queue.start_async({0: chunk}, index)
        queue.wait_all()
        return torch.from_numpy(np.concatenate([parts[index] for index in sorted(parts)])).float()

    return run


# (row label, builder) in table order; the image and the text tower run the same list.
CONTENDERS: list[tuple[str, Builder]] = [
    ("transformers eager fp32", transformers_fp32),
    ("siglip fp32 (default)", siglip_model(torch.float32)),
    ("ONNX Runtime fp32", onnxruntime_session("fp32")),
    ("OpenVINO fp32 (latency hint)", openvino_model("f32", "LATENCY")),
    ("siglip bf16", siglip_model(torch.bfloat16)),
    ("OpenVINO bf16 (latency hint)", openvino_model("bf16", "LATENCY")),
    ("OpenVINO bf16 (throughput hint)", openvino_model("bf16", "THROUGHPUT")),
    ("ONNX Runtime fp32, transformers' graph", onnxruntime_session("reference")),
    ("OpenVINO fp32 (throughput hint), transformers' graph", openvino_model("f32", "THROUGHPUT", graph="reference")),
    ("ONNX Runtime int8 dynamic (QInt8 weights)", onnxruntime_session("int8")),
    ("OpenVINO int8 weight-only (NNCF), bf16 compute", openvino_model("bf16", "THROUGHPUT", "weights")),
    ("OpenVINO int8 post-training quantization (NNCF)", openvino_model("bf16", "THROUGHPUT", "ptq")),
    ("torch `quantize_dynamic` qint8", torch_dynamic_int8),
    ("siglip int8 dynamic", siglip_model(torch.float32, "dynamic")),
    ("siglip int8 static (calibrated)", siglip_model(torch.float32, "static")),
    ("siglip int8 static (calibrated), bf16 elsewhere", siglip_model(torch.bfloat16, "static")),
    ("siglip bf16, one CPU stream", siglip_model(torch.bfloat16, streams=1)),
    ("siglip int8 static, bf16 elsewhere, one CPU stream", siglip_model(torch.bfloat16, "static", streams=1)),
]
