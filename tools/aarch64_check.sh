#!/usr/bin/env bash
# aarch64 (Arm) check: siglip's fp32 and bf16 paths on an arm64 Debian, emulated on an x86 Linux host.
#
#   sudo tools/aarch64_check.sh        (or: make aarch64-check; needs root: apt-get, debootstrap, chroot, mount)
#
# Slow (everything arm64 runs under qemu's emulation: 12 min the first time on a 2-core host, 2.5 min after), so
# not part of `make test`; results in docs/aarch64.md. What it does, each step skipped when already done (state under .cache/, git-ignored):
#   1. installs Debian's qemu-user-static, binfmt-support and debootstrap if missing, and registers qemu-aarch64
#      with binfmt_misc (mounting /proc/sys/fs/binfmt_misc where it is not mounted);
#   2. debootstraps an arm64 Debian (bookworm, minbase + python3, python3-venv) into .cache/aarch64-root
#      (--foreign, then the second stage run inside it through qemu);
#   3. downloads, natively on the host, the arm64 wheels of torch==2.13.0 (PyPI's aarch64 wheel, the only one
#      PyPI has: note that since torch 2.9 it is a CUDA build, so its nvidia-* libraries come with it, ~2.8 GB;
#      they load without a GPU), of siglip's core dependencies (pyproject.toml) and of transformers (the parity
#      oracle) into .cache/aarch64-root/var/cache/siglip-wheels; then, inside the root, creates /opt/venv and
#      pip-installs them from there (--no-index), and installs siglip itself from a copy of this working tree;
#   4. on the host (.venv, with transformers): tools/aarch64_smoke.py reference writes tiny random SigLIP and
#      SigLIP2-NaFlex checkpoints, real-photo inputs, transformers' fp32 outputs and int8 checkpoints;
#   5. inside the root: tools/aarch64_smoke.py check: siglip fp32 == the reference (<= 1e-5, against
#      transformers on x86 and, where it installed, on aarch64), siglip's image processor == transformers',
#      bf16 embedding cosine > 0.999, `python -m siglip doctor --json` says aarch64, and int8 is refused with
#      siglip.InputError (quantize("int8"), from_pretrained(quantization="int8"), an int8 checkpoint).
# The last line is `aarch64 check: PASS ...` or `... FAIL ...`; the exit status is non-zero on failure.
#
# Environment: AARCH64_ROOT (default .cache/aarch64-root), AARCH64_SUITE (bookworm), AARCH64_MIRROR
# (http://deb.debian.org/debian), HOST_PYTHON (.venv/bin/python), AARCH64_REBUILD=1 (delete the root and start over),
# QEMU_CPU (the emulated CPU model, default neoverse-n1: Graviton2 / Ampere Altra class, Armv8.2 without SVE or bf16).
# Not qemu's default "max": with Debian 12's qemu 7.2 and its SVE models ("max", "a64fx"), torch 2.13's own
# oneDNN fp32 matmul gives wrong numbers on small shapes (a 1 x 48 x 48 F.linear off by ~7 against float64, with
# torch alone: transformers is as wrong as siglip), so that CPU model cannot check parity; the check's first step
# ("platform: torch fp32 GEMM") says when the platform itself is wrong. Under qemu-user /proc/cpuinfo is the
# host's, so `siglip doctor` shows the x86 host's model name and flags beside machine aarch64.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
ROOT=${AARCH64_ROOT:-$REPO/.cache/aarch64-root}
SUITE=${AARCH64_SUITE:-bookworm}
MIRROR=${AARCH64_MIRROR:-http://deb.debian.org/debian}
HOST_PYTHON=${HOST_PYTHON:-$REPO/.venv/bin/python}
TORCH_SPEC="torch==2.13.0"
WHEELS=/var/cache/siglip-wheels # inside the root
VENV=/opt/venv                  # inside the root
SRC=/opt/siglip-src             # inside the root: a copy of the working tree
REF=/opt/siglip-ref             # inside the root: the x86 reference
QEMU_CPU=${QEMU_CPU-neoverse-n1} # QEMU_CPU= (empty): qemu's default, "max"
if [ -n "$QEMU_CPU" ]; then export QEMU_CPU; else unset QEMU_CPU; fi
START=$(date +%s)

step() { echo "== [$(($(date +%s) - START)) s] $*"; }
fail() { echo "aarch64 check: FAIL ($*)"; exit 1; }

[ "$(id -u)" = 0 ] || fail "needs root (apt-get, debootstrap, chroot, mount)"
[ "$(uname -m)" = x86_64 ] || echo "note: host is $(uname -m), not x86_64"

# 1. host packages and binfmt ------------------------------------------------------------------------------------
if ! command -v qemu-aarch64-static >/dev/null || ! command -v debootstrap >/dev/null \
    || ! command -v update-binfmts >/dev/null; then
    step "installing qemu-user-static binfmt-support debootstrap"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user-static binfmt-support debootstrap
fi
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || fail "cannot mount binfmt_misc"
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    update-binfmts --enable qemu-aarch64 || fail "cannot register qemu-aarch64 with binfmt_misc"
fi

# 2. the arm64 root ----------------------------------------------------------------------------------------------
if [ "${AARCH64_REBUILD:-0}" = 1 ] && [ -d "$ROOT" ]; then
    step "AARCH64_REBUILD=1: removing $ROOT"
    for m in proc dev; do mountpoint -q "$ROOT/$m" && umount -l "$ROOT/$m"; done
    rm -rf "$ROOT"
fi
if [ ! -e "$ROOT/.stage2-done" ]; then
    if [ ! -e "$ROOT/debootstrap/debootstrap" ]; then
        step "debootstrap --foreign arm64 $SUITE into $ROOT"
        rm -rf "$ROOT"
        mkdir -p "$(dirname "$ROOT")"
        debootstrap --arch arm64 --foreign --variant=minbase --include=python3,python3-venv,ca-certificates \
            "$SUITE" "$ROOT" "$MIRROR"
    fi
    cp /usr/bin/qemu-aarch64-static "$ROOT/usr/bin/" # for a binfmt entry without the F flag
    step "debootstrap second stage (emulated)"
    chroot "$ROOT" /debootstrap/debootstrap --second-stage
    touch "$ROOT/.stage2-done"
fi

cleanup() {
    for m in proc dev; do mountpoint -q "$ROOT/$m" && umount -l "$ROOT/$m"; done
    return 0
}
trap cleanup EXIT
mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
mountpoint -q "$ROOT/dev" || mount --bind /dev "$ROOT/dev"
in_root() { chroot "$ROOT" /usr/bin/env -i HOME=/root PATH=/usr/bin:/bin LANG=C.UTF-8 \
    ${QEMU_CPU:+QEMU_CPU=$QEMU_CPU} "$@"; }
[ "$(in_root /usr/bin/uname -m)" = aarch64 ] || fail "the root does not run as aarch64"

# 3. wheels (downloaded natively) and the venv (installed inside) ------------------------------------------------
DEPS=$("$HOST_PYTHON" -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))")
TRANSFORMERS=$("$HOST_PYTHON" -c "import transformers; print(transformers.__version__)")
REQUIREMENTS="$TORCH_SPEC $DEPS transformers==$TRANSFORMERS setuptools>=77.0.3 wheel"
if [ "$(cat "$ROOT$WHEELS/.requirements" 2>/dev/null)" != "$REQUIREMENTS" ]; then
    step "downloading arm64 wheels: $REQUIREMENTS"
    mkdir -p "$ROOT$WHEELS"
    PLATFORMS=()
    for v in $(seq 17 36); do PLATFORMS+=(--platform "manylinux_2_${v}_aarch64"); done # bookworm: glibc 2.36
    # shellcheck disable=SC2086
    "$HOST_PYTHON" -m pip download -q --dest "$ROOT$WHEELS" --only-binary=:all: "${PLATFORMS[@]}" \
        --platform manylinux2014_aarch64 --platform linux_aarch64 --python-version 3.11 --implementation cp \
        --abi cp311 --abi abi3 --abi none $REQUIREMENTS 2> >(grep -v "is ignored: it is neither a file" >&2)
    echo "$REQUIREMENTS" >"$ROOT$WHEELS/.requirements"
fi
if [ "$(cat "$ROOT$VENV/.requirements" 2>/dev/null)" != "$REQUIREMENTS" ]; then
    step "creating $VENV and installing $TORCH_SPEC + siglip's dependencies (emulated pip)"
    rm -rf "$ROOT$VENV"
    in_root /usr/bin/python3 -m venv "$VENV"
    # shellcheck disable=SC2086
    in_root "$VENV/bin/pip" install -q --no-index --find-links "$WHEELS" $TORCH_SPEC $DEPS "setuptools>=77.0.3" wheel
    step "installing transformers==$TRANSFORMERS (the oracle; optional)"
    in_root "$VENV/bin/pip" install -q --no-index --find-links "$WHEELS" "transformers==$TRANSFORMERS" \
        || echo "transformers did not install: the check compares with the x86 reference only"
    echo "$REQUIREMENTS" >"$ROOT$VENV/.requirements"
fi

step "installing siglip from a copy of this working tree"
rm -rf "$ROOT$SRC"
mkdir -p "$ROOT$SRC"
git ls-files -z --cached --others --exclude-standard | tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C "$ROOT$SRC"
in_root "$VENV/bin/pip" install -q --no-index --find-links "$WHEELS" --no-build-isolation --no-deps \
    --force-reinstall "$SRC"
in_root "$VENV/bin/python" -c "import torch, siglip; print('torch', torch.__version__, '| cuda', torch.version.cuda, \
'| siglip', siglip.__version__, '| cpu capability', torch.backends.cpu.get_cpu_capability())"

# 4. the reference, on the host ----------------------------------------------------------------------------------
step "reference on the host ($(uname -m)): tools/aarch64_smoke.py reference"
rm -rf "$ROOT$REF"
"$HOST_PYTHON" tools/aarch64_smoke.py reference "$ROOT$REF" 2>&1 | grep -v -e "it/s\]" -e "torchvision (not installed)"

# 5. the check, inside the root ----------------------------------------------------------------------------------
step "check inside the arm64 root (emulated, QEMU_CPU=${QEMU_CPU:-max}): tools/aarch64_smoke.py check"
status=0
in_root "$VENV/bin/python" "$SRC/tools/aarch64_smoke.py" check "$REF" || status=$?
step "done (exit $status)"
exit "$status"
