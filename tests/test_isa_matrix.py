"""The ISA matrix: tests/test_kernels.py again under every instruction set below this CPU's own.

oneDNN takes a cap (ONEDNN_MAX_CPU_ISA) and PyTorch's vectorised kernels another (ATEN_CPU_CAPABILITY), both read
once per process: each level runs in a subprocess, so a developer on an AMX or AVX-512 machine sees what a user of
an AVX2-only CPU (AMD Zen 2/3, pre-Ice-Lake Xeons, Intel client CPUs) sees. Levels the CPU does not reach skip
with the reason; the CPU's own level is the main run of test_kernels.py. `SIGLIP_ISA_LEVELS=AVX2,AVX512_CORE`
narrows the matrix (for a quick local run).
"""

from __future__ import annotations

import os
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
    run = subprocess.run(command, cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=900)
    summary = run.stdout.strip().splitlines()[-1:] or ["(no output)"]
    ISA_MATRIX.append(f"{level:<17} ATEN {aten or 'default':<8} {summary[0]}")
    assert run.returncode == 0, (
        f"test_kernels.py under ONEDNN_MAX_CPU_ISA={level}:\n{run.stdout[-6000:]}{run.stderr[-2000:]}"
    )
