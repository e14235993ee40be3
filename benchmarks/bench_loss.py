"""Sigmoid loss forward+backward: plain vs blockwise (siglip.loss) vs open_clip's chunked SigLipLoss, time and memory.

    python benchmarks/bench_loss.py [--sizes 4096 8192 16384] [--blocks 1024 2048] [--threads 1] [--repeats 2]
                                    [--open-clip-git-dir /work/.mirror/mlfoundations+open_clip/repo] [--out results.md]

Method. Every (implementation, B) case runs in its own fresh Python process, so that its memory high-water mark is
its own: the child builds the fp32 (B, 768) normalised embeddings and the scale/bias leaves, runs the same
implementation once at B=256 (thread pools, allocator, lazy init), reads its resident set size (RSS, from
/proc/self/statm) as the baseline, resets the kernel's RSS high-water mark (`echo 5 > /proc/self/clear_refs`, so
that building the inputs does not count), then runs forward+backward at full size once. "Peak extra" is the new
high-water mark (VmHWM in /proc/self/status; getrusage's ru_maxrss where the reset is not allowed) minus that
baseline: everything the loss and its backward held at the worst moment, including the (B, 768) gradients of both embeddings (2*B*768*4 bytes, unavoidable for any implementation;
reported separately) and whatever glibc keeps cached (so it is an upper bound). torch's CPU allocator has no
statistics and tracemalloc cannot see it, hence RSS. Wall time is the best of `--repeats` further forward+backward
runs (grads reset to None each time). The loss values of all implementations are printed so their agreement
is visible.

open_clip's loss.py is read from a local git mirror at run time into a temporary folder and loaded with importlib;
none of its code is part of this repository. Its `SigLipLoss(chunk_size=N)` chunks image rows (N x B logits per
chunk) but does not checkpoint them, so autograd still keeps every chunk's logits for backward.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from summary import record

DIM = 768
OPEN_CLIP_MIRROR = "/work/.mirror/mlfoundations+open_clip/repo"


def make_inputs(batch: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, DIM, generator=generator)
    text = image + torch.randn(batch, DIM, generator=generator)
    leaves = [F.normalize(x, dim=-1).requires_grad_() for x in (image, text)]
    return [*leaves, torch.tensor([math.log(10.0)], requires_grad=True), torch.tensor([-10.0], requires_grad=True)]


def make_loss(impl: str, block: int | None, open_clip_loss: str | None):
    """A callable (image, text, logit_scale, logit_bias) -> loss for one implementation."""
    if impl == "open_clip":
        spec = importlib.util.spec_from_file_location("open_clip_loss", open_clip_loss)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        criterion = module.SigLipLoss(chunk_size=block or 0)
        return lambda image, text, scale, bias: criterion(image, text, scale.exp(), bias)
    from siglip.loss import sigmoid_loss

    return lambda image, text, scale, bias: sigmoid_loss(image, text, scale, bias, block_size=block)


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> bool:
    """Reset the kernel's per-process RSS high-water mark (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes(was_reset: bool) -> int:
    if was_reset:
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def fwd_bwd(loss_fn, inputs: list[torch.Tensor]) -> tuple[float, float]:
    for x in inputs:
        x.grad = None
    start = time.perf_counter()
    loss = loss_fn(*inputs)
    loss.backward()
    return time.perf_counter() - start, loss.item()


def run_case(impl: str, batch: int, block: int | None, repeats: int, open_clip_loss: str | None) -> dict:
    """Child process: one implementation at one batch size; prints a JSON line."""
    loss_fn = make_loss(impl, block, open_clip_loss)
    fwd_bwd(loss_fn, make_inputs(256, seed=1))  # warm-up at a small size
    inputs = make_inputs(batch)
    gc.collect()
    baseline = rss_bytes()
    was_reset = reset_peak_rss()
    first, loss = fwd_bwd(loss_fn, inputs)
    peak = peak_rss_bytes(was_reset) - baseline
    times = [fwd_bwd(loss_fn, inputs)[0] for _ in range(repeats)] or [first]
    return dict(impl=impl, batch=batch, block=block, time=min(times), times=times, peak=peak, loss=loss)


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    try:
        flags = next(line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags"))
        cpu += " (" + ", ".join(f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in flags) + ")"
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} available threads; "
        f"load average at start {load} (the machine is shared with other jobs)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192, 16384])
    parser.add_argument("--blocks", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--open-clip-chunk", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per case (1: stable on a busy box)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--open-clip-git-dir", default=OPEN_CLIP_MIRROR)
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # child mode: impl:batch:block:open_clip_loss_path
    parser.add_argument("--quick", action="store_true", help="B=2048, one block size, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.blocks, args.repeats = [2048], [512], 1
    torch.set_num_threads(args.threads)
    if args.case:
        impl, batch, block, path = args.case.split(":", 3)
        block_size = int(block) if block != "none" else None
        print(json.dumps(run_case(impl, int(batch), block_size, args.repeats, path or None)))
        return

    cases = [("plain", None)] + [("blockwise", block) for block in args.blocks] + [("open_clip", args.open_clip_chunk)]
    description = machine()
    print(description, flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        open_clip_loss = Path(tmp) / "open_clip_loss.py"
        shown = subprocess.run(
            ["git", f"--git-dir={args.open_clip_git_dir}", "show", "HEAD:src/open_clip/loss.py"],
            capture_output=True,
            text=True,
        )
        if shown.returncode == 0:
            open_clip_loss.write_text(shown.stdout)
        else:
            print(f"open_clip not found at {args.open_clip_git_dir}; skipping it", flush=True)
            cases = [case for case in cases if case[0] != "open_clip"]
        for batch in args.sizes:
            for impl, block in cases:
                case = f"{impl}:{batch}:{block or 'none'}:{open_clip_loss if impl == 'open_clip' else ''}"
                command = [sys.executable, __file__, "--case", case, "--threads", str(args.threads)]
                done = subprocess.run(command + ["--repeats", str(args.repeats)], capture_output=True, text=True)
                if done.returncode != 0:
                    print(f"{impl} B={batch} failed:\n{done.stderr[-2000:]}", flush=True)
                    continue
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(format_row(rows[-1], rows), flush=True)
    record_headlines(rows)
    table = markdown(rows, description, args)
    print(table)
    if args.out:
        args.out.write_text(table)


def record_headlines(rows: list[dict]) -> None:
    """For run_all: each blockwise case against plain (or open_clip where plain is absent), in pairs/s."""
    for row in rows:
        if row["impl"] != "blockwise":
            continue
        same = {r["impl"]: r for r in rows if r["batch"] == row["batch"]}
        peak = f"peak extra {(row['peak'] - 2 * row['batch'] * DIM * 4) / 2**20:.0f} MiB beyond the gradients"
        for other, target in (("plain", ">= 0.8x (time <= 1.25x)"), ("open_clip", "-")):
            if other in same:
                figure = f"loss fwd+bwd B={row['batch']} D={DIM}, blockwise N={row['block']} vs {other}"
                rate, other_rate = row["batch"] / row["time"], row["batch"] / same[other]["time"]
                record(figure, rate, other_rate, "pairs/s", target=target, note=peak)


def format_row(row: dict, rows: list[dict]) -> str:
    plain = next((r for r in rows if r["batch"] == row["batch"] and r["impl"] == "plain"), None)
    ratio = f"{row['time'] / plain['time']:.2f}x" if plain else "-"
    grads = 2 * row["batch"] * DIM * 4
    name = row["impl"] + (f" N={row['block']}" if row["block"] else "")
    return (
        f"| {row['batch']} | {name} | {row['time']:.2f} | {ratio} | {row['peak'] / 2**20:.0f} | "
        f"{(row['peak'] - grads) / 2**20:.0f} | {row['loss']:.6f} |"
    )


def markdown(rows: list[dict], description: str, args: argparse.Namespace) -> str:
    command = " ".join(["python benchmarks/bench_loss.py", *sys.argv[1:]])
    header = [
        "# Sigmoid loss: forward+backward time and peak extra memory",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {description}. torch threads per case: {args.threads}; time = best of {args.repeats} "
        "forward+backward runs after a first (memory-measuring) run. D = 768, fp32.",
        "",
        "| B | implementation | fwd+bwd s | vs plain | peak extra MiB | beyond the 2 feature grads MiB | loss |",
        "|---|---|---|---|---|---|---|",
    ]
    return "\n".join(header + [format_row(row, rows) for row in rows]) + "\n"


if __name__ == "__main__":
    main()
