"""Zero-shot pipeline, end to end on a folder of JPEGs: siglip vs transformers' pipeline, in one run.

    python benchmarks/bench_pipeline.py [--images 256] [--labels 100] [--dtype float32] [--reference-images 4]

Both sides load the same random-weight base-patch16-224 SigLIP (saved by transformers with its processor
files; SentencePiece vocabulary from the tests) and classify the same JPEGs (crops of the fixture photos,
640x480) against the same K labels. The reference re-encodes all K prompts for every image, so it is timed
on `--reference-images` images and scaled linearly to N (said so in the table). Scores are checked to agree
on those images before any timing is printed.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from spm_model import train_sentencepiece_model  # noqa: E402
from summary import machine, record  # noqa: E402

import siglip  # noqa: E402

PHOTOS = ["chelsea.png", "astronaut.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg"]
WORDS = "cat dog car bird tree house boat plane horse cup pizza rocket bike train flower".split()
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def make_checkpoint(folder: Path) -> None:
    import transformers

    tokenizer = transformers.SiglipTokenizer(vocab_file=str(train_sentencepiece_model(folder / "spm")))
    config = transformers.SiglipConfig(text_config={"vocab_size": tokenizer.vocab_size})  # base-patch16-224
    torch.manual_seed(0)
    transformers.SiglipModel(config).save_pretrained(folder)
    image_processor = transformers.SiglipImageProcessor()
    transformers.SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)


def make_jpegs(folder: Path, count: int) -> list[str]:
    """`count` 640x480 JPEGs: random crops of the fixture photos."""
    rng = random.Random(0)
    photos = [Image.open(ROOT / "tests" / "fixtures" / name).convert("RGB") for name in PHOTOS]
    paths = []
    for index in range(count):
        photo = photos[index % len(photos)]
        width, height = photo.size
        left, top = rng.randint(0, width // 4), rng.randint(0, height // 4)
        crop = photo.crop((left, top, left + width * 3 // 4, top + height * 3 // 4)).resize((640, 480))
        paths.append(str(folder / f"{index:05d}.jpg"))
        crop.save(paths[-1], quality=90)
    return paths


def make_labels(count: int) -> list[str]:
    rng = random.Random(1)
    return [f"a {rng.choice(WORDS)} next to a {rng.choice(WORDS)} number {index}" for index in range(count)]


def tower_bound_seconds(pipe, paths: list[str], labels: list[str], batch_size: int) -> float:
    """The work no pipeline can avoid: the image tower on N preprocessed images + one encode of the K prompts."""
    from siglip.encode import encode_texts, load_rgb, model_inputs

    model, processor = pipe.model, pipe.processor
    prompts = [siglip.zero_shot.DEFAULT_TEMPLATE.format(label) for label in labels]
    pixels = processor(images=[load_rgb(path) for path in paths[:batch_size]], return_tensors="pt")
    pixels = model_inputs(pixels, model.device, model.dtype)
    start = time.perf_counter()
    with torch.inference_mode():
        for begin in range(0, len(paths), batch_size):
            count = min(batch_size, len(paths) - begin)
            model.get_image_features(**{key: value[:count] for key, value in pixels.items()})
    encode_texts(model, processor, prompts, pipe.text_batch_size)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--labels", type=int, default=100)
    parser.add_argument("--reference-images", type=int, default=4, help="images the reference is timed on")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import transformers

    transformers.logging.set_verbosity_error()
    dtype = DTYPES[args.dtype]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_checkpoint(folder / "model")
        (folder / "images").mkdir()
        paths = make_jpegs(folder / "images", args.images)
        labels = make_labels(args.labels)

        reference = transformers.pipeline("zero-shot-image-classification", model=str(folder / "model"), dtype=dtype)
        ours = siglip.pipeline("zero-shot-image-classification", model=str(folder / "model"), dtype=dtype)
        ours.batch_size = args.batch_size
        subset = paths[: args.reference_images]
        ours(subset[:1], candidate_labels=labels[:2])  # warm-up (thread pools, first-call allocations)
        ours.clear_cache()

        start = time.perf_counter()
        expected = [reference(path, candidate_labels=labels) for path in subset]
        reference_seconds = (time.perf_counter() - start) / len(subset) * len(paths)

        start = time.perf_counter()
        got = ours(paths, candidate_labels=labels)
        our_seconds = time.perf_counter() - start
        bound_seconds = tower_bound_seconds(ours, paths, labels, args.batch_size)

    worst = max(
        abs({r["label"]: r["score"] for r in mine}[item["label"]] - item["score"])
        for mine, theirs in zip(got, expected)
        for item in theirs
    )
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    assert worst <= tolerance, f"scores differ from the reference by {worst}"
    print(f"machine: {machine()}, transformers {transformers.__version__}")
    print(f"model: random base-patch16-224, {args.dtype}; N={len(paths)} JPEGs 640x480, K={len(labels)} labels")
    print(f"max |score diff| vs reference on {len(subset)} images: {worst:.2e}\n")
    print("| pipeline | images/s | seconds for N | ratio |")
    print("|---|---|---|---|")
    print(
        f"| transformers (timed on {len(subset)}, scaled to N) | {len(paths) / reference_seconds:.3f} "
        f"| {reference_seconds:.1f} | 1.0x |"
    )
    print(f"| siglip | {len(paths) / our_seconds:.2f} | {our_seconds:.1f} | {reference_seconds / our_seconds:.1f}x |")
    print(
        f"| bound: image tower on N preprocessed + one encode of K prompts | {len(paths) / bound_seconds:.2f} "
        f"| {bound_seconds:.1f} | {reference_seconds / bound_seconds:.1f}x |"
    )
    print(f"\nsiglip pipeline / bound = {our_seconds / bound_seconds:.2f} (decode + preprocess + scoring overhead)")
    figure = f"P3 zero-shot pipeline, {args.dtype}, N={len(paths)} x K={len(labels)}"
    scaled = f"reference timed on {len(subset)} images, scaled to N"
    record(figure, len(paths) / our_seconds, len(paths) / reference_seconds, "img/s", target=">= 25x", note=scaled)
    record(
        f"P3 pipeline vs its bound (image tower + one label encode), {args.dtype}",
        len(paths) / our_seconds,
        len(paths) / bound_seconds,
        "img/s",
        target=">= 0.91x (within 1.1x)",
        note="reference column = the bound",
    )


if __name__ == "__main__":
    main()
