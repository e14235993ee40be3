"""The ISA matrix: tests/test_kernels.py again under every instruction set below this CPU's own.

oneDNN takes a cap (ONEDNN_MAX_CPU_ISA) and PyTorch's vectorised kernels another (ATEN_CPU_CAPABILITY), both read
once per process: each level runs in a subprocess, so a developer on an AMX or AVX-512 machine sees what a user of
an AVX2-only CPU (AMD Zen 2/3, pre-Ice-Lake Xeons, Intel client CPUs) sees. Levels the CPU does not reach skip
with the reason; the CPU's own level is the main run of test_kernels.py. `SIGLIP_ISA_LEVELS=AVX2,AVX512_CORE`
narrows the matrix (for a quick local run).

Where the host allows it (x86 Linux with CPUID faulting, the `cpuid_fault` flag, and a C compiler), each level
also runs with tools/cpu_emulation's CPUID mask preloaded: every library then reads the lesser CPU from CPUID
itself (PyTorch's cpuinfo, MKL, FBGEMM, oneDNN's own checks), which the environment caps alone do not reach (a
PyTorch bf16 check that reads AVX-512 from CPUID passes under ONEDNN_MAX_CPU_ISA=AVX2 and fails on a real AVX2
CPU). The summary line says which way each level ran.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ISA_MATRIX

from siglip.kernels.cpu import cpu_features

TESTS = Path(__file__).resolve().parent
FEATURES = cpu_features()
# (oneDNN cap, PyTorch kernel level): each row differs in what the kernels choose (VNNI, native bf16, AVX-512).
LEVELS = (
    ("AVX2", "avx2"),  # no VNNI, no bf16: 7-bit int8 weights, bf16 computed in fp32
    ("AVX2_VNNI", "avx2"),  # AVX-VNNI (Alder Lake and later clients): 8-bit weights, no bf16
    ("AVX512_CORE", None),  # AVX-512 without VNNI (Skylake-SP): 7-bit weights
    ("AVX512_CORE_VNNI", None),  # Cascade Lake, Zen 4 without its bf16
    ("AVX512_CORE_BF16", None),  # native bf16 without AMX (Zen 4, Cooper Lake)
)
SELECTED = [name.strip() for name in os.environ.get("SIGLIP_ISA_LEVELS", "").split(",") if name.strip()]


def _reason_to_skip(level: str) -> str | None:
    if not FEATURES.is_x86 or not FEATURES.onednn_available:
        return f"no oneDNN x86 ISA levels on {FEATURES.machine}"
    if SELECTED and level not in SELECTED:
        return f"not in SIGLIP_ISA_LEVELS={','.join(SELECTED)}"
    if level == FEATURES.onednn_isa:
        return f"{level} is this CPU's own level: the main run of test_kernels.py covers it"
    if not FEATURES.level_at_least(level) and not (level == "AVX2_VNNI" and "avx_vnni" in FEATURES.flags):
        return f"this CPU ({FEATURES.onednn_isa}) does not reach {level}"
    if level == "AVX2_VNNI" and "avx_vnni" not in FEATURES.flags:
        return "this CPU has no AVX-VNNI"
    return None


@pytest.mark.parametrize("level,aten", LEVELS, ids=[level for level, _ in LEVELS])
def test_kernels_at_isa_level(level, aten):
    reason = _reason_to_skip(level)
    if reason:
        pytest.skip(reason)
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": level, "MKL_ENABLE_INSTRUCTIONS": "AVX2" if aten else "AVX512"}
    env.pop("ATEN_CPU_CAPABILITY", None)
    if aten:
        env["ATEN_CPU_CAPABILITY"] = aten
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", str(TESTS / "test_kernels.py")]
    mask = cpuid_mask_library()
    if mask is not None:
        env["LD_PRELOAD"] = ":".join(filter(None, [str(mask), env.get("LD_PRELOAD")]))
        env["SIGLIP_CPUID_LEVEL"] = level
    run = subprocess.run(command, cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=900)
    summary = run.stdout.strip().splitlines()[-1:] or ["(no output)"]
    how = "CPUID masked" if mask is not None else "caps only"
    ISA_MATRIX.append(f"{level:<17} ATEN {aten or 'default':<8} {how:<13} {summary[0]}")
    assert run.returncode == 0, (
        f"test_kernels.py under ONEDNN_MAX_CPU_ISA={level}:\n{run.stdout[-6000:]}{run.stderr[-2000:]}"
    )


AS_CPU = TESTS.parent / "tools" / "cpu_emulation" / "as_cpu.sh"
MASK_LIBRARY = TESTS.parent / ".cache" / "cpu_emulation" / "cpuid_mask.so"  # where as_cpu.sh builds it


@functools.lru_cache(maxsize=1)
def cpuid_mask_library() -> Path | None:
    """tools/cpu_emulation's CPUID mask, built by as_cpu.sh and tried once here; None where the host cannot run
    it (not x86 Linux, no CPUID faulting or a kernel that refuses it, no C compiler), and the matrix then runs on
    the environment caps alone."""
    if not FEATURES.is_x86 or sys.platform != "linux" or shutil.which("bash") is None:
        return None
    run = subprocess.run(["bash", str(AS_CPU), "AVX2", sys.executable, "-c", "pass"], capture_output=True, timeout=300)
    return MASK_LIBRARY if run.returncode == 0 and MASK_LIBRARY.exists() else None


def test_cpuid_mask_shows_the_lesser_cpu_to_pytorch_and_onednn():
    """The mask itself: a process under it at AVX2 reads no AVX-512 from CPUID (PyTorch's cpuinfo probes) and
    oneDNN reports AVX2 as its ISA without being told."""
    mask = cpuid_mask_library()
    if mask is None:
        pytest.skip("CPUID masking needs x86 Linux with the cpuid_fault flag and a C compiler")
    if not FEATURES.level_at_least("AVX512_CORE") and "avx512f" not in FEATURES.flags:
        pytest.skip("this CPU has no AVX-512 to hide")
    probe = (
        "import torch\n"
        "print(torch.cpu._is_avx2_supported(), torch.cpu._is_avx512_supported(), torch.cpu._is_vnni_supported())\n"
        "torch.nn.functional.linear(torch.randn(64, 64), torch.randn(64, 64))\n"
        "with torch.inference_mode():\n"
        "    torch.ops.mkldnn._linear_pointwise(torch.randn(8, 64), torch.randn(32, 64), None, 'none', [], '')\n"
    )
    env = {key: value for key, value in os.environ.items() if not key.endswith(("_MAX_CPU_ISA", "_CAPABILITY"))}
    env.update(LD_PRELOAD=str(mask), SIGLIP_CPUID_LEVEL="AVX2", ONEDNN_VERBOSE="1")
    run = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.splitlines()[0] == "True False False", run.stdout[:2000]
    isa = [line for line in run.stdout.splitlines() if ",info,cpu,isa:" in line]
    assert isa and isa[0].rstrip().endswith("Intel AVX2"), run.stdout[:2000]
    # siglip doctor under it: PyTorch's kernels read AVX2 from CPUID (no ATEN_CPU_CAPABILITY set), and it says so
    env.pop("ONEDNN_VERBOSE")
    doctor = subprocess.run([sys.executable, "-m", "siglip", "doctor", "--json"], env={**env, "ONEDNN_MAX_CPU_ISA": "AVX2"},
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert doctor.returncode == 0, doctor.stderr[-3000:]
    report = json.loads(doctor.stdout)
    assert report["cpuid_masked_to"] == "AVX2"
    assert (report["cpu"]["onednn_isa"], report["cpu"]["aten_capability"]) == ("AVX2", "AVX2")
