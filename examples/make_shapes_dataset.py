"""Render an evaluation dataset the demo model can recognise: OUT/train/SHAPE/*.png and OUT/test/SHAPE/*.png,
drawn by the generator it was trained with (`siglip.train.synthetic`, every colour x shape combination, 1/6 of
them never seen in training), `--per-class` images per shape and split, and OUT/captions.csv (image, caption,
split: "a COLOUR SHAPE" and "a COLOUR SHAPE on a BACKGROUND background" per image) for retrieval. Deterministic.

    python examples/make_shapes_dataset.py shapes-eval/ --per-class 20
    siglip eval zero-shot shapes-eval/ -m models/siglip-demo-shapes
    siglip eval retrieval shapes-eval/captions.csv -m models/siglip-demo-shapes
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from siglip.train.synthetic import SHAPES, ShapesDataset


def render(out: Path, per_class: int, seed: int = 0) -> int:
    written = 0
    rows = []
    for number, split in enumerate(("train", "test")):
        dataset = ShapesDataset(10**9, split="eval", seed=seed * 2 + number + 100)
        counts = dict.fromkeys(SHAPES, 0)
        index = 0
        while min(counts.values()) < per_class:
            image, _, sample = dataset.sample(index)
            index += 1
            if counts[sample.shape] >= per_class:
                continue
            folder = out / split / sample.shape
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{index:05d}-{sample.colour}-{sample.background}.png"
            image.save(path)
            relative = path.relative_to(out).as_posix()
            rows.append((relative, f"a {sample.colour} {sample.shape}", split))
            rows.append((relative, f"a {sample.colour} {sample.shape} on a {sample.background} background", split))
            counts[sample.shape] += 1
            written += 1
    with open(out / "captions.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("image", "caption", "split"))
        writer.writerows(rows)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write (train/ and test/ class folders)")
    parser.add_argument("--per-class", type=int, default=20, help="images per shape and split (default: 20)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    count = render(args.out, args.per_class, args.seed)
    print(f"{count} images in {args.out}/train and {args.out}/test, {len(SHAPES)} classes: {', '.join(SHAPES)}")
    print(f"captions (two per image) in {args.out}/captions.csv")


if __name__ == "__main__":
    main()
