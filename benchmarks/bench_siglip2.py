"""Siglip2VisionModel (ours, padded and packed) vs transformers' Siglip2VisionModel on mixed-aspect NaFlex batches.

    python benchmarks/bench_siglip2.py [--size small|base] [--repeats 3] [--threads 2] [--quick] [--out results.md]

Both models hold the same random weights (transformers saves, we load). Two batches of 16 images, fp32, CPU:
  * processor: 16 aspect ratios from 1:8 to 8:1 (crops of the test photos), through transformers' NaFlex
    processor at max_num_patches=256, so every image fills most of its budget (about 2% padding);
  * mixed budgets: the same images, half at a 256-patch and half at a 64-patch budget, padded to 256
    (what a batch looks like when sequences of different budgets are collated together).
Outputs are checked to agree (pooler within 1e-4) before timing. Each variant runs once as warm-up, then the
variants are timed in turn `--repeats` times and the fastest run of each is kept (the least disturbed by other
load). Wall-clock images/s and process CPU seconds are reported, with the ratio to transformers.
`--quick`: small size, one repeat, nothing written (a smoke run).

siglip padded = the default path (masked keys over the padded batch, packed oneDNN linears on CPU); siglip
packed = `packed=True`: linears over the valid rows only, attention per image.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import FIXTURES  # noqa: E402
from summary import record  # noqa: E402

from siglip.modeling.siglip2 import Siglip2VisionModel  # noqa: E402

SIZES = {
    "small": dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=6),
    "base": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
}
# (width, height) ratios of the 16 images: 1:8 to 8:1, portrait, landscape and square.
ASPECTS = [(1, 8), (8, 1), (1, 3), (3, 1), (3, 4), (4, 3), (9, 16), (16, 9), (2, 3), (3, 2), (1, 1), (1, 2), (2, 1)]
ASPECTS += [(1, 4), (4, 1), (5, 4)]


def make_images() -> list[Image.Image]:
    """16 crops of the test photos with the aspect ratios above."""
    photos = [Image.open(FIXTURES / name).convert("RGB") for name in ("chelsea.png", "astronaut.png", "coffee.png")]
    images = []
    for index, (width, height) in enumerate(ASPECTS):
        photo = photos[index % len(photos)]
        scale = min(photo.width / width, photo.height / height)
        images.append(photo.crop((0, 0, max(1, int(width * scale)), max(1, int(height * scale)))))
    return images


def make_batches(images: list[Image.Image]) -> dict[str, dict[str, torch.Tensor]]:
    from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

    processor = Siglip2ImageProcessorPil()
    full = dict(processor(images=images, max_num_patches=256, return_tensors="pt"))
    small = dict(processor(images=images[1::2], max_num_patches=64, return_tensors="pt"))
    mixed = {key: value.clone() for key, value in full.items()}
    mixed["pixel_values"][1::2] = 0
    mixed["pixel_attention_mask"][1::2] = 0
    mixed["pixel_values"][1::2, :64] = small["pixel_values"]
    mixed["pixel_attention_mask"][1::2, :64] = small["pixel_attention_mask"]
    mixed["spatial_shapes"][1::2] = small["spatial_shapes"]
    return {"processor": full, "mixed budgets": mixed}


def time_variants(variants: dict, inputs: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """name -> (best wall seconds, CPU seconds of that run); variants interleaved so load hits them alike."""
    best: dict[str, tuple[float, float]] = {}
    with torch.inference_mode():
        for function in variants.values():
            function(inputs)
        for _ in range(repeats):
            for name, function in variants.items():
                wall, cpu = time.perf_counter(), time.process_time()
                function(inputs)
                result = (time.perf_counter() - wall, time.process_time() - cpu)
                if name not in best or result[0] < best[name][0]:
                    best[name] = result
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="base")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="small size, 1 repeat, no file written")
    parser.add_argument("--out", type=Path, help="also write the markdown table to this file (replacing it)")
    args = parser.parse_args()
    if args.quick:
        args.size, args.repeats, args.out = "small", 1, None
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    import transformers

    torch.manual_seed(0)
    reference = transformers.Siglip2VisionModel(transformers.Siglip2VisionConfig(**SIZES[args.size])).eval()
    folder = tempfile.mkdtemp()
    reference.save_pretrained(folder)
    ours = Siglip2VisionModel.from_pretrained(folder)
    variants = {
        "transformers": lambda inputs: reference(**inputs).pooler_output,
        "siglip padded": lambda inputs: ours(**inputs).pooler_output,
        "siglip packed": lambda inputs: ours(**inputs, packed=True).pooler_output,
    }
    batches = make_batches(make_images())
    machine = f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}"
    lines = [
        "# SigLIP2 NaFlex vision tower: siglip vs transformers",
        "",
        f"`python benchmarks/bench_siglip2.py --size {args.size} --repeats {args.repeats} --threads {args.threads}`",
        "",
        f"Config: {args.size} {SIZES[args.size]}, fp32, CPU ({machine}), transformers {transformers.__version__}. "
        "16 images per batch; best of the interleaved runs.",
        "",
        "| batch | valid patches | variant | images/s | wall s | CPU s | speed vs transformers |",
        "|---|---|---|---|---|---|---|",
    ]
    for batch_name, inputs in batches.items():
        with torch.inference_mode():
            expected = variants["transformers"](inputs)
            for name in ("siglip padded", "siglip packed"):
                difference = (variants[name](inputs) - expected).abs().max().item()
                assert difference <= 1e-4, f"{name} differs from transformers by {difference}"
        timings = time_variants(variants, inputs, args.repeats)
        valid = f"{int(inputs['pixel_attention_mask'].sum())}/{inputs['pixel_attention_mask'].numel()}"
        base_wall = timings["transformers"][0]
        for name, (wall, cpu) in timings.items():
            count = inputs["pixel_values"].shape[0]
            if name != "transformers":
                figure = f"P8 SigLIP2 NaFlex {args.size}, {batch_name} batch ({valid} valid), {name}"
                record(figure, count / wall, count / base_wall, "img/s", target=">= 1.2x")
            lines.append(
                f"| {batch_name} | {valid} | {name} | {count / wall:.2f} | {wall:.2f} | {cpu:.2f} | "
                f"{base_wall / wall:.2f}x |"
            )
            print(lines[-1], flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
