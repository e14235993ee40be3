"""Synthetic image-caption data: coloured shapes on coloured backgrounds, generated on the fly.

Every sample is a pure function of (seed, index): the same index gives the same image and caption in any
process or DataLoader worker, which makes data order, sharding and exact resumption trivial. Some
colour x shape combinations (`HELD_OUT`) never appear in training; the evaluation split contains them, so
zero-shot accuracy on them measures compositional generalisation rather than memorisation.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image, ImageDraw

from ..text.vocabulary import train_spiece_model

# Six shapes that stay distinct at 32 px (hexagon and diamond, tried first, blur into circle and square there).
SHAPES = ("circle", "square", "triangle", "star", "cross", "heart")
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 220, 30),
    "orange": (245, 140, 20),
    "purple": (140, 40, 180),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
# Neutral backgrounds; a sample never uses its shape colour as background. (With the eight colours as backgrounds
# too, the background explained 80 % of a fresh image tower's embedding variance and the small ViT learned shape
# far more slowly: 18 % vs 60 % supervised accuracy after 300 steps.)
BACKGROUNDS = {"gray": (128, 128, 128), "white": COLOURS["white"], "black": COLOURS["black"]}
# One unseen shape per colour, every shape unseen in at least one colour: 8 of the 48 combinations.
HELD_OUT = frozenset((colour, SHAPES[i % len(SHAPES)]) for i, colour in enumerate(COLOURS))
SIZES = {"small": (0.45, 0.52), "medium": (0.58, 0.66), "large": (0.72, 0.8)}  # shape width / image side
JITTER = 0.12  # the centre moves up to this fraction of the side from the middle (shapes stay inside)

# Two short templates, half the captions naming the shape alone. Longer templates ("a small red circle on a gray
# background", ...) made the fixed random text targets of the first training phase too noisy for the image tower
# to learn shape from (see docs/training.md, "The demo model").
TEMPLATES = ("a {colour} {shape}", "a {shape}")
# Prompts for zero-shot evaluation (also what a user would type): the training templates. Colour is read off the
# predicted colour x shape prompt (there is no colour-only caption).
SHAPE_PROMPT = "a {}"
COMBO_PROMPT = "a {} {}"


@dataclass(frozen=True)
class ShapeSample:
    """What one synthetic image shows."""

    shape: str
    colour: str
    background: str
    size: str

    @property
    def combo(self) -> str:
        return f"{self.colour} {self.shape}"


def combos(split: str) -> list[tuple[str, str]]:
    """(colour, shape) pairs of a split: "train" (seen), "unseen" (held out) or "all"."""
    pairs = [(colour, shape) for colour in COLOURS for shape in SHAPES]
    if split == "train":
        return [pair for pair in pairs if pair not in HELD_OUT]
    if split == "unseen":
        return [pair for pair in pairs if pair in HELD_OUT]
    return pairs


def describe(rng: random.Random, pairs: list[tuple[str, str]]) -> ShapeSample:
    colour, shape = rng.choice(pairs)
    background = rng.choice([name for name in BACKGROUNDS if name != colour])
    return ShapeSample(shape, colour, background, rng.choice(list(SIZES)))


def caption(sample: ShapeSample, rng: random.Random) -> str:
    template = rng.choice(TEMPLATES)
    return template.format(shape=sample.shape, colour=sample.colour, background=sample.background, size=sample.size)


def _polygon(cx: float, cy: float, radius: float, sides: int, rotation: float) -> list[tuple[float, float]]:
    return [
        (
            cx + radius * math.cos(rotation + 2 * math.pi * k / sides),
            cy + radius * math.sin(rotation + 2 * math.pi * k / sides),
        )
        for k in range(sides)
    ]


def _star(cx: float, cy: float, radius: float, rotation: float) -> list[tuple[float, float]]:
    points = []
    for k in range(10):
        r = radius if k % 2 == 0 else radius * 0.45
        angle = rotation + math.pi * k / 5
        points.append((cx + r * math.cos(angle), cy + r * math.sin(angle)))
    return points


def _heart(cx: float, cy: float, radius: float) -> list[tuple[float, float]]:
    points = []
    for k in range(48):
        t = 2 * math.pi * k / 48
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        points.append((cx + radius * x / 17, cy - radius * y / 17))
    return points


def draw(sample: ShapeSample, rng: random.Random, image_size: int = 64, supersample: int = 2) -> Image.Image:
    """Render `sample` near the centre (JITTER) with a random size and small rotation (drawn at 2x, then downsampled: antialiased)."""
    side = image_size * supersample
    image = Image.new("RGB", (side, side), BACKGROUNDS[sample.background])
    canvas = ImageDraw.Draw(image)
    low, high = SIZES[sample.size]
    radius = side * rng.uniform(low, high) / 2
    first, last = max(radius + 1, side * (0.5 - JITTER)), min(side - radius - 1, side * (0.5 + JITTER))
    cx, cy = (rng.uniform(first, last) if first < last else side / 2 for _ in range(2))
    fill = COLOURS[sample.colour]
    tilt = rng.uniform(-0.25, 0.25)
    if sample.shape == "circle":
        canvas.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=fill)
    elif sample.shape == "square":
        canvas.polygon(_polygon(cx, cy, radius * 1.2, 4, math.pi / 4 + tilt), fill=fill)
    elif sample.shape == "triangle":
        canvas.polygon(_polygon(cx, cy + radius * 0.15, radius * 1.1, 3, -math.pi / 2 + tilt), fill=fill)
    elif sample.shape == "star":
        canvas.polygon(_star(cx, cy, radius * 1.1, -math.pi / 2 + tilt), fill=fill)
    elif sample.shape == "heart":
        canvas.polygon(_heart(cx, cy, radius), fill=fill)
    elif sample.shape == "cross":
        arm = radius * 0.33
        canvas.rectangle((cx - radius, cy - arm, cx + radius, cy + arm), fill=fill)
        canvas.rectangle((cx - arm, cy - radius, cx + arm, cy + radius), fill=fill)
    return image.resize((image_size, image_size), Image.BOX)


class ShapesDataset:
    """Map-style dataset of `length` (image, caption) samples; item i is generated from (seed, i).

    `split="train"` draws only seen combinations; "eval" draws all 48 (1/6 unseen); "unseen" only held-out.
    `__getitem__` returns `(PIL image, caption)`; `sample(i)` also returns the `ShapeSample` for evaluation.
    """

    def __init__(self, length: int = 1_000_000, split: str = "train", seed: int = 0, image_size: int = 64) -> None:
        self.length, self.seed, self.image_size = length, seed, image_size
        self.split = split
        self.pairs = combos({"train": "train", "eval": "all", "unseen": "unseen"}[split])

    def __len__(self) -> int:
        return self.length

    def sample(self, index: int) -> tuple[Image.Image, str, ShapeSample]:
        rng = random.Random(f"{self.split}:{self.seed}:{index}")
        sample = describe(rng, self.pairs)
        return draw(sample, rng, self.image_size), caption(sample, rng), sample

    def __getitem__(self, index: int) -> tuple[Image.Image, str]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        image, text, _ = self.sample(index)
        return image, text


def all_captions(count: int = 20_000, seed: int = 0) -> Iterator[str]:
    """Captions (of every combination, so the vocabulary covers unseen ones) for training the tokenizer."""
    rng = random.Random(f"vocab:{seed}")
    pairs = combos("all")
    for _ in range(count):
        yield caption(describe(rng, pairs), rng)
    for colour, shape in pairs:  # the evaluation prompts too
        yield COMBO_PROMPT.format(colour, shape)


def train_vocabulary(model_prefix: str, vocab_size: int = 128, seed: int = 0) -> str:
    """Train the SigLIP-layout SentencePiece model of the shapes captions; returns the .model path.

    Captions are lowercased without punctuation, as the tokenizer canonicalises them.
    """
    return train_spiece_model(
        all_captions(seed=seed), model_prefix, vocab_size, character_coverage=1.0, hard_vocab_limit=False
    )
