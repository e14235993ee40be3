"""GPU throughput, siglip vs transformers side by side: towers, NaFlex, the zero-shot pipeline and the loss.

    python benchmarks/bench_gpu.py [--dtypes bf16,fp16,fp32] [--compile-dtypes bf16] [--rounds 3]
                                   [--quick] [--device cuda] [--out FILE]

Run by benchmarks/gpu_check.sh on a CUDA machine. Both sides hold the same random base-patch16-224 weights
(SigLIP2: base-patch16-naflex at 256 patches), saved by transformers and loaded by each with `from_pretrained`.
Contenders per tower and dtype: transformers eager and SDPA attention, `torch.compile` of its SDPA model, siglip
(SDPA), `model.compile()`, and flash-attn 2 where installed. Each contender is timed in `--rounds` interleaved
rounds after a warm-up (CUDA synchronised around each); the table keeps the median round. "cos min" is the
lowest cosine of a contender's pooled embeddings to transformers eager fp32 on the same inputs. fp32 keeps
PyTorch's defaults (TF32 off for matmuls). `--device cpu --quick` checks the script itself on a small model.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
QUICK_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
QUICK_VISION = dict(QUICK_TEXT, image_size=64)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def rounds(contenders: dict[str, Callable[[], object]], count: int, iterations: int, device: str) -> dict[str, float]:
    """Median seconds per call of each contender over `count` interleaved rounds of `iterations` calls."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for function in contenders.values():  # warm-up: kernels, autotuning, compilation
        function()
        function()
    for _ in range(count):
        for name, function in contenders.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(iterations):
                function()
            synchronize(device)
            times[name].append((time.perf_counter() - start) / iterations)
    return {name: statistics.median(values) for name, values in times.items()}


def cosine_min(output: torch.Tensor, expected: torch.Tensor) -> float:
    return F.cosine_similarity(output.float().cpu(), expected.float().cpu(), dim=-1).min().item()


def flash_available(device: str) -> bool:
    import importlib.util

    return device.startswith("cuda") and importlib.util.find_spec("flash_attn") is not None


def tower_table(kind: str, folder: Path, inputs: dict, batch: int, args: argparse.Namespace) -> list[str]:
    """Rows `| tower | dtype | contender | items/s | vs transformers sdpa | cos min |` for one tower."""
    import transformers

    import siglip

    ours_class, ref_class, pooled = {
        "vision": (siglip.SiglipVisionModel, transformers.SiglipVisionModel, "pooler_output"),
        "text": (siglip.SiglipTextModel, transformers.SiglipTextModel, "pooler_output"),
        "naflex": (siglip.Siglip2VisionModel, transformers.Siglip2VisionModel, "pooler_output"),
    }[kind]
    with torch.no_grad():
        exact_model = ref_class.from_pretrained(folder, attn_implementation="eager").to(args.device).eval()
        expected = getattr(exact_model(**{k: v.to(args.device) for k, v in inputs.items()}), pooled)
    del exact_model
    rows = []
    for dtype_name in args.dtypes:
        dtype = DTYPES[dtype_name]
        feed = {k: v.to(args.device, dtype) if v.is_floating_point() else v.to(args.device) for k, v in inputs.items()}
        models: dict[str, torch.nn.Module] = {}
        for implementation in ("eager", "sdpa"):
            models[f"transformers {implementation}"] = (
                ref_class.from_pretrained(folder, dtype=dtype, attn_implementation=implementation)
                .to(args.device)
                .eval()
            )
        models["siglip"] = ours_class.from_pretrained(folder, dtype=dtype, device=args.device).eval()
        if flash_available(args.device) and dtype_name != "fp32":
            models["siglip flash_attention_2"] = ours_class.from_pretrained(
                folder, dtype=dtype, device=args.device, attn_implementation="flash_attention_2"
            ).eval()
        if dtype_name in args.compile_dtypes:
            models["transformers sdpa compiled"] = torch.compile(models["transformers sdpa"])
            compiled = ours_class.from_pretrained(folder, dtype=dtype, device=args.device).eval()
            compiled.compile()
            models["siglip compiled"] = compiled
        contenders = {name: _forward(model, feed) for name, model in models.items()}
        with torch.inference_mode():
            seconds = rounds(contenders, args.rounds, args.iterations, args.device)
            cosines = {name: cosine_min(getattr(function(), pooled), expected) for name, function in contenders.items()}
        baseline = seconds["transformers sdpa"]
        for name in contenders:
            rows.append(
                f"| {kind} | {dtype_name} | {name} | {batch / seconds[name]:,.0f} | {baseline / seconds[name]:.2f}x"
                f" | {cosines[name]:.5f} |"
            )
        print("\n".join(rows[-len(contenders) :]), flush=True)
        del models, contenders
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    return rows


def _forward(model: torch.nn.Module, feed: dict) -> Callable[[], object]:
    return lambda: model(**feed)


def make_folders(root: Path, quick: bool) -> tuple[Path, Path, Path]:
    """Random transformers checkpoints: SigLIP towers, SigLIP2 NaFlex vision, and a full SigLIP with processor."""
    import transformers
    from spm_model import train_sentencepiece_model

    torch.manual_seed(0)
    text, vision = (QUICK_TEXT, QUICK_VISION) if quick else ({}, {})
    siglip_folder, naflex_folder, full_folder = root / "siglip", root / "naflex", root / "full"
    tokenizer = transformers.SiglipTokenizer(vocab_file=str(train_sentencepiece_model(root / "spm")))
    config = transformers.SiglipConfig(text_config={**text, "vocab_size": tokenizer.vocab_size}, vision_config=vision)
    model = transformers.SiglipModel(config)
    with torch.no_grad():
        model.logit_scale.fill_(2.3)
        model.logit_bias.fill_(-1.7)
    for folder in (siglip_folder, full_folder):
        model.save_pretrained(folder)
    size = vision.get("image_size", 224)
    processor = transformers.SiglipImageProcessor(size={"height": size, "width": size})
    transformers.SiglipProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(full_folder)
    naflex_vision = dict(QUICK_TEXT, num_patches=16) if quick else {}
    transformers.Siglip2VisionModel(transformers.Siglip2VisionConfig(**naflex_vision)).save_pretrained(naflex_folder)
    return siglip_folder, naflex_folder, full_folder


def tower_inputs(kind: str, batch: int, quick: bool) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    if kind == "vision":
        size = 64 if quick else 224
        return {"pixel_values": torch.randn(batch, 3, size, size, generator=generator)}
    if kind == "text":
        return {"input_ids": torch.randint(0, 256, (batch, 64), generator=generator)}
    patches = 64 if quick else 256  # mixed aspect ratios, padded to the budget
    grids = [(16, 16), (8, 32), (32, 8), (12, 20)] if not quick else [(8, 8), (4, 16), (16, 4), (6, 10)]
    shapes = torch.tensor([grids[i % len(grids)] for i in range(batch)])
    mask = (torch.arange(patches)[None] < (shapes[:, 0] * shapes[:, 1])[:, None]).int()
    pixels = torch.randn(batch, patches, 3 * 16 * 16, generator=generator) * mask[..., None]
    return {"pixel_values": pixels, "pixel_attention_mask": mask, "spatial_shapes": shapes}


def pipeline_rows(folder: Path, workdir: Path, args: argparse.Namespace) -> list[str]:
    """Zero-shot pipeline over JPEG files, images/s: siglip.pipeline vs transformers.pipeline, bf16."""
    import transformers
    from bench_pipeline import make_jpegs, make_labels

    import siglip

    count = 64 if args.quick else 512
    paths = make_jpegs(workdir, count)
    labels = make_labels(10)
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    ours = siglip.pipeline(model=str(folder), device=args.device, dtype=dtype, batch_size=64)
    theirs = transformers.pipeline(
        "zero-shot-image-classification", model=str(folder), device=args.device, dtype=dtype, batch_size=64
    )
    contenders = {
        "transformers pipeline": lambda: theirs(paths, candidate_labels=labels),
        "siglip.pipeline": lambda: ours(paths, candidate_labels=labels),
    }
    seconds = rounds(contenders, args.rounds, 1, args.device)
    base = seconds["transformers pipeline"]
    return [f"| pipeline | {dtype} | {name} | {count / s:,.0f} | {base / s:.2f}x | |" for name, s in seconds.items()]


def loss_rows(args: argparse.Namespace) -> list[str]:
    """Sigmoid loss forward+backward at batch B, dim 768: siglip.loss vs the dense formula; time, peak memory."""
    from siglip.loss import sigmoid_loss

    batch = 2048 if args.quick else 32768
    generator = torch.Generator().manual_seed(0)
    image = F.normalize(torch.randn(batch, 768, generator=generator), dim=-1).to(args.device).requires_grad_()
    text = F.normalize(torch.randn(batch, 768, generator=generator), dim=-1).to(args.device).requires_grad_()
    scale = torch.tensor([2.3], device=args.device, requires_grad=True)
    bias = torch.tensor([-10.0], device=args.device, requires_grad=True)

    def dense() -> torch.Tensor:  # the reference's formula: the full (B, B) logits, labels 2I - 1
        logits = text @ image.t() * scale.exp() + bias
        labels = 2 * torch.eye(batch, device=args.device) - 1
        return -F.logsigmoid(labels * logits).sum() / batch

    contenders = {"dense (transformers' formula)": dense, "siglip.loss": lambda: sigmoid_loss(image, text, scale, bias)}
    rows, values = [], {}
    for name, function in contenders.items():
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        seconds = rounds({name: lambda f=function: f().backward()}, args.rounds, 1, args.device)[name]
        peak = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else float("nan")
        values[name] = function().item()
        rows.append(
            f"| loss B={batch} | fp32 | {name} | {1e3 * seconds:.1f} ms | {peak:.2f} GiB | {values[name]:.4f} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtypes", default="bf16,fp16,fp32")
    parser.add_argument("--compile-dtypes", default="bf16")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="a small model and batch: checks the script")
    parser.add_argument("--out", type=Path, default=None, help="also write the tables to this markdown file")
    args = parser.parse_args()
    args.dtypes, args.compile_dtypes = args.dtypes.split(","), args.compile_dtypes.split(",")
    warnings.filterwarnings("ignore")
    if args.device.startswith("cuda"):
        name = torch.cuda.get_device_name()
    else:
        name = "CPU"
    header = [
        f"GPU check: {name}, torch {torch.__version__}, {'quick' if args.quick else 'base-224 / NaFlex base-256'};"
        f" median of {args.rounds} interleaved rounds",
        "",
        "| tower | dtype | contender | items/s | vs transformers sdpa | cos min |",
        "|---|---|---|---|---|---|",
    ]
    print("\n".join(header), flush=True)
    lines = list(header)
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        siglip_folder, naflex_folder, full_folder = make_folders(root, args.quick)
        batches = {
            "vision": 16 if args.quick else 256,
            "text": 64 if args.quick else 1024,
            "naflex": 16 if args.quick else 256,
        }
        for kind, folder in (("vision", siglip_folder), ("text", siglip_folder), ("naflex", naflex_folder)):
            lines += tower_table(kind, folder, tower_inputs(kind, batches[kind], args.quick), batches[kind], args)
        (root / "jpegs").mkdir()
        pipeline = pipeline_rows(full_folder, root / "jpegs", args)
        print("\n".join(pipeline), flush=True)
        loss_header = [
            "",
            "| loss | dtype | implementation | time | peak memory | value |",
            "|---|---|---|---|---|---|",
        ]
        loss = loss_rows(args)
        print("\n".join(loss_header + loss), flush=True)
        lines += pipeline + loss_header + loss
    if args.out:
        args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
