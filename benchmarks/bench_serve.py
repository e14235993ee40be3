"""Load benchmark for `siglip serve`: N concurrent clients on 127.0.0.1 against /v1/embeddings.

Contenders, measured in interleaved rounds in one run: (a) `siglip serve` with dynamic batching, (b) the same
with batching off (`--max-batch-size 1`), (c) Infinity (`infinity-emb`, via `--infinity-python`; NOT yet
wired: skipped with a message), (d) the model's own offline batched throughput (the ceiling).
The clients are threads using the standard library's http.client (no extra dependency).

    .venv/bin/python benchmarks/bench_serve.py [--quick] [--clients 32] [--rounds 2]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from spm_model import train_sentencepiece_model  # noqa: E402


def make_checkpoint(folder: Path, layers: int) -> None:
    """A random-weight SigLIP (hidden 384, image 224 patch 16) in transformers' layout, with processor."""
    import transformers

    tokenizer = transformers.SiglipTokenizer(vocab_file=str(train_sentencepiece_model(folder / "spm")))
    tower = {"hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": layers, "num_attention_heads": 6}
    config = transformers.SiglipConfig(
        text_config={**tower, "vocab_size": tokenizer.vocab_size},
        vision_config={**tower, "image_size": 224, "patch_size": 16},
    )
    torch.manual_seed(0)
    transformers.SiglipModel(config).save_pretrained(folder)
    processor = transformers.SiglipProcessor(image_processor=transformers.SiglipImageProcessor(), tokenizer=tokenizer)
    processor.save_pretrained(folder)


def image_payload() -> str:
    """A 320x240 JPEG as a data: URI (decode + resize are part of the served cost)."""
    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), (120, 30, 200)).save(buffer, format="JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(checkpoint: Path, batch: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cmd = [
        str(Path(sys.executable).with_name("siglip")),
        "serve",
        "--model",
        str(checkpoint),
        "--port",
        str(port),
        "--max-batch-size",
        str(batch),
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return proc, port
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"server did not become ready: {' '.join(cmd)}")


def load(port: int, body: bytes, clients: int, requests: int) -> dict:
    """`clients` threads, each with one keep-alive connection, send `requests` in all; latency per request."""
    latencies: list[float] = []
    failures = [0]
    counter = iter(range(requests))
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            start = time.perf_counter()
            try:
                conn.request("POST", "/v1/embeddings", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except OSError:
                ok = False
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            with lock:
                (latencies.append(time.perf_counter() - start) if ok else None)
                failures[0] += not ok

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "rps": len(latencies) / wall,
        "p50": q[49] * 1e3,
        "p95": q[94] * 1e3,
        "p99": q[98] * 1e3,
        "failed": failures[0],
    }


def offline(checkpoint: Path, kind: str, batch: int, items: int) -> float:
    """Items/s of transformers' model on pre-processed batches (the ceiling: no HTTP, no decode)."""
    import transformers

    model = transformers.SiglipModel.from_pretrained(checkpoint).eval()
    processor = transformers.SiglipProcessor.from_pretrained(checkpoint)
    with torch.inference_mode():
        if kind == "text":
            inputs = processor(
                text=["a photo of a cat"] * batch, padding="max_length", max_length=64, return_tensors="pt"
            )
            run = lambda: model.get_text_features(input_ids=inputs["input_ids"])  # noqa: E731
        else:
            pixels = processor(images=[Image.new("RGB", (320, 240))] * batch, return_tensors="pt")["pixel_values"]
            run = lambda: model.get_image_features(pixel_values=pixels)  # noqa: E731
        run()
        start = time.perf_counter()
        done = 0
        while done < items:
            run()
            done += batch
        return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 layers, few requests (a smoke run)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests", type=int, default=None, help="requests per contender per round")
    parser.add_argument("--infinity-python", default=None, help="python of a venv with infinity-emb")
    args = parser.parse_args()
    layers = 2 if args.quick else 4
    requests = args.requests or (64 if args.quick else 320)
    if args.infinity_python is None or not Path(args.infinity_python).exists():
        print("infinity: skipped (no --infinity-python given / found)")
    else:
        print("infinity: not wired in this version of the benchmark; skipped")
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "ckpt"
        make_checkpoint(checkpoint, layers)
        bodies = {
            "text": json.dumps({"input": "a photo of a cat"}).encode(),
            "image": json.dumps({"input": [{"image": image_payload()}]}).encode(),
        }
        results: dict[tuple[str, str], list[dict]] = {}
        for _ in range(args.rounds):
            for name, batch in (("batching on", 32), ("batching off", 1)):
                proc, port = start_server(checkpoint, batch)
                try:
                    for kind, body in bodies.items():
                        load(port, body, args.clients, 8)  # warm-up
                        results.setdefault((name, kind), []).append(load(port, body, args.clients, requests))
                finally:
                    proc.terminate()
                    proc.wait(30)
            for kind in bodies:
                rps = offline(checkpoint, kind, 32, requests)
                results.setdefault(("offline ceiling", kind), []).append({"rps": rps})
    print(
        f"\n{layers}-layer hidden-384 SigLIP, 224/16, {args.clients} clients, {requests} req x {args.rounds} rounds, "
        f"{os.cpu_count()} CPUs (shared machine)\n"
    )
    print("| contender | input | req/s (best round) | p50 ms | p95 ms | p99 ms | failed |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for (name, kind), rows in results.items():
        best = max(rows, key=lambda row: row["rps"])
        cells = [f"{best[k]:.0f}" if k in best else "-" for k in ("p50", "p95", "p99")]
        failed = sum(row.get("failed", 0) for row in rows)
        print(f"| {name} | {kind} | {best['rps']:.1f} | {' | '.join(cells)} | {failed} |")


if __name__ == "__main__":
    main()
