"""What this CPU can do, as the kernels will see it: the one place that decides which path each dtype takes.

Three libraries run the CPU math, and each reads the hardware its own way:
- oneDNN (packed fp32 / bf16 GEMMs, the int8 GEMMs) runs the best instruction set the CPU has, capped by the
  `ONEDNN_MAX_CPU_ISA` environment variable (read once, when it first runs);
- PyTorch's own vectorised kernels (softmax, LayerNorm, quantisation) pick by `ATEN_CPU_CAPABILITY`;
- PyTorch's flash attention uses AMX tiles where the CPU has them.
`cpu_features()` combines the CPU's flags with those caps, so that a developer on an AMX machine who sets
`ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2` gets the paths an AVX2-only user gets. Every choice below is
made from these features, never by trying a kernel and catching its error.

The choices that depend on the CPU (`siglip doctor` prints them):
- int8 weights: oneDNN's u8 x s8 GEMM without VNNI (AVX2, AVX-512 without VNNI) adds pairs of u8 x s8 products
  in saturating 16-bit lanes (`vpmaddubsw`): 2 x 255 x 127 overflows 32767 and the result is silently wrong.
  There the weights use 7 bits (|w| <= 63: 2 x 255 x 63 = 32130 fits), as ONNX Runtime's and FBGEMM's
  "reduce range" do; with VNNI or AMX (32-bit accumulation) the full 8 bits.
- bf16: native where the CPU has bf16 dot products (avx512_bf16, AMX-BF16, Arm's bf16); elsewhere oneDNN and
  PyTorch emulate bf16 GEMMs several times slower than fp32, so bf16 weights are computed in fp32 there.
- int8 GEMMs write bf16 (or add a bf16 residual) only with native bf16; elsewhere they write fp32.
- fp32 GELU: inside oneDNN's GEMM from AVX-512 up; below it (AVX2) oneDNN's GELU post-op costs more than a
  GELU run over the GEMM's output after it, block by block in cache (gelu.py; `fused_fp32_gelu`).
- attention: blocked bf16 GEMMs only with native bf16; PyTorch's flash kernel for long sequences with AMX.
- int8 at all: x86 with oneDNN and at least AVX2; elsewhere (aarch64, old x86) `quantize("int8")` is refused.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import asdict, dataclass

import torch

# oneDNN's x86 ISA levels, lowest first, with the CPU flags (as /proc/cpuinfo names them) each adds.
ONEDNN_ISA_LEVELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("SSE41", ("sse4_1",)),
    ("AVX", ("avx",)),
    ("AVX2", ("avx2", "fma")),
    ("AVX2_VNNI", ("avx_vnni",)),
    ("AVX2_VNNI_2", ("avx_vnni_int8", "avx_ne_convert")),
    ("AVX512_CORE", ("avx512f", "avx512bw", "avx512vl", "avx512dq")),
    ("AVX512_CORE_VNNI", ("avx512_vnni",)),
    ("AVX512_CORE_BF16", ("avx512_bf16",)),
    ("AVX512_CORE_FP16", ("avx512_fp16",)),
    ("AVX512_CORE_AMX", ("amx_tile", "amx_int8", "amx_bf16")),
    ("AVX512_CORE_AMX_FP16", ("amx_fp16",)),
)
_LEVEL_NAMES = [name for name, _ in ONEDNN_ISA_LEVELS]
# Other spellings oneDNN accepts for the same caps.
_ISA_ALIASES = {"AVX10_1_512": "AVX512_CORE_FP16", "AVX10_1_512_AMX": "AVX512_CORE_AMX",
                "AVX10_1_512_AMX_FP16": "AVX512_CORE_AMX_FP16", "ALL": None, "DEFAULT": None, "": None}  # fmt: skip
_AVX2_FAMILY = ("AVX2_VNNI", "AVX2_VNNI_2")  # oneDNN's AVX-512 levels do not include the AVX-VNNI (VEX) extension

INT8_WEIGHT_MAX_VNNI = 127  # symmetric int8 weights, -127..127
INT8_WEIGHT_MAX_REDUCED = 63  # 7-bit weights: 2 x 255 x 63 = 32130 fits the 16-bit lanes of vpmaddubsw


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU as the kernels see it (hardware flags capped by the environment)."""

    machine: str  # platform.machine(): x86_64, aarch64, arm64, ...
    model: str  # the CPU's model name, where the OS tells it
    flags: tuple[str, ...]  # the relevant hardware flags, before any cap
    onednn_available: bool  # PyTorch built with oneDNN (mkldnn)
    onednn_isa: str  # the oneDNN ISA level in effect (the best the CPU has, under ONEDNN_MAX_CPU_ISA)
    onednn_isa_cap: str | None  # ONEDNN_MAX_CPU_ISA (or DNNL_MAX_CPU_ISA) as set, None when unset
    aten_capability: str  # PyTorch's vectorised kernels: torch.backends.cpu.get_cpu_capability()
    int8_vnni: bool  # u8 x s8 products summed in 32 bits (VNNI, AVX-VNNI or AMX): full 8-bit weights
    native_bf16: bool  # bf16 dot products in hardware (avx512_bf16, AMX-BF16, Arm bf16)
    amx: bool  # AMX tiles usable (int8 and bf16)

    @property
    def int8_supported(self) -> bool:
        """oneDNN's x86 int8 GEMMs can run here (x86 with oneDNN, AVX2 or better)."""
        return self.is_x86 and self.onednn_available and self.level_at_least("AVX2")

    @property
    def is_x86(self) -> bool:
        return self.machine.lower() in ("x86_64", "amd64", "i686", "i386", "x86")

    @property
    def int8_weight_max(self) -> int:
        """The largest |int8 weight| the int8 GEMM sums without overflow on this CPU (see the module docstring)."""
        return INT8_WEIGHT_MAX_VNNI if self.int8_vnni else INT8_WEIGHT_MAX_REDUCED

    @property
    def bf16_gemm_dtype(self) -> torch.dtype:
        """The dtype bf16 weights are multiplied in: bf16 where the CPU has bf16 dot products, else fp32."""
        return torch.bfloat16 if self.native_bf16 else torch.float32

    @property
    def fused_fp32_gelu(self) -> bool:
        """Whether fp32 GEMMs apply GELU inside oneDNN (a post-op) rather than a GELU pass after them (gelu.py).

        Below AVX-512 oneDNN's fp32 GEMMs compute the post-op slowly: fc1 of a base tower (768 -> 3072) over
        1024-2048 rows took 28.4-56.8 ms with the post-op and 25.1-51.9 ms with PyTorch's GELU after it (AVX2:
        the Xeon with CPUID masked, tools/cpu_emulation), while with AVX-512 the post-op won (15.0 against 17.0 ms
        at 1024 rows). gelu.py's blocked pass made the AVX2 side faster still (one layer's MLP 56.4 -> 53.6 ms), and
        lost to the post-op on AVX-512 (37.1 against 36.3 ms). oneDNN's int8 GEMMs keep theirs on every CPU: on
        AVX2 the post-op cost 2.4 ms over fc1's 14.2, the GEMM then gelu.py's pass 3.8 ms."""
        return self.level_at_least("AVX512_CORE")

    def level_at_least(self, level: str) -> bool:
        if self.onednn_isa not in _LEVEL_NAMES:
            return False
        return _LEVEL_NAMES.index(self.onednn_isa) >= _LEVEL_NAMES.index(level)

    def as_dict(self) -> dict:
        return {**asdict(self), "int8_supported": self.int8_supported, "int8_weight_max": self.int8_weight_max,
                "bf16_gemm_dtype": str(self.bf16_gemm_dtype).replace("torch.", ""),
                "fused_fp32_gelu": self.fused_fp32_gelu}  # fmt: skip


def _cpuinfo() -> tuple[str, set[str]]:
    """(model name, flags) from /proc/cpuinfo; PyTorch's own probes where that file does not exist."""
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as file:
            for line in file:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware", "cpu model") and not model:
                    model = value.strip()
                elif key in ("flags", "features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    if not flags:  # macOS, Windows: PyTorch's cpuinfo probes cover what the x86 choices need
        probes = {"avx2": "_is_avx2_supported", "avx512f": "_is_avx512_supported", "avx512_vnni": "_is_vnni_supported",
                  "avx512_bf16": "_is_avx512_bf16_supported", "amx_tile": "_is_amx_tile_supported"}  # fmt: skip
        for flag, probe in probes.items():
            if getattr(torch.cpu, probe, lambda: False)():
                flags.add(flag)
        if "avx2" in flags:
            flags.update({"sse4_1", "avx", "fma"})
        if "avx512f" in flags:
            flags.update({"avx512bw", "avx512vl", "avx512dq"})
        if "amx_tile" in flags:
            flags.update({"amx_int8", "amx_bf16"})
    return model or platform.processor() or "unknown", flags


def _isa_cap() -> tuple[str | None, str | None]:
    """(the cap as set, the level it names) from ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA."""
    raw = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA"))
    if raw is None:
        return None, None
    name = raw.strip().upper()
    if name in _ISA_ALIASES:
        return raw, _ISA_ALIASES[name]
    return raw, name if name in _LEVEL_NAMES else None


def effective_isa(flags: set[str], cap: str | None) -> str:
    """The best oneDNN ISA level whose flags the CPU has, not above `cap` (oneDNN's own rule: an AVX-512 cap
    excludes the AVX2-VNNI levels)."""
    best = "none"
    for name, needed in ONEDNN_ISA_LEVELS:
        if not all(flag in flags for flag in needed):
            if name in _AVX2_FAMILY:
                continue  # AVX-512 levels do not build on AVX-VNNI
            break
        best = name
        if name == cap:
            break
    if cap is not None and cap not in _AVX2_FAMILY and best in _AVX2_FAMILY and cap in _LEVEL_NAMES:
        best = "AVX2" if _LEVEL_NAMES.index(cap) >= _LEVEL_NAMES.index("AVX512_CORE") else best
    return best


@functools.lru_cache(maxsize=1)
def cpu_features() -> CpuFeatures:
    """This process's CPU features (computed once: oneDNN reads its cap once too)."""
    model, flags = _cpuinfo()
    machine = platform.machine() or "unknown"
    cap_raw, cap = _isa_cap()
    is_x86 = machine.lower() in ("x86_64", "amd64", "i686", "i386", "x86")
    isa = effective_isa(flags, cap) if is_x86 else machine.lower()
    avx512_level = isa in _LEVEL_NAMES and _LEVEL_NAMES.index(isa) >= _LEVEL_NAMES.index("AVX512_CORE")

    def at_least(level: str) -> bool:
        return isa in _LEVEL_NAMES and _LEVEL_NAMES.index(isa) >= _LEVEL_NAMES.index(level)

    vnni = (isa in _AVX2_FAMILY) or (avx512_level and at_least("AVX512_CORE_VNNI"))
    if is_x86:
        native_bf16 = at_least("AVX512_CORE_BF16")
    else:  # Arm: bf16 dot products (BFDOT / BFMMLA) where the kernel lists them
        native_bf16 = "bf16" in flags
    return CpuFeatures(
        machine=machine,
        model=model,
        flags=tuple(sorted(f for f in flags if _relevant(f))),
        onednn_available=torch.backends.mkldnn.is_available(),
        onednn_isa=isa,
        onednn_isa_cap=cap_raw,
        aten_capability=str(torch.backends.cpu.get_cpu_capability()),
        int8_vnni=bool(is_x86 and vnni),
        native_bf16=native_bf16,
        amx=bool(is_x86 and at_least("AVX512_CORE_AMX")),
    )


def _relevant(flag: str) -> bool:
    return flag in ("sse4_1", "avx", "avx2", "fma", "f16c", "bf16", "asimd", "asimddp", "sve", "sve2", "i8mm") or (
        flag.startswith(("avx512", "avx_", "amx"))
    )
