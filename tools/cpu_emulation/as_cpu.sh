#!/usr/bin/env bash
# Run a command as it would run on a lesser x86 CPU: every library that reads the CPU by CPUID (PyTorch, oneDNN,
# MKL, FBGEMM, ONNX Runtime, OpenVINO) sees only the instruction sets of LEVEL and takes the paths that CPU takes.
#
#   tools/cpu_emulation/as_cpu.sh LEVEL COMMAND [ARGS...]
#   tools/cpu_emulation/as_cpu.sh AVX2 .venv/bin/python benchmarks/bench_cpu_runtimes.py --towers vision --batch 16
#
# LEVEL: AVX2 (AMD Zen 2/3, Intel up to Comet Lake), AVX2_VNNI (Alder Lake client), AVX512_CORE (Skylake-X),
# AVX512_CORE_VNNI (Cascade Lake, Ice Lake), AVX512_CORE_BF16 (Cooper Lake, AMD Zen 4), none.
# Unlike the libraries' own caps (ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS, FBGEMM_ENABLE_INSTRUCTIONS,
# ATEN_CPU_CAPABILITY), this also reaches ONNX Runtime's MLAS and OpenVINO, which have no such switch.
#
# How: cpuid_mask.c, compiled here on first use into .cache/cpu_emulation (needs a C compiler: Debian's gcc),
# is preloaded; Linux's CPUID faulting makes each CPUID of the process trap into it (x86 Linux with the
# `cpuid_fault` CPU flag, as KVM guests and most Intel hosts have). It sets ONEDNN_MAX_CPU_ISA=LEVEL as well,
# for siglip's own reading of the CPU (kernels/cpu.py reads /proc/cpuinfo, which still lists the host's flags).
# Caches, cores and clock stay the host's: timings show the instruction sets' effect, not another chip's.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
if [ $# -lt 2 ]; then
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
level="$1"
shift
case "$level" in
    AVX2 | AVX2_VNNI | AVX512_CORE | AVX512_CORE_VNNI | AVX512_CORE_BF16 | none) ;;
    *) echo "as_cpu.sh: unknown LEVEL $level (AVX2, AVX2_VNNI, AVX512_CORE, AVX512_CORE_VNNI, AVX512_CORE_BF16, none)" >&2; exit 2 ;;
esac
if [ "$level" = none ]; then
    exec "$@"
fi
if [ "$(uname -m)" != x86_64 ] || ! grep -qw cpuid_fault /proc/cpuinfo; then
    echo "as_cpu.sh: needs x86_64 Linux with CPUID faulting (the cpuid_fault flag in /proc/cpuinfo); this host has none" >&2
    exit 3
fi
library="$root/.cache/cpu_emulation/cpuid_mask.so"
if [ ! -f "$library" ] || [ "$here/cpuid_mask.c" -nt "$library" ]; then
    mkdir -p "$(dirname "$library")"
    "${CC:-cc}" -O2 -Wall -shared -fPIC -o "$library" "$here/cpuid_mask.c" -ldl
fi
export SIGLIP_CPUID_LEVEL="$level"
export ONEDNN_MAX_CPU_ISA="$level"
export LD_PRELOAD="$library${LD_PRELOAD:+:$LD_PRELOAD}"
exec "$@"
