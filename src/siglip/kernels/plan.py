"""Which kernel each dtype takes on this machine, and why: what `siglip doctor` prints and bug reports carry.

Read from the same `cpu_features()` the kernels decide by, so the plan is what runs, not a second opinion.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .cpu import CpuFeatures, cpu_features


@dataclass(frozen=True)
class KernelChoice:
    """The path one dtype's layers take on the CPU: GEMMs, attention, and the reason for the choice."""

    dtype: str
    gemm: str
    attention: str
    reason: str
    available: bool = True


def kernel_plan(features: CpuFeatures | None = None) -> list[KernelChoice]:
    """One `KernelChoice` per dtype (fp32, bf16, fp16, int8) for CPU inference on this machine."""
    features = features or cpu_features()
    onednn = features.onednn_available
    packed = "oneDNN GEMMs, weights packed once, bias / GELU / residual fused" if onednn else "PyTorch F.linear"
    fp32, why = packed, "fp32 runs natively on every CPU"
    if onednn and not features.fused_fp32_gelu:
        fp32 = "oneDNN GEMMs, weights packed once, bias / residual fused, then GELU in cache-sized blocks"
        why += "; below AVX-512 oneDNN's GELU inside the GEMM is slower than a pass after it"
    choices = [KernelChoice("fp32", fp32, "PyTorch SDPA (flash kernel)", why)]
    if features.native_bf16:
        attention = "blocked bf16 GEMMs" + (" (flash kernel from 128 queries: AMX)" if features.amx else "")
        choices.append(KernelChoice("bf16", packed.replace("oneDNN", "oneDNN bf16"), attention,
                                    "the CPU has bf16 dot products (" + ("AMX" if features.amx else "avx512_bf16")
                                    + ")"))  # fmt: skip
    else:
        choices.append(KernelChoice(
            "bf16", "bf16 weights, GEMMs computed in fp32 (F.linear), results rounded to bf16",
            "PyTorch SDPA",
            "no bf16 dot-product instructions (avx512_bf16 / AMX / Arm bf16): bf16 GEMMs would be emulated, "
            "several times slower than fp32; bf16 keeps half the memory at fp32 speed",
        ))  # fmt: skip
    choices.append(KernelChoice("fp16", "PyTorch F.linear in fp16", "PyTorch SDPA",
                                "CPU fp16 is for memory only; prefer bf16 or fp32 on CPU"))  # fmt: skip
    if not features.int8_supported:
        choices.append(KernelChoice(
            "int8", "refused", "-",
            f"oneDNN's int8 GEMMs need x86 with AVX2 (this is {features.machine}, ISA {features.onednn_isa}"
            f"{'' if onednn else ', PyTorch without oneDNN'}): use fp32 or bf16",
            available=False,
        ))  # fmt: skip
    else:
        rest = "bf16" if features.native_bf16 else "fp32"
        if features.int8_vnni:
            gemm, reason = "oneDNN u8 x s8 GEMMs, 8-bit weights", "VNNI/AMX sum the products in 32 bits"
        else:
            gemm = "oneDNN u8 x s8 GEMMs, 7-bit weights (|w| <= 63)"
            reason = ("no VNNI: u8 x s8 pairs are summed in saturating 16-bit lanes, which full-range 8-bit weights "
                      "overflow")  # fmt: skip
        attention = "as " + rest + (" (blocked bf16 GEMMs)" if features.native_bf16 else " (PyTorch SDPA)")
        choices.append(KernelChoice("int8", f"{gemm}; embeddings, LayerNorm, heads in {rest}", attention, reason))
    return choices


def environment_report() -> dict:
    """What a bug report needs: versions, CPU features, the kernel plan, CUDA devices (JSON-serialisable)."""
    import platform

    features = cpu_features()
    cuda = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            properties = torch.cuda.get_device_properties(index)
            cuda.append({"index": index, "name": properties.name, "memory_gib": round(properties.total_memory / 2**30, 1),
                         "capability": f"{properties.major}.{properties.minor}"})  # fmt: skip
    onednn_version = None
    if hasattr(torch.backends.mkldnn, "version") and torch.backends.mkldnn.is_available():
        onednn_version = str(torch.backends.mkldnn.version())
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onednn": onednn_version or _onednn_version_from_config(),
        "threads": torch.get_num_threads(),
        "cpu": features.as_dict(),
        "cpuid_masked_to": cpuid_masked_to(),
        "kernels": [asdict(choice) for choice in kernel_plan(features)],
        "cuda": cuda,
    }


def cpuid_masked_to() -> str | None:
    """The level tools/cpu_emulation/as_cpu.sh masks CPUID to in this process (None: the CPU as it is)."""
    import os

    level = os.environ.get("SIGLIP_CPUID_LEVEL")
    return level if level and "cpuid_mask" in os.environ.get("LD_PRELOAD", "") else None


def _onednn_version_from_config() -> str | None:
    """oneDNN's version from PyTorch's build summary (`MKL-DNN v3.x.y`)."""
    for line in torch.__config__.show().splitlines():
        if "MKL-DNN" in line or "oneDNN" in line:
            for word in line.split():
                if word.startswith("v") and word[1:2].isdigit():
                    return word[1:]
    return None
