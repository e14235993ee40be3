"""Headline rows shared by the benchmark scripts, collated by `run_all.py` into one table.

A script calls `record(...)` for each headline figure it measured; when `SIGLIP_BENCH_ROWS` names a file (as
`run_all.py` sets it), the row is appended there as one JSON line, otherwise nothing happens. Rows carry
what the table prints: the figure, ours, the reference, their ratio (higher is better for siglip) and, where
the script measured it in the same run, the share of the GEMM peak.
"""

from __future__ import annotations

import json
import os
import platform

import torch

ROWS_ENV = "SIGLIP_BENCH_ROWS"


def machine() -> str:
    """One line naming the CPU, the threads and the torch build the figures come from."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    from siglip.kernels.cpu import cpu_features
    from siglip.kernels.plan import cpuid_masked_to

    features = cpu_features()
    cap = f" capped by ONEDNN_MAX_CPU_ISA={features.onednn_isa_cap}" if features.onednn_isa_cap else ""
    isa = f"oneDNN ISA {features.onednn_isa}{cap}, PyTorch kernels {features.aten_capability}"
    emulated = cpuid_masked_to()
    if emulated:
        isa = f"CPUID masked to {emulated} for every library (tools/cpu_emulation/as_cpu.sh): " + isa
    # the other libraries' own caps (MKL's GEMMs, FBGEMM's for torch's quantize_dynamic), as set
    for variable in ("MKL_ENABLE_INSTRUCTIONS", "FBGEMM_ENABLE_INSTRUCTIONS"):
        if os.environ.get(variable):
            isa += f", {variable}={os.environ[variable]}"
    return f"{cpu} ({isa}), {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def record(
    figure: str,
    ours: float,
    reference: float,
    unit: str,
    *,
    target: str = "",
    peak_percent: float | None = None,
    note: str = "",
) -> None:
    """Append one headline row (`ours` and `reference` in `unit`, higher is better) for `run_all.py`."""
    path = os.environ.get(ROWS_ENV)
    if not path:
        return
    row = {
        "figure": figure,
        "ours": ours,
        "reference": reference,
        "unit": unit,
        "ratio": ours / reference if reference else None,
        "target": target,
        "peak_percent": peak_percent,
        "note": note,
    }
    with open(path, "a") as rows:
        rows.write(json.dumps(row) + "\n")
