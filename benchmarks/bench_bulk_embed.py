"""Bulk embedding throughput: `siglip.bulk.embed_source` (the `siglip embed DIR --out OUT` job) vs a plain loop.

    python benchmarks/bench_bulk_embed.py [--size base|small] [--images 256] [--resolution 1280x960] [--batch-size 16]
    python benchmarks/bench_bulk_embed.py --quick     # a few images: checks the script runs

The plain loop is what one writes by hand: for each batch, decode the JPEGs, run the processor, run the model,
then save one .npy at the end. The bulk job decodes upcoming batches in worker threads while the model runs and
writes resumable shards + a manifest. Both load the same random-weight SigLIP checkpoint (saved by transformers,
SentencePiece vocabulary from the tests) from disk inside the timed region, embed the same JPEGs (crops of the
fixture photos re-encoded at `--resolution`) and must give the same embeddings. Runs alternate, best kept.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from spm_model import train_sentencepiece_model  # noqa: E402
from summary import machine, record  # noqa: E402

import siglip  # noqa: E402
from siglip import Index  # noqa: E402
from siglip.bulk import embed_source  # noqa: E402
from siglip.encode import load_rgb  # noqa: E402

PHOTOS = ["chelsea.png", "astronaut.png", "coffee.png", "rocket.jpg", "horse.png", "retina.jpg"]
VISION = {  # vision towers: base = siglip-base-patch16-224; small = a ViT-S/16 sized tower
    "base": {},
    "small": {"hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 12, "num_attention_heads": 6},
}


def save_checkpoint(folder: Path, size: str) -> None:
    import transformers

    tokenizer = transformers.SiglipTokenizer(vocab_file=str(train_sentencepiece_model(folder / "spm")))
    text = {"vocab_size": tokenizer.vocab_size, "num_hidden_layers": 1}  # the text tower is not used here
    config = transformers.SiglipConfig(text_config=text, vision_config=VISION[size])
    torch.manual_seed(0)
    transformers.SiglipModel(config).save_pretrained(folder)
    processor = transformers.SiglipProcessor(image_processor=transformers.SiglipImageProcessor(), tokenizer=tokenizer)
    processor.save_pretrained(folder)


def write_photos(folder: Path, count: int, width: int, height: int) -> list[str]:
    """`count` JPEGs of width x height: random crops of the fixture photos, upscaled and re-encoded."""
    rng = random.Random(0)
    sources = [Image.open(ROOT / "tests" / "fixtures" / name).convert("RGB") for name in PHOTOS]
    folder.mkdir()
    for index in range(count):
        photo = sources[index % len(sources)]
        left, top = rng.randint(0, photo.width // 5), rng.randint(0, photo.height // 5)
        crop = photo.crop((left, top, left + photo.width * 4 // 5, top + photo.height * 4 // 5))
        crop.resize((width, height), Image.BICUBIC).save(folder / f"{index:05d}.jpg", quality=90)
    return sorted(str(path) for path in folder.iterdir())


def plain_loop(checkpoint: Path, paths: list[str], batch_size: int, out: Path) -> np.ndarray:
    """Decode a batch, preprocess it, run the model; repeat; save one array."""
    model = siglip.AutoModel.from_pretrained(checkpoint).eval()
    processor = siglip.AutoProcessor.from_pretrained(checkpoint)
    chunks = []
    for start in range(0, len(paths), batch_size):
        images = [load_rgb(path) for path in paths[start : start + batch_size]]
        pixels = processor(images=images, return_tensors="pt").pixel_values
        with torch.inference_mode():
            features = model.get_image_features(pixel_values=pixels)
        chunks.append(torch.nn.functional.normalize(features, dim=-1).numpy())
    embeddings = np.concatenate(chunks)
    np.save(out, embeddings)
    return embeddings


def bulk_job(checkpoint: Path, source: Path, batch_size: int, out: Path, workers: int | None) -> np.ndarray:
    summary = embed_source(source, out, model=str(checkpoint), batch_size=batch_size, workers=workers)
    assert summary.ok == summary.total, summary.line()
    index = Index.open(out)  # the collection's live items, in source order for a first job
    return index.vectors(np.arange(len(index)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(VISION), default="base", help="vision tower size")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--resolution", default="1280x960", help="WIDTHxHEIGHT of the JPEGs")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=None, help="decoding threads of the bulk job (default: its own)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each; the best is kept")
    parser.add_argument("--quick", action="store_true", help="small tower, 16 images, one run: checks the script runs")
    args = parser.parse_args()
    if args.quick:
        args.size, args.images, args.repeats = "small", 16, 1
    width, height = (int(side) for side in args.resolution.split("x"))
    print(f"machine: {machine()}")
    print(f"{args.size} vision tower, fp32; {args.images} JPEGs {width}x{height}; batch {args.batch_size}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoint = tmp / "checkpoint"
        save_checkpoint(checkpoint, args.size)
        paths = write_photos(tmp / "photos", args.images, width, height)
        best = {"plain loop": float("inf"), "bulk job": float("inf")}
        outputs = {}
        for repeat in range(args.repeats):
            for name in best:
                out = tmp / f"{name.replace(' ', '_')}_{repeat}"
                started = time.perf_counter()
                if name == "plain loop":
                    outputs[name] = plain_loop(checkpoint, paths, args.batch_size, out.with_suffix(".npy"))
                else:
                    outputs[name] = bulk_job(checkpoint, tmp / "photos", args.batch_size, out, args.workers)
                seconds = time.perf_counter() - started
                best[name] = min(best[name], seconds)
                print(f"  {name}: {seconds:.2f}s ({len(paths) / seconds:.2f} img/s)", flush=True)
        np.testing.assert_allclose(outputs["bulk job"], outputs["plain loop"], atol=1e-5)
    plain, bulk = len(paths) / best["plain loop"], len(paths) / best["bulk job"]
    print("\n| variant | img/s | seconds | vs plain loop |\n|---|---|---|---|")
    print(f"| plain decode-then-model loop | {plain:.2f} | {best['plain loop']:.2f} | 1.00x |")
    print(f"| siglip bulk job (embed_source) | {bulk:.2f} | {best['bulk job']:.2f} | {bulk / plain:.2f}x |")
    record(
        f"bulk embedding, {args.size} tower, {width}x{height} JPEGs",
        bulk,
        plain,
        "img/s",
        note="reference: plain decode-then-model loop",
    )


if __name__ == "__main__":
    main()
