"""Load benchmark for `siglip serve`: N concurrent clients on 127.0.0.1 against the embeddings endpoint.

Contenders, one server at a time, in interleaved rounds (the order rotates each round), same checkpoint folder:
  (a) `siglip serve` with dynamic batching (`--max-batch-size 32`), with its default `--max-wait-ms 5` and with
      `--max-wait-ms 0` (no waiting: a batch is whatever queued while the previous one ran),
  (b) the same with batching off (`--max-batch-size 1`), and with batching on under uvloop (`--loop uvloop`;
      the default is asyncio's own loop),
  (c) Infinity (`infinity_emb v2 --engine torch --device cpu --batch-size 32`) from its own venv
      (`--infinity-python`; skipped with a message when absent: its pins clash with ours, see below),
  (d) siglip offline in-process, batches of 32, the same work as a request minus HTTP: JPEG decode +
      preprocessing + model for images, tokenisation + model for texts (the ceiling), and the bare model on
      ready tensors (for reference).
Requests: one text ("a photo of a cat ...") or one 320x240 JPEG (data: URI) per request, closed loop: every
client sends its next request when the previous one is answered. Then, for siglip with batching (both waits),
an open loop at half the default's saturating rate (requests spaced evenly, answered or not) for p50 / p99 at
half load. Exactness: one text and one image embedding from each server against siglip's own normalised
get_*_features (cosine).

    .venv/bin/python benchmarks/bench_serve.py --quick                      # smoke run (2 layers, few requests)
    .venv/bin/python benchmarks/bench_serve.py --infinity-python /tmp/infvenv/bin/python --out results_serve.md

Infinity's venv (it pins torch/transformers 4.x; never install it into ours):
    python -m venv /tmp/infvenv && /tmp/infvenv/bin/pip install torch==2.13.0 \\
        'infinity-emb[server,torch,vision]' 'transformers==4.57.6' sentencepiece protobuf aiohttp \\
        && /tmp/infvenv/bin/pip uninstall -y torchvision
(transformers 4.47, which pip picks otherwise, cannot read the processor files; PyPI's torchvision does not
load beside torch 2.13.0, and Infinity runs without it.)
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import shutil
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

TEXT = "a photo of a cat sleeping on a red sofa next to a window"
BATCH = 32


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


def infinity_copy(checkpoint: Path, folder: Path) -> Path:
    """The checkpoint with its processor files in the transformers 4.x layout Infinity's pinned transformers reads
    (no `extra_special_tokens` list, a preprocessor_config.json); weights and vocabulary unchanged."""
    shutil.copytree(checkpoint, folder)
    tokenizer = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer.pop("extra_special_tokens", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer))
    processor = json.loads((folder / "processor_config.json").read_text())
    image = {**processor["image_processor"], "processor_class": "SiglipProcessor"}
    (folder / "preprocessor_config.json").write_text(json.dumps(image))
    return folder


def jpeg_bytes() -> bytes:
    """A 320x240 JPEG with some structure (decode + resize are part of the served cost)."""
    image = Image.radial_gradient("L").resize((320, 240)).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def data_uri(data: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(data).decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A contender's process, its port and how it spells an embeddings request."""

    def __init__(
        self,
        name: str,
        command: list[str],
        path: str,
        bodies: dict[str, dict],
        env: dict | None = None,
        half_load: bool = False,
    ):
        self.name, self.command, self.path, self.bodies, self.env = name, command, path, bodies, env
        self.half_load = half_load  # also measured open loop at half of the first contender's saturating rate
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self) -> None:
        self.port = free_port()
        command = [part.replace("{port}", str(self.port)) for part in self.command]
        env = {**os.environ, **(self.env or {})}
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {' '.join(command)}")
            try:
                status, _ = post(self.port, self.path, self.body("text"))
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer within 180 s: {' '.join(command)}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def body(self, kind: str) -> bytes:
        return json.dumps(self.bodies[kind]).encode()


def post(port: int, path: str, body: bytes, conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("POST", path, body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, response.read()


def summary(latencies: list[float], failures: int, wall: float) -> dict:
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {"rps": len(latencies) / wall, "p50": q[49] * 1e3, "p99": q[98] * 1e3, "failed": failures}


def closed_loop(server: Server, kind: str, clients: int, requests: int) -> dict:
    """`clients` threads with one keep-alive connection each send `requests` in all, back to back."""
    latencies: list[float] = []
    failures = [0]
    counter = iter(range(requests))
    lock = threading.Lock()
    body = server.body(kind)

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            start = time.perf_counter()
            try:
                ok = post(server.port, server.path, body, conn)[0] == 200
            except OSError:
                ok = False
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
            with lock:
                latencies.append(time.perf_counter() - start) if ok else None
                failures[0] += not ok

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return summary(latencies, failures[0], time.perf_counter() - start)


def open_loop(server: Server, kind: str, rate: float, requests: int) -> dict:
    """`requests` sent at `rate` per second (evenly spaced, each on its own thread), whatever the answers."""
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    body = server.body(kind)

    def one() -> None:
        start = time.perf_counter()
        try:
            ok = post(server.port, server.path, body)[0] == 200
        except OSError:
            ok = False
        with lock:
            latencies.append(time.perf_counter() - start) if ok else None
            failures[0] += not ok

    threads = []
    start = time.perf_counter()
    for index in range(requests):
        time.sleep(max(0.0, start + index / rate - time.perf_counter()))
        threads.append(threading.Thread(target=one))
        threads[-1].start()
    for thread in threads:
        thread.join()
    return summary(latencies, failures[0], time.perf_counter() - start)


def first_embedding(server: Server, kind: str) -> torch.Tensor:
    status, payload = post(server.port, server.path, server.body(kind))
    if status != 200:
        raise RuntimeError(f"{server.name} answered {status}: {payload[:200]!r}")
    vector = torch.tensor(json.loads(payload)["data"][0]["embedding"], dtype=torch.float32)
    return vector / vector.norm()


def offline(checkpoint: Path, image: bytes, items: int) -> dict[str, float]:
    """siglip in-process, batches of BATCH: items/s with preprocessing (the ceiling) and of the bare model."""
    from siglip import AutoModel, AutoProcessor
    from siglip.encode import encode_texts, load_rgb

    model, processor = AutoModel.from_pretrained(checkpoint).eval(), AutoProcessor.from_pretrained(checkpoint)
    pixels = processor(images=[load_rgb(image)] * BATCH, return_tensors="pt")["pixel_values"]
    ids = processor(text=[TEXT] * BATCH, padding="max_length", max_length=64, return_tensors="pt")["input_ids"]
    runs = {
        "text": lambda: encode_texts(model, processor, [TEXT] * BATCH, batch_size=BATCH),
        "image": lambda: model.get_image_features(
            **processor(images=[load_rgb(image) for _ in range(BATCH)], return_tensors="pt")
        ),
        "text (model only)": lambda: model.get_text_features(input_ids=ids),
        "image (model only)": lambda: model.get_image_features(pixel_values=pixels),
    }
    rates = {}
    with torch.inference_mode():
        for name, run in runs.items():
            run()
            start, done = time.perf_counter(), 0
            while done < items:
                run()
                done += BATCH
            rates[name] = done / (time.perf_counter() - start)
    return rates


def reference_embeddings(checkpoint: Path, image: bytes) -> dict[str, torch.Tensor]:
    from siglip import AutoModel, AutoProcessor
    from siglip.encode import encode_texts, load_rgb

    model, processor = AutoModel.from_pretrained(checkpoint).eval(), AutoProcessor.from_pretrained(checkpoint)
    with torch.inference_mode():
        pixels = processor(images=[load_rgb(image)], return_tensors="pt")["pixel_values"]
        vision = model.get_image_features(pixel_values=pixels)[0]
        return {"text": encode_texts(model, processor, [TEXT])[0], "image": vision / vision.norm()}


def contenders(checkpoint: Path, tmp: Path, uri: str, infinity_python: str | None) -> list[Server]:
    siglip = str(Path(sys.executable).with_name("siglip"))
    ours = {"text": {"input": TEXT}, "image": {"input": [{"image": uri}]}}
    servers = [
        Server(
            f"siglip serve, batching on (max batch {BATCH})",
            [siglip, "serve", "-m", str(checkpoint), "--port", "{port}", "--max-batch-size", str(BATCH),
             "--log-level", "warning"],
            "/v1/embeddings",
            ours,
            half_load=True,
        ),
        Server(
            f"siglip serve, batching on (max batch {BATCH}), --max-wait-ms 0",
            [siglip, "serve", "-m", str(checkpoint), "--port", "{port}", "--max-batch-size", str(BATCH),
             "--max-wait-ms", "0", "--log-level", "warning"],
            "/v1/embeddings",
            ours,
            half_load=True,
        ),
        Server(
            "siglip serve, batching off (max batch 1)",
            [siglip, "serve", "-m", str(checkpoint), "--port", "{port}", "--max-batch-size", "1",
             "--log-level", "warning"],
            "/v1/embeddings",
            ours,
        ),
        Server(
            "siglip serve, batching on, uvloop (--loop uvloop)",
            [siglip, "serve", "-m", str(checkpoint), "--port", "{port}", "--max-batch-size", str(BATCH),
             "--loop", "uvloop", "--log-level", "warning"],
            "/v1/embeddings",
            ours,
        ),
    ]  # fmt: skip
    if infinity_python is None or not Path(infinity_python).exists():
        print("infinity: skipped (no --infinity-python venv given or found; see the docstring)")
        return servers
    executable = Path(infinity_python).with_name("infinity_emb")
    folder = infinity_copy(checkpoint, tmp / "infinity-ckpt")
    servers.append(
        Server(
            f"Infinity {infinity_version(infinity_python)} (torch engine, batch {BATCH})",
            [str(executable), "v2", "--model-id", str(folder), "--served-model-name", "ckpt", "--host", "127.0.0.1",
             "--port", "{port}", "--device", "cpu", "--engine", "torch", "--batch-size", str(BATCH),
             "--log-level", "warning"],
            "/embeddings",
            {"text": {"model": "ckpt", "input": [TEXT]},
             "image": {"model": "ckpt", "input": [uri], "modality": "image"}},
            env={"HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"},
        )
    )  # fmt: skip
    return servers


def infinity_version(python: str) -> str:
    result = subprocess.run(
        [python, "-c", "import importlib.metadata as m; print(m.version('infinity_emb'))"],
        capture_output=True,
        text=True,
    )
    return result.stdout.strip() or "?"


def cpu_load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 layers, few requests (a smoke run)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=None, help="requests per contender, input and round")
    parser.add_argument("--layers", type=int, default=None, help="layers per tower (default 4, --quick 2)")
    parser.add_argument("--infinity-python", default=None, help="python of a venv with infinity-emb")
    parser.add_argument("--out", default=None, help="also write the report (markdown) to this file")
    args = parser.parse_args()
    layers = args.layers or (2 if args.quick else 4)
    requests = args.requests or (64 if args.quick else 320)
    image = jpeg_bytes()
    lines = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        checkpoint = tmp / "ckpt"
        make_checkpoint(checkpoint, layers)
        servers = contenders(checkpoint, tmp, data_uri(image), args.infinity_python)
        reference = reference_embeddings(checkpoint, image)
        load_before = cpu_load()
        results: dict[tuple[str, str], list[dict]] = {}
        exactness: dict[str, dict[str, float]] = {}
        half_load: dict[tuple[str, str], dict] = {}
        for round_index in range(args.rounds):
            order = servers[round_index % len(servers) :] + servers[: round_index % len(servers)]
            for server in order:
                server.start()
                try:
                    for kind in ("text", "image"):
                        closed_loop(server, kind, args.clients, max(8, args.clients))  # warm-up
                        row = closed_loop(server, kind, args.clients, requests)
                        results.setdefault((server.name, kind), []).append(row)
                        print(f"round {round_index + 1}: {server.name}, {kind}: {row['rps']:.1f} req/s", flush=True)
                    exactness[server.name] = {
                        kind: float(first_embedding(server, kind) @ reference[kind]) for kind in ("text", "image")
                    }
                    if server.half_load and round_index == args.rounds - 1:
                        for kind in ("text", "image"):
                            rate = statistics.median(r["rps"] for r in results[(servers[0].name, kind)]) / 2
                            row = open_loop(server, kind, rate, requests // 2)
                            half_load[(server.name, kind)] = {"rate": rate, **row}
                finally:
                    server.stop()
            for name, rate in offline(checkpoint, image, requests).items():
                results.setdefault((f"siglip offline, batches of {BATCH}", name), []).append({"rps": rate})
    lines.append(
        f"{layers}-layer hidden-384 SigLIP (224 px, patch 16), random weights; {args.clients} concurrent clients, "
        f"{requests} requests per contender, input and round, {args.rounds} rounds (order rotated); "
        f"{os.cpu_count()} CPUs ({cpu_model()}), torch {torch.__version__}; load average before: {load_before}\n"
    )
    lines.append("| contender | input | req/s (median) | rounds | p50 ms | p99 ms | failed | cosine to siglip |")
    lines.append("|---|---|---:|---|---:|---:|---:|---:|")
    for (name, kind), rows in results.items():
        rates = [row["rps"] for row in rows]
        middle = sorted(rows, key=lambda row: row["rps"])[len(rows) // 2]
        cells = [f"{middle[k]:.0f}" if k in middle else "-" for k in ("p50", "p99")]
        failed = sum(row.get("failed", 0) for row in rows)
        cosine = f"{exactness[name][kind]:.6f}" if name in exactness else "-"
        spread = " / ".join(f"{rate:.1f}" for rate in rates)
        lines.append(
            f"| {name} | {kind} | {statistics.median(rates):.1f} | {spread} | {' | '.join(cells)} | {failed} | "
            f"{cosine} |"
        )
    if half_load:
        lines.append(
            f"\nHalf load: open loop (evenly spaced requests) at half of {servers[0].name}'s saturating rate, "
            f"{requests // 2} requests, in the last round:\n"
        )
        lines.append("| contender | input | offered req/s | p50 ms | p99 ms | p99 / p50 | failed |")
        lines.append("|---|---|---:|---:|---:|---:|---:|")
        for (name, kind), row in half_load.items():
            ratio = row["p99"] / row["p50"] if row["p50"] else float("nan")
            lines.append(
                f"| {name} | {kind} | {row['rate']:.1f} | {row['p50']:.0f} | {row['p99']:.0f} | {ratio:.2f} | "
                f"{row['failed']} |"
            )
    report = "\n".join(lines)
    print("\n" + report)
    if args.out:
        Path(args.out).write_text(report + "\n")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
