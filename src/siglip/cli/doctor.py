"""`siglip doctor`: this machine as siglip sees it: CPU features, versions, the kernel each dtype takes and why,
CUDA devices, optional extras. `--json` prints the same as one JSON object, for bug reports."""

from __future__ import annotations

import argparse
import json
from typing import Any

# extra -> the modules it installs (as imported)
EXTRAS = {
    "parquet": ("pyarrow",),
    "ann": ("usearch",),
    "serve": ("starlette", "uvicorn", "pydantic"),
    "onnx": ("onnx", "onnxruntime"),
    "ray": ("ray",),
    "eval": ("matplotlib",),
}


def register(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "doctor",
        help="print this machine's CPU features and the kernel each dtype uses (for bug reports: --json)",
        description="CPU features (under ONEDNN_MAX_CPU_ISA / ATEN_CPU_CAPABILITY if set), torch and oneDNN "
        "versions, which kernel fp32 / bf16 / fp16 / int8 take here and why, CUDA devices, optional extras.",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.set_defaults(run=run)


def extras_installed() -> dict[str, dict[str, str | None]]:
    """extra -> {module: installed version or None}."""
    import importlib.metadata
    import importlib.util

    found: dict[str, dict[str, str | None]] = {}
    for extra, modules in EXTRAS.items():
        found[extra] = {}
        for module in modules:
            version = None
            if importlib.util.find_spec(module) is not None:
                try:
                    version = importlib.metadata.version(module)
                except importlib.metadata.PackageNotFoundError:
                    version = "installed"
            found[extra][module] = version
    return found


def run(args: argparse.Namespace) -> int:
    from .. import __version__
    from ..kernels.plan import environment_report

    report = {"siglip": __version__, **environment_report(), "extras": extras_installed()}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    cpu = report["cpu"]
    cap = f" (capped by ONEDNN_MAX_CPU_ISA={cpu['onednn_isa_cap']})" if cpu["onednn_isa_cap"] else ""
    lines = [
        f"siglip {report['siglip']}, torch {report['torch']}, oneDNN {report['onednn']}, "
        f"Python {report['python']}, {report['threads']} threads",
        f"CPU: {cpu['model']} ({cpu['machine']})",
        f"  flags: {' '.join(cpu['flags']) or '-'}",
        f"  oneDNN ISA: {cpu['onednn_isa']}{cap}; PyTorch kernels: {cpu['aten_capability']}",
        f"  int8 VNNI: {'yes' if cpu['int8_vnni'] else 'no'}, native bf16: {'yes' if cpu['native_bf16'] else 'no'}, "
        f"AMX: {'yes' if cpu['amx'] else 'no'}",
    ]
    if report["cpuid_masked_to"]:
        lines.append(f"  CPUID masked to {report['cpuid_masked_to']} (tools/cpu_emulation): the libraries see that CPU, "
                     "the flags above are the host's")  # fmt: skip
    lines.append("Kernels (CPU inference):")
    for choice in report["kernels"]:
        lines.append(f"  {choice['dtype']:<5} {choice['gemm']}")
        lines.append(f"        attention: {choice['attention']}")
        lines.append(f"        why: {choice['reason']}")
    if report["cuda"]:
        lines += [
            f"CUDA {d['index']}: {d['name']}, {d['memory_gib']} GiB, sm {d['capability']}" for d in report["cuda"]
        ]
    else:
        lines.append("CUDA: no device")
    extras = []
    for extra, modules in report["extras"].items():
        missing = [m for m, version in modules.items() if version is None]
        extras.append(f"{extra} {'yes' if not missing else 'no (pip install siglip[' + extra + '])'}")
    lines.append("Extras: " + ", ".join(extras))
    print("\n".join(lines))
    return 0
