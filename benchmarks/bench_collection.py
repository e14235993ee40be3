"""Collections that change: a full `siglip embed` job vs a sync after 1 % of the files changed, and `siglip dedup`.

    python benchmarks/bench_collection.py                       # 100k JPEGs; dedup at 100k and 1M embeddings
    python benchmarks/bench_collection.py --n 10000 --dedup-sizes 100000   # smaller (development)
    python benchmarks/bench_collection.py --quick               # a few hundred files: checks the script runs

Sync: a synthetic tree of N small JPEGs (64x64, 100 folders, every file distinct) is embedded into a collection
with the demo model (models/siglip-demo-shapes: 32x32 input, 4 layers, so the model is not the whole cost), then
1 % of the files change (a third edited in place, a third deleted, a third new) and the same command syncs. The
sync must cost the stat scan plus ~1 % of the embedding: the script reports the scan alone (listing + stat of
every file, files/s), a sync with nothing changed, the 1 % sync, and each against the full job; the synced
collection is checked to hold exactly the new tree's files. Files are in the page cache (just written).

Dedup: N synthetic unit embeddings (D=768 by default) with 1 % planted near-copies (cosine >= 0.98 to their
original), float32 .npy memory-mapped as `Index.open` maps shards; `near_duplicates(threshold=0.95)` runs in a
child process per size, which reports its time, its peak anonymous memory (sampled every 20 ms: what the
algorithm holds) and its peak RSS (including the memory-mapped embeddings, page cache the kernel can reclaim).
`--ann` also times `near_duplicates(ann=True)` from a usearch graph built in the child (build time apart).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from summary import machine, record  # noqa: E402

DEMO = ROOT / "models" / "siglip-demo-shapes"
FOLDERS = 100


def jpeg(path: Path, number: int, rng: np.random.Generator, bases: list[np.ndarray]) -> None:
    """A 64x64 JPEG: one of a few smooth base pictures with a random patch, so every file has distinct bytes."""
    pixels = bases[number % len(bases)].copy()
    y, x = rng.integers(0, 48, 2)
    pixels[y : y + 16, x : x + 16] = rng.integers(0, 256, 3, dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=85)


def write_tree(folder: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(0)
    grid = np.linspace(0, 255, 64, dtype=np.float32)
    bases = [np.stack([np.add.outer(grid * a, grid * (1 - a)) / 2] * 3, -1).astype(np.uint8) for a in (0.2, 0.5, 0.8)]
    paths = []
    for number in range(count):
        path = folder / f"{number % FOLDERS:03d}" / f"{number:07d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        jpeg(path, number, rng, bases)
        paths.append(path)
    return paths


def change_one_percent(folder: Path, paths: list[Path], count: int) -> tuple[int, int, int]:
    """Edit, delete and add `count` / 3 files each (1 % of the tree for count = N / 100)."""
    rng = np.random.default_rng(1)
    picked = random.Random(1).sample(range(len(paths)), 2 * (count // 3))
    edited, deleted = picked[: count // 3], picked[count // 3 :]
    grid = np.linspace(0, 255, 64, dtype=np.float32)
    bases = [np.stack([np.add.outer(grid, grid[::-1]) / 2] * 3, -1).astype(np.uint8)]
    for number in edited:
        jpeg(paths[number], number, rng, bases)
    for number in deleted:
        paths[number].unlink()
    for number in range(len(paths), len(paths) + count // 3):
        jpeg(folder / f"{number % FOLDERS:03d}" / f"new-{number:07d}.jpg", number, rng, bases)
    return len(edited), len(deleted), count // 3


def scan_seconds(folder: Path, out: Path) -> tuple[float, int]:
    """What a sync reads before deciding anything: the folder listing and a stat of every file (best of 3)."""
    from siglip.bulk.sources import list_source
    from siglip.bulk.sync import stat_items

    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        items = list_source(folder, exclude=out)
        stat_items(items)
        best = min(best, time.perf_counter() - started)
    return best, len(items.items)


def bench_sync(n: int, batch_size: int, workers: int | None) -> None:
    from siglip import Index
    from siglip.bulk import embed_source

    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        tree, out = Path(tmp) / "photos", Path(tmp) / "photos.emb"
        started = time.perf_counter()
        paths = write_tree(tree, n)
        print(f"wrote {n} JPEGs in {time.perf_counter() - started:.1f}s")
        options = dict(model=str(DEMO), batch_size=batch_size, workers=workers)
        full = embed_source(tree, out, **options)
        assert full.ok == n, full.line()
        print(f"full job: {full.changes}; {full.line()}")
        scan, listed = scan_seconds(tree, out)
        idle = embed_source(tree, out, **options)
        assert idle.shards == 0, idle.changes
        edited, deleted, added = change_one_percent(tree, paths, max(3, n // 100))
        scan_after, _ = scan_seconds(tree, out)
        sync = embed_source(tree, out, **options)
        print(f"1 % sync: {sync.changes}; {sync.line()}")
        assert sync.changes.startswith(f"+{added} new, {edited} changed, {deleted} deleted"), sync.changes
        present = sorted(os.path.relpath(p, tree) for p in tree.rglob("*.jpg"))
        assert sorted(Index.open(out).keys) == present
        embed_share = (edited + added) / n * full.seconds
        rows = [
            ("full job (every file embedded)", full.seconds, n),
            ("stat scan alone (listing + stat)", scan, listed),
            ("stat scan after the change", scan_after, listed),
            ("sync, nothing changed", idle.seconds, 0),
            (f"sync after 1 % changed ({edited} edited, {deleted} deleted, {added} new)", sync.seconds, edited + added),
            ("  expected: scan + 1 % of the full job's time", scan_after + embed_share, edited + added),
        ]
        print(f"\n| N = {n} | seconds | vs full job | files/s (scan) or embedded |")
        print("|---|---|---|---|")
        for name, seconds, count in rows:
            rate = f"{listed / seconds:,.0f} files/s" if "scan" in name and "expected" not in name else f"{count}"
            print(f"| {name} | {seconds:.2f} | {seconds / full.seconds:.3f}x | {rate} |")
        record(f"collection: sync after 1 % changed vs full job, N={n}", 1 / sync.seconds, 1 / full.seconds, "1/s")


# dedup --------------------------------------------------------------------------------------------------------


def planted_embeddings(path: Path, count: int, dim: int) -> int:
    """Unit rows written chunk by chunk into a .npy (never all in memory); 1 % are near-copies of an earlier
    row (noise of norm 0.1: cosine ~0.995). Returns the number of planted copies."""
    rng = np.random.default_rng(0)
    rows = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(count, dim))
    planted = 0
    for start in range(0, count, 65536):
        chunk = rng.standard_normal((min(65536, count - start), dim)).astype(np.float32)
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
        copies = np.nonzero(rng.random(len(chunk)) < 0.01)[0]
        copies = copies[(copies > 0) & ~np.isin(copies - 1, copies)]  # each a copy of an original row
        noise = rng.standard_normal((len(copies), dim)).astype(np.float32) * (0.1 / np.sqrt(dim))
        chunk[copies] = chunk[copies - 1] + noise
        chunk[copies] /= np.linalg.norm(chunk[copies], axis=1, keepdims=True)
        rows[start : start + len(chunk)] = chunk
        planted += len(copies)
    rows.flush()
    del rows
    return planted


def dedup_child(path: str, threshold: float, block: int, mode: str) -> None:
    """In a fresh process: open the embeddings memory-mapped, dedup (`mode` "exact", or "ann": build a usearch
    graph first, connectivity 16 / expansion 64, timed apart), print one JSON line of measurements."""
    from siglip import Index
    from siglip.bulk import near_duplicates

    peak = {"anon": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("RssAnon:"):
                        peak["anon"] = max(peak["anon"], int(line.split()[1]))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    rows = np.load(path, mmap_mode="r")
    index = Index([rows], [f"{i:07d}.jpg" for i in range(len(rows))])
    build = 0.0
    if mode == "ann":
        build = index.build_ann(connectivity=16, expansion_add=64, expansion_search=64, queries=100).build_seconds
    started = time.perf_counter()
    groups = near_duplicates(index, threshold, block=block, ann=mode == "ann")
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    with open("/proc/self/status") as status:
        hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    report = {"seconds": seconds, "build": build, "anon_mb": peak["anon"] / 1024, "rss_mb": hwm / 1024}
    report.update(grouped=len(groups.ids), groups=groups.groups)
    print(json.dumps(report))


def bench_dedup(sizes: list[int], dim: int, threshold: float, block: int, modes: list[str]) -> None:
    print("\n| N x D | mode | planted copies | groups found | items grouped | seconds | peak anon MB | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for count in sizes:
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
            path = Path(tmp) / "embeddings.npy"
            planted = planted_embeddings(path, count, dim)
            for mode in modes:
                command = [sys.executable, __file__, "--dedup-child", str(path), str(threshold), str(block), mode]
                child = subprocess.run(command, capture_output=True, text=True, check=True)
                report = json.loads(child.stdout.strip().splitlines()[-1])
                build = f" (+ {report['build']:.1f} graph build)" if mode == "ann" else ""
                print(
                    f"| {count:,} x {dim} | {mode} | {planted:,} | {report['groups']:,} | {report['grouped']:,} | "
                    f"{report['seconds']:.1f}{build} | {report['anon_mb']:.0f} | {report['rss_mb']:.0f} |",
                    flush=True,
                )
                record(f"dedup {mode}, {count} x {dim}", count / report["seconds"], 0, "items/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="JPEGs in the synthetic tree (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64, help="embedding batch size (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=None, help="decoding threads (default: the job's)")
    parser.add_argument("--dedup-sizes", type=int, nargs="*", default=[100_000, 1_000_000], help="embeddings")
    parser.add_argument("--dim", type=int, default=768, help="dedup embedding width (default: %(default)s)")
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--block", type=int, default=4096, help="dedup tile rows (default: %(default)s)")
    parser.add_argument("--skip-sync", action="store_true", help="only the dedup part")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs")
    parser.add_argument("--ann", action="store_true", help="also time dedup from a usearch graph (needs usearch)")
    parser.add_argument("--dedup-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dedup_child:
        path, threshold, block, mode = args.dedup_child
        dedup_child(path, float(threshold), int(block), mode)
        return
    if args.quick:
        args.n, args.dedup_sizes, args.dim = 600, [5000], 64
    print(f"machine: {machine()}")
    print(f"load average at start: {os.getloadavg()[0]:.2f} (1 min)")
    if not args.skip_sync:
        bench_sync(args.n, args.batch_size, args.workers)
    if args.dedup_sizes:
        bench_dedup(args.dedup_sizes, args.dim, args.threshold, args.block, ["exact"] + ["ann"] * args.ann)
    print(f"load average at end: {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
