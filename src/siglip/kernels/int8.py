"""The int8 linear layer of the CPU inference path: per-channel int8 weights, per-tensor uint8 activations.

Kernel: oneDNN's u8 x s8 matmul through `torch.ops.onednn.qlinear_pointwise` (the ops PyTorch's inductor emits
for x86 int8 models). It takes the activations as uint8 with a scale and zero point, the weights as s8 packed once
into oneDNN's blocked layout with one scale per output channel, and applies the bias, GELU or a residual addition
inside the GEMM; its output is fp32/bf16, or uint8 again when the next linear's input scale is known (fc1 -> fc2),
so the MLP's wide intermediate crosses memory as one byte per element. Whole-tower speeds against bf16, fp32 and
the other runtimes are in benchmarks/results_cpu_runtimes.md.

Activation scales are either static (calibrated on real inputs, see convert.py, and saved with the model:
deterministic, batch-independent, the fastest) or dynamic (min/max of each call's input: no calibration needed,
but a row's result depends slightly on the rest of its batch). Weights are symmetric (zero point 0), activations
asymmetric (uint8 with a zero point) because LayerNorm and GELU outputs are not centred.

Only CPU: oneDNN's int8 kernels have no CUDA counterpart here, and `Int8Linear` refuses other devices.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import InputError
from .cache_key import tensor_key
from .cpu import cpu_features

QMAX = 255  # uint8 activations
# Symmetric int8 weights: -127..127 (no -128, so that -w is representable) where the CPU sums u8 x s8 products
# in 32 bits (VNNI, AMX), -63..63 where it sums pairs in saturating 16-bit lanes (AVX2, AVX-512 without VNNI).
# kernels/cpu.py decides; WMAX is the full range a saved checkpoint may hold.
WMAX = 127
# torch.quantize_per_tensor is only used for its one-pass float -> uint8 rounding (its quint8 result is not kept;
# 6x faster than the arithmetic below over a base fc1 output); its deprecation notice (PyTorch 2.10+) would reach
# every user of the int8 path. When it is gone, the arithmetic fallback below takes over.
warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor.*deprecated", category=UserWarning)
_HAS_QUANTIZE = hasattr(torch, "quantize_per_tensor")


def _spend_deprecation_notice() -> None:
    """PyTorch emits that notice once per process (TORCH_WARN_ONCE): spend it here, silenced, so that a first int8
    call under a warnings-as-errors filter set after import (pytest's `filterwarnings = error`, which overrides the
    filter above) does not raise it from inside a forward pass."""
    if _HAS_QUANTIZE:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.quantize_per_tensor(torch.zeros(1), 1.0, 0, torch.quint8)


_spend_deprecation_notice()


# Below these widths (hidden size) int8 buys a tower little or nothing over fp32: the inputs and outputs of its
# GEMMs cost as much as the products. Measured on the 2-core Xeon, one encoder layer's GEMMs over 3136 rows
# (16 images), int8 dynamic / static against packed fp32: with 7-bit weights (AVX2, no VNNI) 0.75 / 0.83x at width
# 32, 1.01 / 1.10x at 64, 1.11 / 1.21x at 96, 1.44 / 1.53x at 192; with VNNI 0.74 / 0.89x at 32, 0.96 / 1.13x at
# 48, 1.12 / 1.32x at 64, 1.41 / 1.66x at 96; with AMX 0.69 / 0.78x at 32, 1.10 / 1.26x at 64, 1.96 / 2.30x at 128.
# Whole towers gain less (attention and the patch embedding stay float): 0.92-1.05x at widths 32-48 on AVX2.
INT8_MIN_WIDTH_VNNI = 64
INT8_MIN_WIDTH_REDUCED = 96


def int8_speed_note(width: int) -> str | None:
    """Why int8 will not be faster than fp32 for a tower of hidden size `width` on this CPU, or None where it
    is (see INT8_MIN_WIDTH_*)."""
    features = cpu_features()
    least = INT8_MIN_WIDTH_VNNI if features.int8_vnni else INT8_MIN_WIDTH_REDUCED
    if width >= least:
        return None
    kind = "VNNI" if features.int8_vnni else "7-bit weights, no VNNI"
    return (
        f"int8 will not make this model faster on this CPU (oneDNN {features.onednn_isa}, {kind}): at width {width} "
        f"its int8 GEMMs measured 0.7-1.1x fp32, the inputs and outputs costing as much as the products; int8 pays "
        f"from width {least} here. The float model runs as fast, without int8's error"
    )


def quantize_weight(weight: torch.Tensor, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, in) float weight -> (int8 weight, fp32 per-output-channel scale), symmetric round-to-nearest to
    +-`limit` (default: the largest this CPU's int8 GEMM sums exactly, `cpu_features().int8_weight_max`)."""
    limit = cpu_features().int8_weight_max if limit is None else limit
    weight = weight.detach().float()
    scale = weight.abs().amax(dim=1).clamp_min(1e-12) / limit
    quantized = torch.round(weight / scale[:, None]).clamp_(-limit, limit).to(torch.int8)
    return quantized, scale


def narrowed_weight(weight: torch.Tensor, scale: torch.Tensor, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 weight and per-channel scale with every |w| <= `limit`: the channels of a checkpoint quantised to 8 bits
    on a VNNI CPU that exceed a narrower CPU's range are re-rounded (same values, a coarser step)."""
    peaks = weight.abs().amax(dim=1).float()
    if bool((peaks <= limit).all()):
        return weight, scale
    factor = torch.where(peaks > limit, limit / peaks.clamp_min(1), torch.ones_like(peaks))
    narrowed = torch.round(weight.float() * factor[:, None]).clamp_(-limit, limit).to(torch.int8)
    return narrowed, scale.float() / factor


def activation_qparams(low: float, high: float) -> tuple[float, int]:
    """Affine uint8 (scale, zero point) covering [low, high] and 0 exactly."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = max(high - low, 1e-8) / QMAX
    return scale, int(min(QMAX, max(0, round(-low / scale))))


def quantize_activation(inputs: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """float -> uint8 (round to nearest, saturating), as a plain uint8 tensor for the oneDNN kernel.

    `torch.quantize_per_tensor` is the fastest quantiser in eager PyTorch (one vectorised pass); its quint8
    result shares storage with the plain uint8 tensor returned here (the quantized tensor's bytes are its values).
    """
    if inputs.dtype != torch.float32:
        inputs = inputs.float()
    if not _HAS_QUANTIZE:
        return torch.clamp(torch.round(inputs * (1.0 / scale)) + zero_point, 0, QMAX).to(torch.uint8)
    quantized = torch.quantize_per_tensor(inputs, scale, zero_point, torch.quint8)
    plain = torch.empty(0, dtype=torch.uint8, device=inputs.device)
    return plain.set_(quantized.untyped_storage(), 0, quantized.shape, quantized.stride())


class Int8Linear(nn.Module):
    """A linear layer holding int8 weights: y = dequant(quant(x) @ w_int8^T) + bias.

    Buffers (saved by `save_pretrained`, the names the float layer had plus scales): `weight` int8 (out, in),
    `weight_scale` fp32 (out,), `bias` fp32 (out,) or absent, `input_scale` / `input_zero_point` (1,) - a scale of
    0 means dynamic (per call) activation scales. The oneDNN-packed weight is a cache beside them (not saved).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device: torch.device | None = None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("weight_scale", torch.ones(out_features, device=device))
        self.register_buffer("bias", torch.zeros(out_features, device=device) if bias else None)
        self.register_buffer("input_scale", torch.zeros(1, device=device))
        self.register_buffer("input_zero_point", torch.zeros(1, dtype=torch.int32, device=device))
        self.__dict__["consumer"] = None  # the Int8Linear fed by this one's activation output (fc1 -> fc2)
        self.__dict__["_packed"] = (None, None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, quantized: tuple[torch.Tensor, torch.Tensor] | None = None) -> Int8Linear:
        """The int8 twin of `linear` (weights quantised per output channel, or the (int8 weight, scale) given in
        `quantized`; dynamic activations until calibrated)."""
        module = cls(linear.in_features, linear.out_features, linear.bias is not None, linear.weight.device)
        weight, scale = quantized if quantized is not None else quantize_weight(linear.weight)
        module.weight.copy_(weight)
        module.weight_scale.copy_(scale)
        if linear.bias is not None:
            module.bias.copy_(linear.bias.detach().float())
        return module

    def _apply(self, fn, recurse: bool = True):
        """`.to(dtype)`, `.half()`, `.bfloat16()` move the buffers but keep the scales and bias fp32 (the kernel
        takes them in fp32; a bf16 weight scale would cost accuracy). Device moves apply as usual."""
        originals = {name: buffer for name, buffer in self._buffers.items() if buffer is not None}
        super()._apply(fn, recurse)
        for name, before in originals.items():
            after = self._buffers[name]
            if after is not None and after.dtype != before.dtype:
                self._buffers[name] = before.to(device=after.device)
        return self

    def extra_repr(self) -> str:
        mode = "static" if self.is_static else "dynamic"
        return f"in_features={self.in_features}, out_features={self.out_features}, activations={mode}"

    # ---- activation scales -------------------------------------------------------------------------
    @property
    def is_static(self) -> bool:
        return float(self.input_scale[0]) > 0

    def set_input_range(self, low: float, high: float) -> None:
        """Fix the activation scale to cover [low, high] (calibration)."""
        scale, zero_point = activation_qparams(low, high)
        self.input_scale.fill_(scale)
        self.input_zero_point.fill_(zero_point)

    def input_qparams(self, inputs: torch.Tensor) -> tuple[float, int]:
        """(scale, zero point) for `inputs`: the calibrated ones, or the min/max of this call's input."""
        if self.is_static:
            return float(self.input_scale[0]), int(self.input_zero_point[0])
        low, high = torch.aminmax(inputs.detach())
        return activation_qparams(float(low), float(high))

    # ---- forward -----------------------------------------------------------------------------------
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return int8_linear([self], inputs)

    def packed(self, group: Sequence[Int8Linear]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(oneDNN-packed int8 weight, per-channel scale, bias) of `group` (this module first; several linears
        sharing one input, e.g. q, k and v, concatenated along outputs), packed on first use."""
        tensors = [t for m in group for t in (m.weight, m.weight_scale, m.bias) if t is not None]
        key = tuple(tensor_key(t) for t in tensors)
        cached_key, value = self.__dict__["_packed"]
        if cached_key != key or value is None:
            with torch.no_grad():
                weight = torch.cat([m.weight for m in group])
                scale = torch.cat([m.weight_scale.float() for m in group])
                weight, scale = narrowed_weight(weight, scale, cpu_features().int8_weight_max)
                biases = [m.bias for m in group]
                bias = torch.cat([b.float() for b in biases]) if all(b is not None for b in biases) else None
                value = (torch.ops.onednn.qlinear_prepack(weight, None), scale, bias)
            self.__dict__["_packed"] = (key, value)
        return value

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_packed"] = (None, None)
        return state


_WEIGHT_ZERO_POINTS: dict[tuple[int, torch.device], torch.Tensor] = {}


def _zero_points(count: int, device: torch.device) -> torch.Tensor:
    key = (count, device)
    if key not in _WEIGHT_ZERO_POINTS:
        _WEIGHT_ZERO_POINTS[key] = torch.zeros(count, dtype=torch.long, device=device)
    return _WEIGHT_ZERO_POINTS[key]


def check_cpu(tensor: torch.Tensor) -> None:
    if tensor.device.type != "cpu":
        raise InputError(
            f"int8 inference runs on CPU only (oneDNN's x86 int8 kernels); got a tensor on {tensor.device}. "
            "On a GPU use dtype=torch.bfloat16 or float16 instead of quantization='int8'."
        )
    check_int8_supported()


def check_int8_supported() -> None:
    """Refuse int8 where oneDNN's x86 int8 GEMMs cannot run (aarch64, x86 without AVX2, PyTorch without oneDNN)."""
    features = cpu_features()
    if not features.int8_supported:
        raise InputError(
            f"int8 inference needs an x86 CPU with AVX2 and PyTorch built with oneDNN; this machine is "
            f"{features.machine} (oneDNN ISA {features.onednn_isa}, oneDNN {'on' if features.onednn_available else 'off'}). "
            "Load the float checkpoint with dtype=torch.float32 (or bfloat16) instead of an int8 one or "
            "quantization='int8'."
        )


class _NoBackward(torch.autograd.Function):
    """Marks an int8 GEMM's output as depending on its float inputs, with a backward that refuses clearly
    (oneDNN's int8 kernels have no gradient; PyTorch would otherwise warn and return wrong gradients)."""

    @staticmethod
    def forward(ctx, output: torch.Tensor, *sources: torch.Tensor) -> torch.Tensor:
        return output

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        raise InputError(
            "int8 layers have no backward pass: fine-tune the float model and quantize it afterwards, or run the "
            "int8 model under torch.no_grad() / torch.inference_mode()"
        )


@torch.compiler.disable
def int8_linear(
    group: Sequence[Int8Linear],
    inputs: torch.Tensor,
    activation: tuple[str, str] | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """activation(inputs @ cat(w).T + cat(b)) [+ residual] through the u8 x s8 oneDNN kernel.

    `inputs` is float, or uint8 already quantised with `group[0]`'s static scale (the output of its producer).
    `activation` is a oneDNN post-op (name, algorithm), e.g. ("gelu", "tanh"). With an activation and a static
    consumer (fc1 -> fc2) the result is uint8 in the consumer's input scale; otherwise it has the float dtype of
    `residual` or of `inputs` (fp32 for uint8 inputs).
    """
    first = group[0]
    check_cpu(inputs)
    sources = [t for t in (inputs, residual) if t is not None and t.requires_grad]
    if sources and torch.is_grad_enabled():
        with torch.no_grad():
            output = int8_linear(group, inputs, activation, residual)
        return _NoBackward.apply(output, *sources) if output.is_floating_point() else output
    weight, weight_scale, bias = first.packed(group)
    if inputs.dtype == torch.uint8:
        x_scale, x_zero_point = float(first.input_scale[0]), int(first.input_zero_point[0])
        quantized = inputs
        float_dtype = residual.dtype if residual is not None else torch.float32
    else:
        x_scale, x_zero_point = first.input_qparams(inputs)
        quantized = quantize_activation(inputs, x_scale, x_zero_point)
        float_dtype = residual.dtype if residual is not None else inputs.dtype
    consumer = first.__dict__.get("consumer")
    writes_uint8 = residual is None and activation is not None and consumer is not None and consumer.is_static
    # The kernel writes fp32, bf16 where the CPU has native bf16 (oneDNN has no int8 -> bf16 kernel without it),
    # or uint8: the other dtypes (fp16, bf16 without native support) compute in fp32 and are cast back after.
    kernel_dtype = float_dtype if float_dtype == torch.float32 else torch.float32
    if float_dtype == torch.bfloat16 and cpu_features().native_bf16:
        kernel_dtype = torch.bfloat16
    name, algorithm = activation if activation is not None else ("none", "")
    zero_points = _zero_points(weight_scale.numel(), weight_scale.device)
    if writes_uint8:
        out_scale, out_zero_point = float(consumer.input_scale[0]), int(consumer.input_zero_point[0])
        return torch.ops.onednn.qlinear_pointwise(
            quantized, x_scale, x_zero_point, weight, weight_scale, zero_points, bias,
            out_scale, out_zero_point, None, name, [], algorithm,
        )  # fmt: skip
    if residual is not None:
        # the kernel reads `other` as dense rows (a transposed view gave garbage)
        residual = residual.to(kernel_dtype).contiguous()
        output = torch.ops.onednn.qlinear_pointwise.binary(
            quantized, x_scale, x_zero_point, weight, weight_scale, zero_points, residual, bias,
            1.0, 0, kernel_dtype, 1.0, 0, "add", 1.0, name, [], algorithm,
        )  # fmt: skip
    else:
        output = torch.ops.onednn.qlinear_pointwise(
            quantized, x_scale, x_zero_point, weight, weight_scale, zero_points, bias,
            1.0, 0, kernel_dtype, name, [], algorithm,
        )  # fmt: skip
    return output.to(float_dtype)
