"""SiglipTokenizer vs transformers' SiglipTokenizer: captions per second on the same batch, in one run.

    python benchmarks/bench_tokenizer.py [--captions 20000] [--vocab path/to/spiece.model]

Without --vocab it trains the tests' SentencePiece model (SigLIP layout, vocab 1500) in a temporary folder.
Two caption sets: COCO-like English captions (the common case) and the tests' multilingual corpus (accents,
Cyrillic, CJK, emoji; mostly non-ASCII). Both tokenizers get the same list with SigLIP's recommended settings
(padding="max_length", truncation, return_tensors="pt"); the ids are checked to be identical before timing.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from spm_model import sentences, train_sentencepiece_model  # noqa: E402
from summary import record  # noqa: E402

from siglip.tokenizer import SiglipTokenizer  # noqa: E402

NOUNS = "man woman boy girl dog cat horse bird train bus truck car plate pizza table kite surfboard skateboard".split()
VERBS = "sitting on|standing next to|riding|holding|looking at|eating|walking down|flying over|parked near".split("|")
PLACES = "the street|a field|the beach|a table|a kitchen|the snow|a wave|the park|a building|the water".split("|")
ADJECTIVES = "a large|a small|a white|a black|a red|an old|a young|two|three|a couple of".split("|")


def english_captions(count: int, seed: int = 0) -> list[str]:
    """COCO-like captions: 'A small dog sitting on a bench near the park.'"""
    rng = random.Random(seed)
    captions = []
    for _ in range(count):
        caption = f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {rng.choice(VERBS)} {rng.choice(PLACES)}"
        if rng.random() < 0.5:
            caption += f" with {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
        captions.append(caption[0].upper() + caption[1:] + rng.choice([".", "", " .", "!"]))
    return captions


def best_time(tokenizer, texts: list[str], repeats: int, one_by_one: bool = False) -> float:
    """The fastest of `repeats` runs over `texts`, in seconds (the least disturbed by other load)."""
    kwargs = dict(padding="max_length", truncation=True, return_tensors="pt")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        if one_by_one:
            for text in texts:
                tokenizer(text, **kwargs)
        else:
            tokenizer(texts, **kwargs)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captions", type=int, default=20_000)
    parser.add_argument("--vocab", type=Path, help="a real spiece.model (default: train the tests' model)")
    parser.add_argument("--repeats", type=int, default=5, help="runs of ours (the reference: 2); the best is kept")
    parser.add_argument("--quick", action="store_true", help="2000 captions, 2 repeats: checks the script runs")
    args = parser.parse_args()
    if args.quick:
        args.captions, args.repeats = 2000, 2

    from transformers import SiglipTokenizer as ReferenceTokenizer

    warnings.filterwarnings("ignore")
    vocab = args.vocab or train_sentencepiece_model(tempfile.mkdtemp())
    kwargs = dict(padding="max_length", truncation=True, return_tensors="pt")
    ours, reference = SiglipTokenizer(vocab), ReferenceTokenizer(str(vocab))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}")
    print(
        f"{args.captions} captions, vocab {ours.vocab_size}, padding='max_length' truncation=True return_tensors='pt'"
    )
    print(f"{'captions':14}{'transformers/s':>16}{'siglip/s':>12}{'speedup':>9}{'1 text/call':>14}")
    for name, captions in (
        ("english", english_captions(args.captions, seed=2024)),
        ("multilingual", sentences(args.captions, seed=2024)),
    ):
        expected = reference(captions, **kwargs)
        got = ours(captions, **kwargs)
        assert torch.equal(got["input_ids"], expected["input_ids"]), "ids differ from the reference"
        assert torch.equal(got["attention_mask"], expected["attention_mask"]), "masks differ from the reference"
        reference_seconds = best_time(reference, captions, 2)
        ours_seconds = best_time(ours, captions, args.repeats)
        single = captions[:1000]
        single_ratio = best_time(reference, single, 1, True) / best_time(ours, single, 1, True)
        print(
            f"{name:14}{args.captions / reference_seconds:>16,.0f}{args.captions / ours_seconds:>12,.0f}"
            f"{reference_seconds / ours_seconds:>8.1f}x{single_ratio:>13.1f}x"
        )
        figure = f"P5 tokenizer, {args.captions} {name} captions, batched"
        record(figure, args.captions / ours_seconds, args.captions / reference_seconds, "captions/s", target=">= 50x")


if __name__ == "__main__":
    main()
