"""Images/s of transformers' SigLIP image processor vs ours (exact and fast), side by side in one process.

Two workloads over the real photos in tests/fixtures (cycled to --images images, 224x224 output, return_tensors="pt"):
- decoded: PIL images already decoded in memory (what the processors themselves cost);
- files: file paths, decoding included (what an end-to-end loader pays; decoding dominates).
Each processor runs --repeats times, interleaved; the best time counts (the machine is shared).

    .venv/bin/python benchmarks/bench_image_processing.py [--images 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from siglip.image_io import load_image
from siglip.image_processing import SiglipImageProcessor
from siglip.image_processing_fast import SiglipImageProcessorFast

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
PHOTOS = [
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "motorcycle_left.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "rocket.jpg",
    "camera.png",
    "horse.png",
    "logo.png",
]


def best_rate(run: Callable[[], object], count: int) -> float:
    start = time.perf_counter()
    run()
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import transformers

    transformers.logging.set_verbosity_error()
    processors = {
        f"transformers {transformers.__version__} SiglipImageProcessor (PIL backend)": transformers.SiglipImageProcessor(),
        "siglip SiglipImageProcessor (exact)": SiglipImageProcessor(),
        "siglip SiglipImageProcessorFast": SiglipImageProcessorFast(),
    }
    paths = [str(FIXTURES / PHOTOS[i % len(PHOTOS)]) for i in range(args.images)]
    decoded = [load_image(path) for path in paths]
    workloads = {"decoded": decoded, "files": paths}

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores visible, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), Pillow {Image.__version__}"
    )
    print(
        f"{args.images} images from tests/fixtures ({len(PHOTOS)} photos, 300x451 .. 1411x1411), best of {args.repeats}"
    )
    for workload, images in workloads.items():
        rates = {name: 0.0 for name in processors}
        for processor in processors.values():  # warm-up
            processor(images[:4], return_tensors="pt")
        for _ in range(args.repeats):
            for name, processor in processors.items():
                rate = best_rate(lambda p=processor, x=images: p(x, return_tensors="pt"), len(images))
                rates[name] = max(rates[name], rate)
        reference = next(iter(rates.values()))
        print(f"\n{workload}:")
        print(f"| {'processor':<62} | {'images/s':>9} | {'vs transformers':>15} |")
        print(f"|{'-' * 64}|{'-' * 11}|{'-' * 17}|")
        for name, rate in rates.items():
            print(f"| {name:<62} | {rate:>9.1f} | {rate / reference:>14.2f}x |")


if __name__ == "__main__":
    main()
