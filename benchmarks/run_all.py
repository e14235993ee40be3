"""Every benchmark, one after the other, and one table of their headline figures.

    python benchmarks/run_all.py            # the full suite (about an hour on the 2-core CPU)
    python benchmarks/run_all.py --quick    # smaller sizes, a few minutes: a smoke run, not figures to quote
    python benchmarks/run_all.py --only tokenizer pipeline

Each script also prints its own detailed table (kept in the log); the summary at the end collects the rows
they `record` (see summary.py): ours, the reference measured in the same run, the ratio, the target and, for
the model towers, the share of the GEMM peak measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from summary import ROWS_ENV, machine  # noqa: E402

# name -> (script, full-run arguments, quick-run arguments)
SUITE = {
    "models": ("bench_models.py", [], ["--quick"]),
    "pipeline": (
        "bench_pipeline.py",
        ["--images", "256", "--labels", "100"],
        ["--images", "8", "--labels", "10", "--reference-images", "1"],
    ),
    "preprocessing": ("bench_image_processing.py", [], ["--quick"]),
    "tokenizer": ("bench_tokenizer.py", [], ["--quick"]),
    "siglip2": ("bench_siglip2.py", [], ["--quick"]),
    "loss": ("bench_loss.py", [], ["--quick"]),
    "bulk-embed": ("bench_bulk_embed.py", [], ["--quick"]),
    "search": ("bench_search.py", [], ["--quick"]),
    "collection": ("bench_collection.py", [], ["--quick"]),
    "cpu-runtimes": ("bench_cpu_runtimes.py", [], ["--quick"]),
    "serve": ("bench_serve.py", [], ["--quick", "--rounds", "1"]),
    "eval": ("bench_eval.py", [], ["--quick"]),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the scripts run, quick")
    parser.add_argument("--only", nargs="+", choices=sorted(SUITE), default=None, help="run just these")
    args = parser.parse_args()
    names = args.only or list(SUITE)
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        rows_file = Path(tmp) / "rows.jsonl"
        rows_file.touch()
        env = {**os.environ, ROWS_ENV: str(rows_file)}
        for name in names:
            script, full, quick = SUITE[name]
            command = [sys.executable, str(HERE / script), *(quick if args.quick else full)]
            print(f"\n===== {name}: {' '.join(command[1:])}", flush=True)
            if subprocess.run(command, env=env).returncode != 0:
                failed.append(name)
        rows = [json.loads(line) for line in rows_file.read_text().splitlines() if line.strip()]
    print(f"\n===== summary ({'quick run: not figures to quote' if args.quick else 'full run'})")
    print(f"machine: {machine()}\n")
    print(table(rows))
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


def table(rows: list[dict]) -> str:
    lines = [
        "| figure | siglip | reference | ratio | target | % of GEMM peak | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else "-"
        peak = f"{row['peak_percent']:.0f} %" if row.get("peak_percent") is not None else "-"
        lines.append(
            f"| {row['figure']} | {row['ours']:.4g} {row['unit']} | {row['reference']:.4g} {row['unit']} | {ratio} "
            f"| {row['target']} | {peak} | {row['note']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
