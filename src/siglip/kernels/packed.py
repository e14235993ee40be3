"""Pre-packed oneDNN weights for CPU inference: the fast path of every linear layer of the towers.

On CPU, `F.linear` runs MKL's GEMM, which repacks the weight on every call, writes the bias into the output
before the product, and leaves GELU and residual additions to separate passes over memory. oneDNN can take a
weight packed once into its blocked layout and apply bias, GELU (tanh or erf) or a residual add inside the GEMM
(its "post-ops"). On the 2-core AVX-512 machine of benchmarks/results_models.md that makes the linears 1.2-1.6x
faster in fp32 and ~1.1x in bf16; see that file.

Used only where it cannot change what autograd sees: CPU tensors of the weight's dtype (fp32 or bf16) when no
gradient is being recorded for them. Under torch.compile these calls stay eager (graph breaks) and inductor
compiles the rest: on the benchmark machine inductor's own frozen, pre-packed GEMMs were slower (fp32 goes
to MKL there). Results equal `F.linear` up to fp32 summation order (~1e-6 relative).

Packed weights live next to the originals (the state dict is unchanged: the reference's names and layout), so
inference holds the linear weights twice; `model.set_weight_packing(False)` frees the copies and turns the path off.
A packed copy is rebuilt when a source tensor is replaced or updated in place (its pointer or version changes).
Inference tensors (made inside `torch.inference_mode()`, e.g. by `model.to(...)` there) keep no version counter:
an in-place update of such a weight inside inference mode goes unseen, so call `model.set_weight_packing(True)`
(which clears the caches) after editing weights that way. `from_pretrained` always builds normal tensors.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from .cache_key import tensor_key  # noqa: F401 (re-exported)
from .cpu import cpu_features
from .gelu import gelu_tanh_
from .int8 import Int8Linear, int8_linear

_HAS_ONEDNN = torch.backends.mkldnn.is_available()
# Packed bf16 GEMMs only where the CPU multiplies bf16 natively: elsewhere oneDNN emulates them (or, below
# AVX-512, refuses them), and kernels/linear.py computes bf16 layers in fp32 instead.
_BF16_OK = _HAS_ONEDNN and cpu_features().native_bf16
# Inside a torch.compile'd model the packed GEMMs stay eager between inductor's kernels. With inductor's AVX2
# code (PyTorch's kernels at AVX2: AVX2-only CPUs) and dynamic shapes, a compiled encoder layer mixing the two
# returned wrong values (max |diff| 1.3, NaN in a 3-layer tower; each piece alone was right): there inductor
# compiles the GEMMs itself.
EAGER_KERNELS_UNDER_COMPILE = cpu_features().aten_capability.upper().startswith("AVX512")

# oneDNN post-op names for the activations it can fuse: config name -> (attr, algorithm).
FUSED_ACTIVATIONS = {"gelu_pytorch_tanh": ("gelu", "tanh"), "gelu": ("gelu", "none"), "relu": ("relu", "")}
# fp32 GELU after the GEMM (in place: gelu.py for the tanh form, PyTorch's for erf) where oneDNN's post-op is the
# slower way (below AVX-512).
_FP32_GELU_AFTER = not cpu_features().fused_fp32_gelu


class PackedWeights:
    """One module's packed weight and bias (several linears concatenated along outputs, e.g. q, k, v).

    Not a buffer: not saved, not moved by `.to()`, emptied by deepcopy and pickling.
    """

    def __init__(self) -> None:
        self.enabled = True
        self._key: tuple | None = None
        self._value: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def usable(self, inputs: torch.Tensor, weight: torch.Tensor) -> bool:
        """Whether the packed path applies to `inputs` through a linear holding `weight`."""
        if not self.enabled or not _HAS_ONEDNN or inputs.device.type != "cpu" or weight.device.type != "cpu":
            return False
        if torch.compiler.is_compiling() and not EAGER_KERNELS_UNDER_COMPILE:
            return False
        if inputs.dtype != weight.dtype or not (
            inputs.dtype == torch.float32 or (inputs.dtype == torch.bfloat16 and _BF16_OK)
        ):
            return False
        return not (torch.is_grad_enabled() and (weight.requires_grad or inputs.requires_grad))

    def get(
        self, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None], rows: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(packed weight, bias) for the concatenation of `weights` / `biases`, packed on first use."""
        key = tuple(tensor_key(t) for t in (*weights, *biases) if t is not None)
        if key != self._key or self._value is None:
            with torch.no_grad():
                weight = weights[0] if len(weights) == 1 else torch.cat(list(weights))
                bias = None
                if all(b is not None for b in biases):
                    bias = biases[0] if len(biases) == 1 else torch.cat(list(biases))
                self._value = (torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows), bias)
            self._key = key
        return self._value

    def clear(self) -> None:
        self._key, self._value = None, None

    def __deepcopy__(self, memo: dict) -> PackedWeights:
        copy = PackedWeights()
        copy.enabled = self.enabled
        return copy

    def __getstate__(self) -> dict:
        return {"enabled": self.enabled}

    def __setstate__(self, state: dict) -> None:
        self.__init__()
        self.enabled = state.get("enabled", True)


@torch.compiler.disable
def packed_linear(
    inputs: torch.Tensor,
    cache: PackedWeights,
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor | None],
    activation: str | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """activation(inputs @ cat(weights).T + cat(biases)) [+ residual] with the packed weight of `cache`.

    Call only when `cache.usable(inputs, weights[0])`; `activation` must be a key of FUSED_ACTIVATIONS.
    torch.compile leaves this call to eager (a graph break): inductor compiles what lies between the GEMMs.
    """
    rows = inputs.numel() // inputs.shape[-1]
    weight, bias = cache.get(weights, biases, rows)
    if residual is not None:
        return torch.ops.mkldnn._linear_pointwise.binary(inputs, residual, weight, bias, "add")
    attr, algorithm = FUSED_ACTIVATIONS[activation] if activation is not None else ("none", "")
    if attr == "gelu" and _FP32_GELU_AFTER and inputs.dtype == torch.float32:
        output = torch.ops.mkldnn._linear_pointwise(inputs, weight, bias, "none", [], "")
        return gelu_tanh_(output) if algorithm == "tanh" else torch.ops.aten.gelu_(output)
    return torch.ops.mkldnn._linear_pointwise(inputs, weight, bias, attr, [], algorithm)


def cache_owners(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The modules of `model` that can keep a packed-weight cache: those holding parameters of their own (every
    linear, and the owner of a weight that `linear.weight_linear` multiplies, such as the MAP head's in-projection).
    `set_weight_packing` and `compile` set up their caches before any forward runs."""
    return (module for module in model.modules() if next(module.parameters(recurse=False), None) is not None)


def module_cache(module: torch.nn.Module) -> PackedWeights:
    """The packed-weight cache a module keeps as a plain attribute (created on first use)."""
    cache = module.__dict__.get("packed_weights")
    if cache is None:
        cache = module.__dict__["packed_weights"] = PackedWeights()
    return cache


def try_packed_linear(
    module: torch.nn.Linear,
    inputs: torch.Tensor,
    activation: str | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """activation(module(inputs)) [+ residual] on the packed path, or None where it does not apply (the caller
    then runs the plain ops)."""
    if isinstance(module, Int8Linear):  # the int8 path (quantization/): same fusions, u8 x s8 GEMMs
        return int8_linear([module], inputs, FUSED_ACTIVATIONS[activation][:2] if activation else None, residual)
    cache = module_cache(module)
    if not cache.usable(inputs, module.weight):
        return None
    return packed_linear(inputs, cache, [module.weight], [module.bias], activation, residual)
