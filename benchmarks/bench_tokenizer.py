"""SiglipTokenizer vs transformers' SiglipTokenizer: captions per second on the same batch, in one run.

    python benchmarks/bench_tokenizer.py [--captions 20000] [--vocab path/to/spiece.model]

Without --vocab it trains the tests' SentencePiece model (SigLIP layout, vocab 1500) in a temporary folder.
Three caption sets: COCO-like English captions (repetitive: the common case for captions and prompts), diverse
captions over a 20,000-word Zipf vocabulary (like web alt-text), and the tests' multilingual corpus (accents,
Cyrillic, CJK, emoji; mostly non-ASCII). Both tokenizers get the same list with SigLIP's recommended settings
(padding="max_length", truncation, return_tensors="pt"); the ids are checked to be identical before timing.

siglip's word cache learns from what it tokenizes, so no timing reuses captions it has seen: "cold" is a new
tokenizer's first batch; "steady" is a tokenizer that has already tokenized one batch of the same kind, timed on
batches it has never seen (a fresh one per repeat); "no cache" is the SentencePiece path alone on the same
batches.
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

from spm_model import pseudo_word, sentences, train_sentencepiece_model  # noqa: E402
from summary import record  # noqa: E402

from siglip.text.tokenizer import SiglipTokenizer  # noqa: E402

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


def zipf_captions(count: int, seed: int = 0) -> list[str]:
    """Diverse captions: 6-13 words drawn from a 20,000-word vocabulary with Zipf (1/rank) frequencies, as in
    web alt-text rather than COCO (the word cache's unfavourable case)."""
    rng = random.Random(12345)  # the same vocabulary for every seed
    common = " ".join([*NOUNS, *VERBS, *PLACES, *ADJECTIVES, "with and in of at under behind near"]).split()
    vocabulary = list(dict.fromkeys(common + [pseudo_word(rng) for _ in range(20_000)]))[:20_000]
    weights = [1 / rank for rank in range(1, len(vocabulary) + 1)]
    rng = random.Random(seed)
    return [" ".join(rng.choices(vocabulary, weights, k=rng.randint(6, 13))) for _ in range(count)]


def seconds(tokenizer, texts: list[str], one_by_one: bool = False) -> float:
    """Wall time of tokenizing `texts` (as one batch, or one text per call)."""
    kwargs = dict(padding="max_length", truncation=True, return_tensors="pt")
    start = time.perf_counter()
    if one_by_one:
        for text in texts:
            tokenizer(text, **kwargs)
    else:
        tokenizer(texts, **kwargs)
    return time.perf_counter() - start


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
    print(
        f"{'captions':14}{'transformers/s':>16}{'siglip steady':>15}{'speedup':>9}{'cold':>8}{'no cache':>10}"
        f"{'1 text/call':>13}"
    )
    for name, make in (("english", english_captions), ("zipf 20k words", zipf_captions), ("multilingual", sentences)):
        captions = make(args.captions, seed=2024)
        expected = reference(captions, **kwargs)
        got = ours(captions, **kwargs)
        assert torch.equal(got["input_ids"], expected["input_ids"]), "ids differ from the reference"
        assert torch.equal(got["attention_mask"], expected["attention_mask"]), "masks differ from the reference"
        reference_seconds = min(seconds(reference, captions) for _ in range(2))
        cold = min(seconds(SiglipTokenizer(vocab), captions) for _ in range(args.repeats))
        steady_tokenizer, no_cache = SiglipTokenizer(vocab), SiglipTokenizer(vocab)
        no_cache._word_cache = None
        steady_tokenizer(make(args.captions, seed=1), **kwargs)  # one batch of the same kind, seen before
        steady, plain = [], []
        for repeat in range(args.repeats):  # a new batch each time; who goes first alternates (first use is slower)
            batch = make(args.captions, seed=3000 + repeat)
            for tokenizer, times in ((steady_tokenizer, steady), (no_cache, plain))[:: 1 if repeat % 2 else -1]:
                times.append(seconds(tokenizer, batch))
        steady, plain = min(steady), min(plain)
        single = captions[:1000]
        single_ratio = seconds(reference, single, True) / seconds(SiglipTokenizer(vocab), single, True)
        print(
            f"{name:14}{args.captions / reference_seconds:>16,.0f}{args.captions / steady:>15,.0f}"
            f"{reference_seconds / steady:>8.1f}x{reference_seconds / cold:>7.1f}x{reference_seconds / plain:>9.1f}x"
            f"{single_ratio:>12.1f}x"
        )
        figure = f"P5 tokenizer, {args.captions} {name} captions, batched"
        note = f"cold {reference_seconds / cold:.1f}x, no cache {reference_seconds / plain:.1f}x"
        record(
            figure, args.captions / steady, args.captions / reference_seconds, "captions/s", target=">= 50x", note=note
        )


if __name__ == "__main__":
    main()
