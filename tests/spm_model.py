"""A small SentencePiece model with SigLIP's layout, trained in code for the tokenizer tests.

SigLIP's `spiece.model` is a unigram model with the T5 layout: `<pad>`=0, `</s>`=1, `<unk>`=2, no `<s>`, the
default `nmt_nfkc` normaliser and `add_dummy_prefix`. We train one of those (vocab 1500) on a deterministic
corpus that mixes English captions, accented Latin, Cyrillic, CJK and emoji, with a character coverage below
1 so that rare characters take the `<unk>` path (or the byte-fallback path in the byte-fallback variant).
"""

from __future__ import annotations

import random
from pathlib import Path

import sentencepiece as spm

from siglip.text.vocabulary import train_spiece_model

WORDS = (
    "a photo of the cat dog two three bird car man woman child red blue green small large sitting on in with "
    "and near under over street beach mountain tree house table plate pizza coffee cup people running playing "
    "water sky sunset night city building train bus bicycle horse field grass snow ball kite boat river bridge "
    "picture image painting drawing close up black white yellow orange old young group standing looking holding"
).split()
ACCENTED = "café naïve résumé über straße façade jalapeño déjà vu piñata smörgåsbord crème brûlée".split()
CYRILLIC = "кошка собака фото дом улица человек красный синий".split()
CJK = "猫 犬 写真 家 街 人 赤い 青い 山 川 東京 北京 한국어 사진 고양이".split()
RARE = "鬱 龘 𠀀 ∑ ∫ ☃ ♞ ऄ ශ ཀ".split()  # seldom in the corpus: most of these end up as <unk>
EMOJI = "😀 🐱 🐶 🚗 🌅 🍕 ❤️ 👍🏽".split()
PUNCTUATION = list(".,!?;:'\"()[]{}-_/\\@#$%^&*~`|<>+=")
SYLLABLES = "ka ri to ne mo sa lu vi de ga po zu shi fen tar bel quin dro ex ing ly ment tion ous".split()


def pseudo_word(rng: random.Random) -> str:
    """A made-up word: gives the trainer enough distinct substrings for a vocab of ~1500."""
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4)))


def sentences(count: int = 4000, seed: int = 0) -> list[str]:
    """A deterministic caption-like corpus of `count` lines."""
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        words = []
        for _ in range(rng.randint(3, 14)):
            roll = rng.random()
            if roll < 0.45:
                word = rng.choice(WORDS)
            elif roll < 0.70:
                word = pseudo_word(rng)
            elif roll < 0.78:
                word = rng.choice(ACCENTED)
            elif roll < 0.84:
                word = rng.choice(CYRILLIC)
            elif roll < 0.92:
                word = rng.choice(CJK)
            elif roll < 0.96:
                word = rng.choice(EMOJI)
            elif roll < 0.97:
                word = rng.choice(RARE)
            else:
                word = str(rng.randint(0, 2024))
            if rng.random() < 0.1:
                word += rng.choice(PUNCTUATION)
            words.append(word.capitalize() if rng.random() < 0.1 else word)
        lines.append(" ".join(words))
    return lines


def train_sentencepiece_model(directory: str | Path, vocab_size: int = 1500, byte_fallback: bool = False) -> Path:
    """Train a unigram model with SigLIP's special-token layout into `directory`; returns the .model path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    prefix = directory / ("spiece_bytes" if byte_fallback else "spiece")
    train_spiece_model(sentences(), str(prefix), vocab_size, character_coverage=0.995, byte_fallback=byte_fallback)
    return prefix.with_suffix(".model")


if __name__ == "__main__":
    import sys
    import tempfile

    path = train_sentencepiece_model(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())
    model = spm.SentencePieceProcessor(model_file=str(path))
    print(path, model.get_piece_size(), [model.id_to_piece(i) for i in range(5)])
    print(model.encode("a photo of a 猫 鬱 😀 café", out_type=str))
