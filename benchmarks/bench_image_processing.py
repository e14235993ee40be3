"""P4: preprocessing JPEG files (decode included) with transformers' SiglipImageProcessor vs ours, in one run.

JPEGs at three sizes are made from the real photos in tests/fixtures (upscaled to cover the size, centre-cropped,
saved at quality 90 into a temporary folder): VGA 640x480, 1080p 1920x1080 and 12 MP 4000x3000. Every processor
gets the same list of file paths and returns a 224x224 float32 batch (`return_tensors="pt"`). Rows:

- transformers SiglipImageProcessor (its PIL backend; one image after another, as the library does);
- siglip exact: `SiglipImageProcessor()` (output bit-equal to the reference, asserted), images on both cores;
- siglip exact, 1 thread: `num_workers=1`, what the exact path costs without the thread pool;
- siglip fast_decode: `SiglipImageProcessor(fast_decode=True)`: JPEG DCT-scaled decoding (`Image.draft`) to the
  smallest of 1/8, 1/4, 1/2, 1 that is still >= 224 px, then the exact resize/normalise, on both cores;
- siglip Fast: `SiglipImageProcessorFast()`: decode on both cores, then one batched torch uint8 resize and one
  fused rescale+normalise (at most one uint8 level from the exact path); "Fast + fast_decode" adds draft decoding;
- bare draft decode: `Image.open(path); image.draft("RGB", (224, 224)); image.load()` on the same thread pool,
  nothing else: the floor for fast_decode (its "vs bare decode" column should be <= 1.2x);
- bare full decode: `Image.open(path).load()` on the thread pool;
- bare full decode + Pillow resize: the same plus Pillow's bicubic resize to 224x224: the work no bit-exact path
  can skip (the reference does it too), so "transformers time / this time" is the most the exact path can reach.

A second table times the processors alone on the same photos already decoded in memory (PIL images), and reports
the fast processor's deviation from the exact output. Finally the fast mode's image embeddings are compared with the exact path's (cosine) on the photos at each size,
through a random-weight SigLIP base-patch16-224 vision tower (`SiglipVisionModel(SiglipVisionConfig())`, seed 0).

    flock /tmp/siglip-cpu.lock .venv/bin/python benchmarks/bench_image_processing.py [--quick] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from summary import record

from siglip import SiglipVisionConfig, SiglipVisionModel
from siglip.image.processing import SiglipImageProcessor, map_in_threads
from siglip.image.processing_fast import SiglipImageProcessorFast

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg", "retina.jpg"]
SIZES = {"VGA 640x480": (640, 480), "1080p 1920x1080": (1920, 1080), "12MP 4000x3000": (4000, 3000)}
COUNTS = {"VGA 640x480": 48, "1080p 1920x1080": 24, "12MP 4000x3000": 8}


def make_jpegs(folder: Path, size: tuple[int, int], count: int) -> list[str]:
    """`count` JPEGs of `size` (width, height) cycled from the fixture photos: upscale to cover, centre crop."""
    width, height = size
    paths = []
    for index, name in enumerate(PHOTOS):
        photo = Image.open(FIXTURES / name).convert("RGB")
        scale = max(width / photo.width, height / photo.height)
        resized = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.Resampling.BICUBIC)
        left, top = (resized.width - width) // 2, (resized.height - height) // 2
        path = folder / f"{width}x{height}_{index}.jpg"
        resized.crop((left, top, left + width, top + height)).save(path, quality=90)
        paths.append(str(path))
    return [paths[i % len(paths)] for i in range(count)]


def bare_decode(path: str, draft: bool) -> Image.Image:
    image = Image.open(path)
    if draft:
        image.draft("RGB", (224, 224))
    image.load()
    return image


def bare_exact(path: str) -> Image.Image:
    """The work no bit-exact path can skip: the full decode and Pillow's bicubic resize to 224x224."""
    return bare_decode(path, draft=False).resize((224, 224), Image.Resampling.BICUBIC)


def best_seconds(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best wall time of each run over `repeats` rounds. Every round times every run once, in alternating order,
    so slow spells of this shared machine hit all rows alike instead of whichever row they happen to fall on."""
    for run in runs.values():
        run()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_index in range(repeats):
        names = list(runs) if round_index % 2 == 0 else list(reversed(runs))
        for name in names:
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def time_decoded(label: str, paths: list[str], reference: Any, repeats: int) -> list[str]:
    """Table rows for the processors on decoded PIL images (no file I/O or decoding in the timed part)."""
    images = [bare_decode(path, draft=False).convert("RGB") for path in paths]
    exact = SiglipImageProcessor()(images, return_tensors="pt").pixel_values
    fast = SiglipImageProcessorFast()(images, return_tensors="pt").pixel_values
    difference = (fast - exact).abs()
    processors = {
        "transformers SiglipImageProcessor": lambda: reference(images, return_tensors="pt"),
        "siglip exact (threads)": lambda: SiglipImageProcessor()(images, return_tensors="pt"),
        "siglip Fast": lambda: SiglipImageProcessorFast()(images, return_tensors="pt"),
    }
    seconds = best_seconds(processors, repeats)
    base = seconds["transformers SiglipImageProcessor"]
    rows = []
    for name, value in seconds.items():
        deviation = f"{difference.max():.4f} / {difference.mean():.1e}" if name == "siglip Fast" else ""
        rows.append(
            f"| {label:<16} | {name:<48} | {len(images) / value:>9.1f} | {base / value:>14.2f}x | {deviation:>28} |"
        )
    record(
        f"SiglipImageProcessorFast, decoded {label} images",
        len(images) / seconds["siglip Fast"],
        len(images) / base,
        "img/s",
        target=">= 3x",
    )
    return rows


FAST_MODES = {
    "fast_decode": lambda: SiglipImageProcessor(fast_decode=True),
    "Fast + fast_decode": lambda: SiglipImageProcessorFast(fast_decode=True),
}


def embedding_cosines(paths: list[str], model: torch.nn.Module) -> dict[str, np.ndarray]:
    """Per fast mode: cosine of each photo's embedding to the exact path's."""
    with torch.inference_mode():
        exact = model(SiglipImageProcessor()(paths, return_tensors="pt").pixel_values).pooler_output
        return {
            mode: torch.cosine_similarity(
                exact, model(make()(paths, return_tensors="pt").pixel_values).pooler_output
            ).numpy()
            for mode, make in FAST_MODES.items()
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="rounds (each times every row once); the best counts")
    parser.add_argument("--quick", action="store_true", help="a quarter of the images (smoke test)")
    parser.add_argument("--no-cosine", action="store_true", help="skip the embedding comparison")
    args = parser.parse_args()

    import transformers

    transformers.logging.set_verbosity_error()
    reference = transformers.SiglipImageProcessor()
    workers = min(4, os.cpu_count() or 1)
    rows: dict[str, Callable[[list[str]], object]] = {
        f"transformers {transformers.__version__} SiglipImageProcessor": lambda p: reference(p, return_tensors="pt"),
        "siglip exact (threads)": lambda p: SiglipImageProcessor()(p, return_tensors="pt"),
        "siglip exact, 1 thread": lambda p: SiglipImageProcessor(num_workers=1)(p, return_tensors="pt"),
        "siglip fast_decode (threads)": lambda p: SiglipImageProcessor(fast_decode=True)(p, return_tensors="pt"),
        "siglip Fast (threads)": lambda p: SiglipImageProcessorFast()(p, return_tensors="pt"),
        "siglip Fast + fast_decode (threads)": lambda p: SiglipImageProcessorFast(fast_decode=True)(
            p, return_tensors="pt"
        ),
        "bare draft decode (threads)": lambda p: map_in_threads(lambda x: bare_decode(x, True), p, workers),
        "bare full decode (threads)": lambda p: map_in_threads(lambda x: bare_decode(x, False), p, workers),
        "bare full decode + Pillow resize (threads)": lambda p: map_in_threads(bare_exact, p, workers),
    }
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, {workers} worker threads, Pillow "
        f"{Image.__version__}, torch {torch.__version__}, load average {os.getloadavg()[0]:.2f}; best of {args.repeats}"
    )
    model = None
    if not args.no_cosine:
        torch.manual_seed(0)
        model = SiglipVisionModel(SiglipVisionConfig()).eval()
    header = f"| {'JPEG':<16} | {'processor':<48} | {'images/s':>9} | {'ms/image':>8} | {'vs transformers':>15} |"
    lines, cosines = [header, "|" + "|".join("-" * (len(c) + 0) for c in header.split("|")[1:-1]) + "|"], {}
    decoded = [
        f"| {'JPEG':<16} | {'processor':<48} | {'images/s':>9} | {'vs transformers':>15} | {'max / mean |diff| vs exact':>28} |",
        "|---|---|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory() as folder:
        for label, size in SIZES.items():
            count = max(len(PHOTOS), COUNTS[label] // (4 if args.quick else 1))
            paths = make_jpegs(Path(folder), size, count)
            got = SiglipImageProcessor()(paths[: len(PHOTOS)], return_tensors="np").pixel_values
            want = reference(paths[: len(PHOTOS)], return_tensors="np").pixel_values
            assert np.array_equal(got, want), "the exact path differs from the reference"
            seconds = best_seconds({name: partial(run, paths) for name, run in rows.items()}, args.repeats)
            base = next(iter(seconds.values()))
            for name, value in seconds.items():
                lines.append(
                    f"| {label:<16} | {name:<48} | {count / value:>9.1f} | {1000 * value / count:>8.2f} "
                    f"| {base / value:>14.2f}x |"
                )
            for name, target in (
                ("siglip exact (threads)", ">= 3x"),
                ("bare full decode + Pillow resize (threads)", "- (the exact path's floor)"),
                ("siglip fast_decode (threads)", "-"),
                ("siglip Fast (threads)", ">= 3x"),
            ):
                record(
                    f"P4 preprocessing {label} JPEG, {name}",
                    count / seconds[name],
                    count / base,
                    "img/s",
                    target=target,
                )
            floor = seconds["bare full decode + Pillow resize (threads)"]
            lines.append(
                f"| {label:<16} | {'exact time / bare decode + resize time':<48} | {'':>9} | {'':>8} "
                f"| {seconds['siglip exact (threads)'] / floor:>14.2f}x |"
            )
            draft = seconds["bare draft decode (threads)"]
            for mode in FAST_MODES:
                mode_seconds = seconds[f"siglip {mode} (threads)"]
                record(
                    f"P4 {label} {mode} vs the bare draft decode",
                    count / mode_seconds,
                    count / draft,
                    "img/s",
                    target=">= 0.83x (within 1.2x)",
                    note="reference column = bare draft decode",
                )
                lines.append(
                    f"| {label:<16} | {mode + ' time / bare draft decode time':<48} | {'':>9} | {'':>8} "
                    f"| {mode_seconds / draft:>14.2f}x |"
                )
            decoded.extend(time_decoded(label, paths, reference, args.repeats))
            if model is not None:
                cosines[label] = embedding_cosines(paths[: len(PHOTOS)], model)
    print("\n".join(lines))
    print("\nAlready decoded PIL images (the processors alone):")
    print("\n".join(decoded))
    for label, per_mode in cosines.items():
        for mode, values in per_mode.items():
            print(f"embedding cosine {mode} vs exact, {label}: min {values.min():.5f}, mean {values.mean():.5f}")


if __name__ == "__main__":
    main()
