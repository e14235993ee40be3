#!/usr/bin/env bash
# The GPU check, one command on a fresh CUDA machine, from the repository root (under 8 minutes on one GPU):
#   bash benchmarks/gpu_check.sh [OUT_DIR]
# 1. Uses the machine's own CUDA PyTorch (PYTHON, default python3; never installs a torch). Installs siglip
#    and the test oracle (transformers, pytest, sentencepiece, protobuf) with pip when the machine can reach
#    an index, from wheels in .whl/ when it cannot, and otherwise runs from src/ with what is installed.
# 2. Runs the CUDA tests (tests/test_cuda.py): parity with transformers in fp32/bf16/fp16 for sdpa, eager and
#    flash_attention_2 (when flash-attn is installed), with padding masks, SigLIP and SigLIP2 NaFlex; device /
#    device_map loading; compiled; loss and backward; the pipeline and `siglip embed` on CUDA; no oneDNN packing.
# 3. Writes the throughput table of benchmarks/bench_gpu.py (towers, NaFlex, pipeline, loss vs transformers
#    eager / sdpa / compiled) to OUT_DIR/gpu_check.md (default benchmarks/results_gpu.md), and the test log beside it.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT_DIR=${1:-${OUT:-benchmarks}}
mkdir -p "$OUT_DIR"
RESULTS="$OUT_DIR/$( [ "$OUT_DIR" = benchmarks ] && echo results_gpu.md || echo gpu_check.md )"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

"$PYTHON" - <<'EOF' || { echo "gpu_check: no CUDA GPU visible to $PYTHON's torch" >&2; exit 1; }
import torch
assert torch.cuda.is_available()
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}")
EOF

# Keep the machine's torch: a constraint stops pip from replacing it with another build.
TORCH_PIN=$(mktemp)
"$PYTHON" -c 'import torch; print("torch==" + torch.__version__)' > "$TORCH_PIN"
if [ -d .whl ]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --target /tmp/siglip-site .whl/*.whl \
        && export PYTHONPATH="/tmp/siglip-site${PYTHONPATH:+:$PYTHONPATH}"
elif timeout 60 "$PYTHON" -m pip install -q -c "$TORCH_PIN" -e . "transformers>=5.0,<6" pytest sentencepiece protobuf 2>/dev/null; then
    echo "gpu_check: installed siglip and the test oracle with pip"
else
    echo "gpu_check: no package index reachable; running from src/ with the installed packages"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -c 'import siglip, transformers; print("siglip from", siglip.__file__, "| transformers", transformers.__version__)' || exit 1

status=0
timeout 200 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT_DIR/gpu_tests.log" || status=1
timeout 280 "$PYTHON" benchmarks/bench_gpu.py --out "$RESULTS" || status=1
echo "gpu_check: tests log in $OUT_DIR/gpu_tests.log, table in $RESULTS (exit $status)"
exit $status
