"""Render an evaluation dataset the demo model can recognise: OUT/train/SHAPE/*.png and OUT/test/SHAPE/*.png,
drawn by the generator it was trained with (`siglip.train.synthetic`, every colour x shape combination, 1/6 of
them never seen in training), `--per-class` images per shape and split. Deterministic: the same folder each run.

    python examples/make_shapes_dataset.py shapes-eval/ --per-class 20
    siglip eval zero-shot shapes-eval/ -m models/siglip-demo-shapes
"""

from __future__ import annotations

import argparse
from pathlib import Path

from siglip.train.synthetic import SHAPES, ShapesDataset


def render(out: Path, per_class: int, seed: int = 0) -> int:
    written = 0
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
            image.save(folder / f"{index:05d}-{sample.colour}-{sample.background}.png")
            counts[sample.shape] += 1
            written += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write (train/ and test/ class folders)")
    parser.add_argument("--per-class", type=int, default=20, help="images per shape and split (default: 20)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    count = render(args.out, args.per_class, args.seed)
    print(f"{count} images in {args.out}/train and {args.out}/test, {len(SHAPES)} classes: {', '.join(SHAPES)}")


if __name__ == "__main__":
    main()
