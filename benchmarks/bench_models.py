"""Image and text towers, siglip vs transformers, fp32 and bf16, eager and compiled, with the GEMM peak.

    python benchmarks/bench_models.py [--towers vision,text] [--dtypes fp32,bf16] [--modes eager,compile]
                                      [--batch 32] [--repeats 3] [--quick] [--out FILE]

Both sides hold the same random base-patch16-224 weights (transformers builds and saves them, both load them
with `from_pretrained(..., dtype=...)`). Per (tower, dtype) it times, interleaved `--repeats` times after a
warm-up, and keeps the best run (the least disturbed by other load on a shared machine):
  * eager: transformers' default (SDPA) vs siglip's default (packed oneDNN linears on CPU, see packed.py);
  * compile: `torch.compile(reference)` vs `siglip_model.compile()` (inductor with frozen, pre-packed weights).
"peak" is the throughput of bare `F.linear` calls with the tower's own GEMM shapes (q, k, v, out, fc1, fc2 over
batch * tokens rows) measured in the same run; "% peak" is the tower's FLOPs (linears + attention products)
per second over that peak. `onednn` is the same GEMMs through pre-packed oneDNN, for reference. Accuracy of each
siglip mode: max abs difference and cosine of the pooled embeddings against fp32 eager transformers.
"""

from __future__ import annotations

import argparse
import functools
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from summary import record

import siglip
from siglip.kernels.cpu import cpu_features

ROOT = Path(__file__).resolve().parents[1]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TOWERS = {
    "vision": ("SiglipVisionConfig", "SiglipVisionModel", siglip.SiglipVisionModel),
    "text": ("SiglipTextConfig", "SiglipTextModel", siglip.SiglipTextModel),
}


def tower_flops(tower: str, config, batch: int, tokens: int) -> float:
    """Multiply-adds x 2 of one forward: linears, attention products, patch embedding and heads."""
    hidden, inner, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    rows = batch * tokens
    per_layer = 2 * rows * (4 * hidden * hidden + 2 * hidden * inner) + 4 * batch * tokens * tokens * hidden
    total = layers * per_layer
    if tower == "vision":
        total += 2 * rows * 3 * config.patch_size**2 * hidden  # patch embedding
        total += 2 * rows * 2 * hidden * hidden + 4 * rows * hidden  # MAP head keys/values and attention
        total += 2 * batch * (2 * hidden * hidden + 2 * hidden * inner)  # head query, out, MLP
    else:
        total += 2 * batch * hidden * config.projection_size
    return float(total)


# GEMM peaks take the rows this many at a time as well as all at once (the best counts): a wide GEMM's output
# over a whole batch leaves the cache (bf16 768 -> 3072 at 6272 rows: 360 against 416 GFLOP/s in 2048-row blocks).
PEAK_BLOCK_ROWS = 2048


def gemm_peak(config, rows: int, dtype: torch.dtype, repeats: int) -> tuple[float, float]:
    """GFLOP/s of one layer's GEMM shapes: bare F.linear, and pre-packed oneDNN (best of `repeats`, each the
    faster of all rows at once and PEAK_BLOCK_ROWS-row blocks)."""
    hidden, inner = config.hidden_size, config.intermediate_size
    shapes = [(hidden, hidden)] * 4 + [(inner, hidden), (hidden, inner)]
    weights = [(torch.randn(out, inp, dtype=dtype) * inp**-0.5, torch.randn(out, dtype=dtype)) for out, inp in shapes]
    inputs = {size: torch.randn(rows, size, dtype=dtype) for size in (hidden, inner)}
    # oneDNN packs bf16 only where the CPU can run it (AVX-512 or avx_ne_convert): elsewhere siglip multiplies bf16
    # weights in fp32 (kernels/cpu.py), and that is the peak to measure
    if dtype == torch.bfloat16 and not cpu_features().native_bf16:
        weights = [(w.float(), b.float()) for w, b in weights]
        inputs = {size: tensor.float() for size, tensor in inputs.items()}
    packed = [(torch.ops.mkldnn._reorder_linear_weight(w, rows), b) for w, b in weights]
    flops = sum(2 * rows * w.numel() for w, _ in weights)
    blocks = [slice(start, start + PEAK_BLOCK_ROWS) for start in range(0, rows, PEAK_BLOCK_ROWS)]

    def plain(parts: list[slice]) -> None:
        for weight, bias in weights:
            for part in parts:
                F.linear(inputs[weight.shape[1]][part], weight, bias)

    def onednn(parts: list[slice]) -> None:
        for (weight, bias), (pack, _) in zip(weights, packed):
            for part in parts:
                torch.ops.mkldnn._linear_pointwise(inputs[weight.shape[1]][part], pack, bias, "none", [], "")

    with torch.inference_mode():
        best = {}
        for name, function in (("plain", plain), ("onednn", onednn)):
            for parts in ([slice(None)], blocks):
                function(parts)
                seconds = min(timed(functools.partial(function, parts)) for _ in range(repeats))
                best[name] = min(best.get(name, float("inf")), seconds)
    return flops / best["plain"] / 1e9, flops / best["onednn"] / 1e9


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def make_inputs(tower: str, config, batch: int, tokens: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    if tower == "vision":
        size = config.image_size
        return {"pixel_values": torch.rand(batch, 3, size, size, generator=generator) * 2 - 1}
    return {"input_ids": torch.randint(0, config.vocab_size, (batch, tokens), generator=generator)}


def accuracy(output: torch.Tensor, expected: torch.Tensor) -> str:
    output, expected = output.float(), expected.float()
    cosine = F.cosine_similarity(output, expected, dim=-1).min().item()
    return f"{(output - expected).abs().max().item():.1e} / {cosine:.6f}"


def run_tower(tower: str, dtype_name: str, modes: list[str], args: argparse.Namespace) -> list[str]:
    import transformers

    config_name, model_name, ours_class = TOWERS[tower]
    torch.manual_seed(0)
    reference_config = getattr(transformers, config_name)()
    folder = tempfile.mkdtemp()
    getattr(transformers, model_name)(reference_config).eval().save_pretrained(folder)
    dtype = DTYPES[dtype_name]
    reference = getattr(transformers, model_name).from_pretrained(folder, dtype=dtype).eval()
    ours = ours_class.from_pretrained(folder, dtype=dtype)
    batch = args.batch
    tokens = (reference_config.image_size // reference_config.patch_size) ** 2 if tower == "vision" else 64
    inputs = make_inputs(tower, reference_config, batch, tokens)
    if tower == "vision":
        inputs_typed = {"pixel_values": inputs["pixel_values"].to(dtype)}
    else:
        inputs_typed = inputs
    with torch.inference_mode():
        fp32_reference = getattr(transformers, model_name).from_pretrained(folder).eval()
        expected = fp32_reference(**inputs).pooler_output
        del fp32_reference

    variants = {}
    if "eager" in modes:
        variants["eager"] = (reference, ours)
    if "compile" in modes:
        started = time.perf_counter()
        compiled_reference = torch.compile(reference)
        compiled_ours = ours_class.from_pretrained(folder, dtype=dtype).compile()
        with torch.inference_mode():
            compiled_reference(**inputs_typed)
            compiled_ours(**inputs_typed)
        print(f"  compile warm-up (both) {time.perf_counter() - started:.0f} s", flush=True)
        variants["compile"] = (compiled_reference, compiled_ours)

    times: dict[tuple[str, str], list[float]] = {}
    outputs = {}
    with torch.inference_mode():
        for mode, (ref_model, our_model) in variants.items():
            outputs[mode] = our_model(**inputs_typed).pooler_output
            ref_model(**inputs_typed)
        for _ in range(args.repeats):
            for mode, (ref_model, our_model) in variants.items():
                for side, model in (("transformers", ref_model), ("siglip", our_model)):
                    seconds = timed(lambda model=model: model(**inputs_typed))
                    times.setdefault((mode, side), []).append(seconds)
    peak, onednn_peak = gemm_peak(reference_config, batch * tokens, dtype, args.repeats + 2)
    gflop = tower_flops(tower, reference_config, batch, tokens) / 1e9
    unit = "img/s" if tower == "vision" else "texts/s"
    lines = []
    for mode in variants:
        ref_best, our_best = min(times[(mode, "transformers")]), min(times[(mode, "siglip")])
        ref_rate, our_rate = batch / ref_best, batch / our_best
        spread = statistics.median(times[(mode, "siglip")]) / our_best
        line = (
            f"| {tower} | {dtype_name} | {batch} | {mode} | {our_rate:.2f} {unit} | {ref_rate:.2f} {unit} | "
            f"**{our_rate / ref_rate:.2f}x** | {gflop / our_best / peak:.0%} | {gflop / ref_best / peak:.0%} | "
            f"{peak:.0f} / {onednn_peak:.0f} | {accuracy(outputs[mode], expected)} | {spread:.2f} |"
        )
        lines.append(line)
        print(line, flush=True)
        figure = f"{'P1' if dtype_name == 'fp32' else 'P2'} {tower} tower {dtype_name} {mode}, batch {batch}"
        target = TARGETS.get((dtype_name, mode), "")
        record(figure, our_rate, ref_rate, unit, target=target, peak_percent=100 * gflop / our_best / peak)
    return lines


# The targets, vs transformers in the same mode (the text tower has the same ones).
TARGETS = {
    ("fp32", "eager"): ">= 1.1x",
    ("fp32", "compile"): ">= 1.0x",
    ("bf16", "eager"): "-",
    ("bf16", "compile"): ">= 1.2x",
}


HEADER = [
    "| tower | dtype | batch | mode | siglip | transformers | ratio | siglip % peak | transformers % peak "
    "| peak GFLOP/s (F.linear / oneDNN) | siglip max abs / min cos vs fp32 | siglip median/best |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--towers", default="vision,text")
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--modes", default="eager,compile")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="batch 8, 2 repeats, eager only")
    parser.add_argument("--out", type=Path, help="append the table to this markdown file")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.repeats, args.modes = 8, 2, "eager"
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    import transformers

    machine = f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}"
    print(f"{machine}, transformers {transformers.__version__}")
    print("\n".join(HEADER), flush=True)
    lines = []
    for tower in args.towers.split(","):
        for dtype_name in args.dtypes.split(","):
            lines += run_tower(tower, dtype_name, args.modes.split(","), args)
    if args.out:
        command = (
            f"`python benchmarks/bench_models.py --towers {args.towers} --dtypes {args.dtypes} --modes {args.modes} "
            f"--batch {args.batch} --repeats {args.repeats}` ({machine}, transformers {transformers.__version__})"
        )
        with args.out.open("a", encoding="utf-8") as handle:
            handle.write("\n".join(["", command, "", *HEADER, *lines, ""]))


if __name__ == "__main__":
    main()
