"""`siglip eval` vs the bulk job alone: is evaluation embedding-bound at the bulk job's throughput?

    python benchmarks/bench_eval.py [--images 10000] [--model models/siglip-demo-shapes] [--batch-size 32] [--repeats 3]
    python benchmarks/bench_eval.py --quick      # a few images: checks the script runs
    python benchmarks/bench_eval.py --probe      # also time a linear probe on 50k x 768 synthetic features

Both sides get the same JPEGs (shapes rendered by the demo model's training generator into class folders) and the
same model, batch size and decode threads, and each run starts cold (a new output folder / a new feature cache):
- bulk: `siglip.bulk.embed_source(DIR, OUT)`, what `siglip embed DIR --out OUT` runs (model load included);
- eval: `siglip.eval.evaluate("zero-shot", read_dataset(DIR), ...)`, what `siglip eval zero-shot DIR` runs (model
  load, the cached image pass, the class prompts and the metrics included).
An untimed warm-up of each side comes first; then runs alternate, and the best of `--repeats` each is kept. The ratio is bulk seconds / eval seconds (eval throughput as
a fraction of the bulk job's; target >= 0.95).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from summary import machine, record  # noqa: E402

from siglip.bulk import embed_source  # noqa: E402
from siglip.eval import ModelSpec, evaluate, read_dataset  # noqa: E402
from siglip.eval.linear_probe import train_probe  # noqa: E402
from siglip.train.synthetic import ShapesDataset  # noqa: E402


def render(folder: Path, count: int, size: int) -> None:
    """`count` JPEGs in folder/SHAPE/ (the generator's images at `size` px)."""
    dataset = ShapesDataset(count, split="eval", seed=7, image_size=size)
    for index in range(count):
        image, _, sample = dataset.sample(index)
        target = folder / sample.shape
        target.mkdir(parents=True, exist_ok=True)
        image.save(target / f"{index:06d}.jpg", quality=90)


def time_bulk(folder: Path, scratch: Path, args: argparse.Namespace) -> float:
    out = Path(tempfile.mkdtemp(dir=scratch))
    started = time.perf_counter()
    summary = embed_source(
        folder, out, model=args.model, batch_size=args.batch_size, workers=args.workers, device=args.device
    )
    seconds = time.perf_counter() - started
    assert summary.ok == args.images, summary.line()
    return seconds


def time_eval(folder: Path, scratch: Path, args: argparse.Namespace) -> float:
    cache = Path(tempfile.mkdtemp(dir=scratch))
    started = time.perf_counter()
    [result] = evaluate(
        "zero-shot",
        read_dataset(folder),
        [ModelSpec(args.model, device=args.device)],
        cache_dir=cache,
        batch_size=args.batch_size,
        workers=args.workers,
    )
    seconds = time.perf_counter() - started
    assert result.images == args.images
    return seconds


def time_probe(samples: int = 50_000, dim: int = 768, classes: int = 100) -> float:
    generator = torch.Generator().manual_seed(0)
    centers = torch.randn(classes, dim, generator=generator)
    labels = torch.randint(classes, (samples,), generator=generator)
    features = centers[labels] + 6 * torch.randn(samples, dim, generator=generator)
    started = time.perf_counter()
    train_probe(features, labels, classes)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=128, help="image side in px (default: %(default)s)")
    parser.add_argument("--model", default=str(ROOT / "models" / "siglip-demo-shapes"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--probe", action="store_true", help="also time a linear probe on 50k x 768 features")
    parser.add_argument("--quick", action="store_true", help="48 images, one repeat: checks the script runs")
    args = parser.parse_args()
    if args.quick:
        args.images, args.repeats = 48, 1
    print(f"machine: {machine()}")
    print(f"model: {args.model}, {args.images} JPEGs of {args.size} px, batch {args.batch_size}, device {args.device}")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        folder = scratch / "images"
        render(folder, args.images, args.size)
        warm = argparse.Namespace(**{**vars(args), "images": 32})
        render(scratch / "warmup", 32, args.size)
        time_bulk(scratch / "warmup", scratch, warm)  # untimed: first-call costs (imports, kernels) on both sides
        time_eval(scratch / "warmup", scratch, warm)
        bulk, ours = [], []
        for _ in range(args.repeats):  # alternate, so that load on a shared machine hits both alike
            bulk.append(time_bulk(folder, scratch, args))
            ours.append(time_eval(folder, scratch, args))
    best_bulk, best_eval = min(bulk), min(ours)
    ratio = best_bulk / best_eval
    print(f"bulk job alone  {best_bulk:8.2f} s  {args.images / best_bulk:8.1f} img/s  (runs: {_runs(bulk)})")
    print(f"siglip eval     {best_eval:8.2f} s  {args.images / best_eval:8.1f} img/s  (runs: {_runs(ours)})")
    print(
        f"eval / bulk throughput: {ratio:.3f} (target >= 0.95); median of runs {statistics.median(bulk) / statistics.median(ours):.3f}"
    )
    record(
        f"siglip eval zero-shot vs the bulk job, {args.images} images",
        args.images / best_eval,
        args.images / best_bulk,
        "img/s",
        target=">= 0.95x",
    )
    if args.probe:
        seconds = time_probe()
        print(f"linear probe, 50000 x 768 features, 100 classes (weight-decay sweep + final fit): {seconds:.1f} s")


def _runs(values: list[float]) -> str:
    return ", ".join(f"{value:.2f}" for value in values)


if __name__ == "__main__":
    random.seed(0)
    main()
