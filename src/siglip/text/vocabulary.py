"""Train a SentencePiece vocabulary in SigLIP's layout, for models trained from scratch (and for tests).

SigLIP's `spiece.model` is a unigram model with the T5 layout: `<pad>`=0, `</s>`=1, `<unk>`=2, no `<s>`;
`SiglipTokenizer` pads with `</s>` and appends it to every text.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def train_spiece_model(sentences: Iterable[str], model_prefix: str, vocab_size: int, **options: Any) -> str:
    """Train a unigram model on `sentences` into `<model_prefix>.model` (+ `.vocab`); returns the .model path.

    `options` are further `SentencePieceTrainer.train` arguments (e.g. `character_coverage`, `byte_fallback`,
    `hard_vocab_limit`); the special-token layout is fixed.
    """
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_prefix=str(model_prefix),
        vocab_size=vocab_size,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        num_threads=1,
        minloglevel=2,
        **options,
    )
    return f"{model_prefix}.model"
