"""Every linear layer of the towers runs through here: one call, and the path is chosen for this machine.

- int8 (`Int8Linear`, CPU): oneDNN's u8 x s8 GEMMs, with the same fusions (kernels/int8.py);
- oneDNN-packed (CPU inference in fp32, or bf16 where the CPU has bf16 dot products): weights packed once,
  bias / GELU / residual inside the GEMM (kernels/packed.py);
- plain `F.linear` otherwise (autograd, GPUs, compile), except that bf16 on a CPU without native bf16 computes
  in fp32 (bf16 GEMMs are emulated there, 6x slower than fp32 on an AVX2 EPYC) and rounds the result to bf16:
  bf16 storage, fp32 speed.
The choice reads `cpu_features()` (kernels/cpu.py), never a kernel's error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import packed
from .cpu import cpu_features
from .gelu import gelu_tanh_

# Read once: torch.compile traces this module's functions, and a call into cpu_features() would be traced too.
_NATIVE_BF16 = cpu_features().native_bf16


def compute_dtype(inputs: torch.Tensor) -> torch.dtype:
    """The dtype a GEMM over `inputs` computes in: bf16 on a CPU without native bf16 computes in fp32."""
    if inputs.dtype == torch.bfloat16 and inputs.device.type == "cpu" and not _NATIVE_BF16:
        return torch.float32
    return inputs.dtype


def plain_linear(
    inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation_fn: Callable | None = None
) -> torch.Tensor:
    """activation(inputs @ weight.T + bias) with `F.linear`, in `compute_dtype` (the result in the input dtype)."""
    dtype = compute_dtype(inputs)  # `.to` of a tensor already in `dtype` returns it as is
    output = F.linear(inputs.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype))
    output = output if activation_fn is None else activation_fn(output)
    return output.to(inputs.dtype)


def linear(
    module: nn.Module,
    inputs: torch.Tensor,
    activation: str | None = None,
    activation_fn: Callable | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """activation(module(inputs)) [+ residual] by the fastest correct path here. `activation` is the config's name
    (fused into the GEMM where oneDNN can), `activation_fn` the function that computes it otherwise."""
    fused = activation if activation in packed.FUSED_ACTIVATIONS else None
    if replaceable(module):
        output = packed.try_packed_linear(module, inputs, fused, residual)
        if output is not None:
            return output if activation_fn is None or fused is not None else activation_fn(output)
        if activation == "gelu_pytorch_tanh":  # in place over the fp32 GEMM output where it can (gelu.py)
            activation_fn = gelu_tanh_
        output = plain_linear(inputs, module.weight, module.bias, activation_fn)
    else:  # a subclass or wrapper (LoRA), or hooks: its own call
        output = module(inputs)
        output = output if activation_fn is None else activation_fn(output)
    return output if residual is None else residual + output


def replaceable(module: nn.Module) -> bool:
    """Whether the kernels may compute `module` from its weight and bias instead of calling it: an `nn.Linear` or
    `Int8Linear` itself (not a subclass, e.g. a LoRA layer) with no forward hooks (which only its call runs)."""
    return type(module) in (nn.Linear, packed.Int8Linear) and not (module._forward_hooks or module._forward_pre_hooks)


def fused_linear(modules: Sequence[nn.Module], inputs: torch.Tensor) -> torch.Tensor:
    """cat([m(inputs) for m in modules], -1) as one GEMM where the path allows (int8 or packed: q, k and v)."""
    if all(replaceable(m) for m in modules):  # else each is called (hooks, wrappers)
        int8 = [isinstance(m, packed.Int8Linear) for m in modules]
        if all(int8):
            return packed.int8_linear(modules, inputs)
        cache = packed.module_cache(modules[0])
        if not any(int8) and cache.usable(inputs, modules[0].weight):
            return packed.packed_linear(inputs, cache, [m.weight for m in modules], [m.bias for m in modules])
    return torch.cat([linear(m, inputs) for m in modules], dim=-1)


def float_weight(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """(weight, bias) of a linear layer as float tensors: its own, or an int8 layer's dequantised (w * scale);
    None for anything else (a subclass, a wrapper, hooks), whose function is only known by calling it."""
    if not replaceable(module):
        return None
    if isinstance(module, packed.Int8Linear):
        return module.weight.float() * module.weight_scale.float()[:, None], module.bias
    return module.weight, module.bias


def weight_linear(owner: nn.Module, inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    """inputs @ weight.T + bias for a weight that is not a linear module's own (a slice of an in-projection):
    `owner` holds the weight as its parameter, and the packed copy is cached on it (see packed.cache_owners)."""
    cache = packed.module_cache(owner)
    if cache.usable(inputs, weight):
        return packed.packed_linear(inputs, cache, [weight], [bias])
    return plain_linear(inputs, weight, bias)


# Rows per block of the packed MLP: with one block's (rows, intermediate) activations at a time, fc1 + GELU and
# fc2 ran ~8 % faster in bf16 at 6272 rows (a batch of 32 images at 224 px) on the benchmark machine.
MLP_ROW_BLOCK = 2048


def mlp(
    fc1: nn.Module,
    fc2: nn.Module,
    activation: str,
    activation_fn: Callable,
    inputs: torch.Tensor,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """fc2(act(fc1(inputs))) [+ residual]; on the packed path MLP_ROW_BLOCK rows at a time."""
    rows = inputs.numel() // inputs.shape[-1]
    if rows <= MLP_ROW_BLOCK or not packed.module_cache(fc1).usable(inputs, fc1.weight):
        return _mlp_rows(fc1, fc2, activation, activation_fn, inputs, residual)
    step = math.ceil(rows / math.ceil(rows / MLP_ROW_BLOCK))  # equal blocks of at most MLP_ROW_BLOCK rows
    flat = inputs.reshape(rows, -1)
    flat_residual = residual.reshape(rows, -1) if residual is not None else None
    blocks = [
        _mlp_rows(
            fc1, fc2, activation, activation_fn, flat[start : start + step],
            None if flat_residual is None else flat_residual[start : start + step],
        )
        for start in range(0, rows, step)
    ]  # fmt: skip
    return torch.cat(blocks).view(*inputs.shape[:-1], -1)


def _mlp_rows(fc1, fc2, activation, activation_fn, inputs, residual):
    inner = linear(fc1, inputs, activation, activation_fn)
    return linear(fc2, inner, residual=residual)


def convolution(module: nn.Conv2d, inputs: torch.Tensor) -> torch.Tensor:
    """module(inputs) for a convolution (the patch embedding), in `compute_dtype`: bf16 on a CPU without native
    bf16 convolves in fp32 and rounds the result to bf16."""
    dtype = compute_dtype(inputs)
    if dtype == inputs.dtype or type(module) is not nn.Conv2d:
        return module(inputs)
    bias = None if module.bias is None else module.bias.to(dtype)
    output = F.conv2d(inputs.to(dtype), module.weight.to(dtype), bias, module.stride, module.padding,
                      module.dilation, module.groups)  # fmt: skip
    return output.to(inputs.dtype)
