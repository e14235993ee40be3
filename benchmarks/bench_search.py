"""Search latency of `siglip.Index`: exact (matmul over memory-mapped shards) vs ANN (usearch HNSW), with recall@10.

    python benchmarks/bench_search.py --sizes 100000 1000000 [--dim 768] [--queries 200]
    python benchmarks/bench_search.py --quick          # 20k vectors: checks the script runs

The collection is synthetic but clustered as real embeddings are: N unit vectors around N/100 random centres
(noise `--spread` per dimension relative to the centre), written as .npy shards of 65536 rows and opened
memory-mapped, as `Index.open` opens a bulk job's output. Queries are fresh draws from the same mixture (not
rows of the collection). Exact search is the reference: ANN recall@10 is the share of its top-10 the graph
returns. Latency is per query, one query at a time (median), and per query in one batch of all queries.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from summary import machine, record  # noqa: E402

from siglip import Index  # noqa: E402

SHARD_ROWS = 65536


class Mixture:
    """Unit vectors around fixed random centres: `draw(n)` gives n new ones."""

    def __init__(self, dim: int, centres: int, spread: float, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.centres = self.rng.standard_normal((centres, dim), dtype=np.float32)
        self.spread = spread

    def draw(self, count: int) -> np.ndarray:
        picked = self.centres[self.rng.integers(0, len(self.centres), count)]
        rows = picked + self.spread * self.rng.standard_normal(picked.shape, dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def write_collection(folder: Path, mixture: Mixture, count: int) -> list[np.ndarray]:
    """`count` rows as .npy shards in `folder`, returned as read-only memory maps."""
    shards = []
    for index, start in enumerate(range(0, count, SHARD_ROWS)):
        path = folder / f"shard-{index:05d}.npy"
        np.save(path, mixture.draw(min(SHARD_ROWS, count - start)))
        shards.append(np.load(path, mmap_mode="r"))
    return shards


def latency(collection: Index, queries: np.ndarray, *, ann: bool, single: int) -> tuple[float, float]:
    """(median seconds per query, one at a time over `single` queries; seconds per query in one batch)."""
    collection.search_arrays(queries[:1], 10, ann=ann)  # warm: page cache, graph
    times = []
    for query in queries[:single]:
        started = time.perf_counter()
        collection.search_arrays(query, 10, ann=ann)
        times.append(time.perf_counter() - started)
    started = time.perf_counter()
    collection.search_arrays(queries, 10, ann=ann)
    return statistics.median(times), (time.perf_counter() - started) / len(queries)


def bench(size: int, args: argparse.Namespace) -> dict[str, float]:
    mixture = Mixture(args.dim, max(1, size // 100), args.spread, seed=size)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        started = time.perf_counter()
        shards = write_collection(Path(tmp), mixture, size)
        collection = Index(shards, [str(i) for i in range(size)])
        print(f"  N={size}: wrote {len(shards)} shards in {time.perf_counter() - started:.1f}s", flush=True)
        queries = mixture.draw(args.queries)
        exact_single, exact_batched = latency(collection, queries, ann=False, single=args.single)
        print(f"  exact: {exact_single * 1e3:.1f} ms/query alone, {exact_batched * 1e3:.2f} ms/query batched")
        info = collection.build_ann(
            dtype=args.ann_dtype,
            connectivity=args.connectivity,
            expansion_add=args.expansion_add,
            expansion_search=args.expansion_search,
            queries=10,
        )
        print(f"  ANN build: {info.build_seconds:.1f}s", flush=True)
        ann_single, ann_batched = latency(collection, queries, ann=True, single=args.queries)
        recall = collection.recall(queries, 10)
        print(f"  ANN: {ann_single * 1e3:.3f} ms/query alone, {ann_batched * 1e3:.3f} ms/query batched")
        print(f"  recall@10 vs exact: {recall:.4f} over {len(queries)} queries", flush=True)
        del collection, shards
    return {
        "exact_single_ms": exact_single * 1e3,
        "exact_batched_ms": exact_batched * 1e3,
        "ann_single_ms": ann_single * 1e3,
        "ann_batched_ms": ann_batched * 1e3,
        "build_s": info.build_seconds,
        "recall": recall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="collection sizes")
    parser.add_argument("--dim", type=int, default=768, help="embedding width (SigLIP base: 768)")
    parser.add_argument("--spread", type=float, default=0.8, help="noise per dimension around a centre")
    parser.add_argument("--queries", type=int, default=200, help="queries (recall, ANN latency, batch)")
    parser.add_argument("--single", type=int, default=20, help="queries timed one at a time for exact search")
    parser.add_argument("--ann-dtype", default="f16", help="usearch vector type")
    parser.add_argument("--connectivity", type=int, default=16)
    parser.add_argument("--expansion-add", type=int, default=64)
    parser.add_argument("--expansion-search", type=int, default=64)
    parser.add_argument("--tmp", default=None, help="folder for the shards (default: the system's temp folder)")
    parser.add_argument("--quick", action="store_true", help="20k vectors, 50 queries: checks the script runs")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.queries, args.single = [20_000], 50, 10
    print(f"machine: {machine()}")
    print(
        f"D={args.dim}, float32 shards (memory-mapped), usearch {args.ann_dtype} HNSW connectivity={args.connectivity} "
        f"expansion_add={args.expansion_add} expansion_search={args.expansion_search}, {args.queries} queries"
    )
    results = {}
    for size in args.sizes:
        results[size] = bench(size, args)
    print(
        "\n| N | exact ms/query (alone) | exact ms/query (batch) | ANN ms/query (alone) | ANN ms/query (batch) "
        "| speed-up alone | ANN build s | recall@10 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for size, r in results.items():
        speedup = r["exact_single_ms"] / r["ann_single_ms"]
        print(
            f"| {size:,} | {r['exact_single_ms']:.1f} | {r['exact_batched_ms']:.2f} | {r['ann_single_ms']:.3f} "
            f"| {r['ann_batched_ms']:.3f} | {speedup:.0f}x | {r['build_s']:.0f} | {r['recall']:.3f} |"
        )
        record(
            f"search latency, N={size:,} D={args.dim} (ANN vs exact)",
            1e3 / r["ann_single_ms"],
            1e3 / r["exact_single_ms"],
            "queries/s",
            note=f"recall@10 {r['recall']:.3f}",
        )


if __name__ == "__main__":
    main()
