"""An exact per-word id cache in front of SentencePiece: captions made of known words skip its Viterbi search.

Why a word's ids can be reused. A canonical caption reaches SentencePiece as `"<unk>▁w1 w2 ..."`, i.e. the units
`▁w1`, `▁w2`, ... after the prefix. When no vocabulary piece holds `▁` anywhere but at its start, every
segmentation cuts before each `▁`, so the best segmentation of the caption is the best segmentation of each unit,
and a unit's ids can be learned once. Two details could still make the ids depend on the context, and both are
ruled out before a word is cached:

- SentencePiece's Viterbi adds float32 scores along the caption, and a unit's choices compare sums that carry the
  score of everything before it; two segmentations of a unit whose scores are within float rounding of each other
  can swap with the context (the "3"+"33" / "33"+"3" tie). A word is cached only when its best segmentation beats
  the second best (SentencePiece's 2-best) by more than the rounding a caption of up to `MAX_CAPTION_BYTES` can
  cause; longer captions always go to SentencePiece.
- Normalisation (NFKC) could map a character to something holding a space, which would merge with the space
  before it; a word is cached only if SentencePiece's normaliser leaves it unchanged.

Words with an unknown piece, longer than `MAX_WORD_BYTES`, or seen only once so far are not learned (a word costs
~20 us to learn, well under 0.1 us to look up). The cache keeps at most `MAX_WORDS` words per tokenizer. Text of
mostly unique words gains nothing from it: `pays_off` tells from a sample and backs off.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np
import sentencepiece as spm

MAX_CAPTION_BYTES = 1024
MAX_WORD_BYTES = 64
MAX_WORDS = 500_000
# Learning a word costs ~20 us (mostly SentencePiece's 2-best), encoding a caption ~2.5 us of CPU: a batch
# learns at most one word per this many captions (~10 % more time where the words never come back).
_CAPTIONS_PER_LEARNED_WORD = 128
_EXAMINED_PER_LEARNED_WORD = 8
_SEEN_ONCE_LIMIT = 200_000  # words met once (or refused) and not learned; forgotten all at once beyond this
# Below this fraction of captions resolved, a lookup costs more than it saves (see `pays_off`).
_WORTHWHILE_FRACTION = 0.6
_MAX_BACKOFF = 16
_UNK_PENALTY = 10.0  # SentencePiece scores an unknown character as (lowest piece score - 10)
_UNDERLINE = "▁"
_UNDERLINE_BYTES = _UNDERLINE.encode()


_BASE = 0x9E3779B97F4A7C15  # an odd multiplier for the hash of words longer than 8 bytes


@dataclass(frozen=True)
class _Tables:
    """One consistent state of the cache (replaced whole when words are learned, so readers need no lock)."""

    keys: np.ndarray  # sorted keys (`_word_keys`) of the cached words, unique
    rows: np.ndarray  # the word (row) of each sorted key
    text: bytes  # every cached word's bytes, row after row
    text8: np.ndarray  # `text` through `_as_words`
    text_starts: np.ndarray
    text_lengths: np.ndarray
    ids: np.ndarray  # every cached word's ids, row after row
    id_starts: np.ndarray
    id_lengths: np.ndarray


_EMPTY = _Tables(
    np.empty(0, np.uint64),
    np.empty(0, np.int64),
    b"",
    np.empty(0, np.uint64),
    *(np.empty(0, np.int64) for _ in range(5)),
)


def _as_words(data: bytes) -> np.ndarray:
    """`data` as overlapping little-endian uint64s: element i holds bytes i..i+7 (zeros past the end)."""
    return np.ndarray((len(data) + 1,), "<u8", data + bytes(8), 0, (1,))


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The indices `starts[i] + k` for k < lengths[i], row after row."""
    return np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(int(lengths.sum()))


def _chunks(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Words of more than 8 bytes as 8-byte chunks (the last one flush with the word's end): each chunk's word,
    its offset in the word and its index in the word."""
    counts = (lengths + 7) // 8
    owner = np.repeat(np.arange(len(lengths)), counts)
    index = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    return owner, np.minimum(8 * index, lengths[owner] - 8), index


def _word_keys(words8: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Each word's key: its bytes as an integer when it has at most 8 (exact, as the text holds no NUL), else a
    polynomial hash of its 8-byte chunks and its length (a hit is then confirmed against the cached bytes)."""
    keys = words8[starts]
    short = np.flatnonzero(lengths < 8)
    keys[short] &= (np.uint64(1) << (8 * lengths[short]).astype(np.uint64)) - np.uint64(1)
    long = np.flatnonzero(lengths > 8)
    if len(long):
        owner, offsets, index = _chunks(lengths[long])
        powers = np.cumprod(np.full(int(index.max()) + 1, _BASE, np.uint64))
        terms = words8[starts[long][owner] + offsets] * powers[index]
        keys[long] = np.add.reduceat(terms, np.flatnonzero(index == 0)) + lengths[long].astype(np.uint64)
    return keys


def learning_budget(batch_size: int) -> int:
    """How many new words a batch of `batch_size` captions may learn."""
    return batch_size // _CAPTIONS_PER_LEARNED_WORD


def supports_word_cache(sp_model: spm.SentencePieceProcessor) -> bool:
    """Whether every segmentation of a text cuts before each `▁` (no piece holds `▁` past its first character)
    and `▁` itself is a piece (so an unknown character never merges across words)."""
    pieces = (sp_model.IdToPiece(i) for i in range(sp_model.GetPieceSize()))
    return sp_model.PieceToId(_UNDERLINE) != sp_model.unk_id() and not any(_UNDERLINE in p[1:] for p in pieces)


class WordCache:
    """Learned words' ids in one flat array; `lookup` resolves a batch of canonical captions."""

    def __init__(
        self,
        sp_model: spm.SentencePieceProcessor,
        encode_jobs: Callable[[list[bytes]], tuple[np.ndarray, np.ndarray]],
        prefix: bytes,
        prefix_length: int,
    ) -> None:
        self._sp_model, self._encode_jobs = sp_model, encode_jobs
        self._prefix, self._prefix_length = prefix + _UNDERLINE_BYTES, prefix_length
        largest_score = max(abs(sp_model.GetScore(i)) for i in range(sp_model.GetPieceSize())) + _UNK_PENALTY
        largest_sum = (MAX_CAPTION_BYTES + len(self._prefix) + 8) * largest_score  # bounds every path's score
        self._ulp = 2.0 ** (math.floor(math.log2(largest_sum)) - 23)  # float32 spacing at the largest path score
        self._tables = _EMPTY
        self._seen_once: set[bytes] = set()
        self._refused: set[bytes] = set()  # words `_segment` turned down: not tried again
        self._lock = threading.Lock()
        self._skip, self._backoff = 0, 1  # batches to send straight to SentencePiece; the next back-off

    def __len__(self) -> int:
        return len(self._tables.rows)

    def __getstate__(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def pays_off(self, sample_of: Callable[[], Sequence[bytes]], batch_size: int) -> bool:
        """Whether the cache resolves enough of a sample of a batch's canonical captions (`sample_of()`) to be
        worth a lookup of the batch, learning the batch's share of the sample's words first. Text of mostly unique
        words is faster through SentencePiece alone; after such a sample the next 1, 2, 4 ... `_MAX_BACKOFF`
        batches skip the sample too."""
        if self._skip:
            self._skip -= 1
            return False
        worth = self.lookup(sample_of(), learning_budget(batch_size))[3].mean() >= _WORTHWHILE_FRACTION
        self._skip, self._backoff = (0, 1) if worth else (self._backoff, min(2 * self._backoff, _MAX_BACKOFF))
        return worth

    def lookup(self, captions: Sequence[bytes], budget: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Resolve canonical captions (each `▁` + canonical text), learning up to `budget` new words first.
        Returns (ids, starts, lengths, resolved): caption i's ids are `ids[starts[i] : starts[i] + lengths[i]]`
        where `resolved[i]`; the others are left to SentencePiece."""
        count = len(captions)
        sizes = np.fromiter(map(len, captions), np.int64, count)
        joined = b" ".join(captions).replace(_UNDERLINE_BYTES, b"")
        if len(joined) != int(sizes.sum()) - 2 * count - 1:  # a "▁" besides the leading ones: not for this path
            return np.empty(0, np.int64), np.zeros(count, np.int64), np.zeros(count, np.int64), np.zeros(count, bool)
        spaces = np.flatnonzero(np.frombuffer(joined, np.uint8) == 32)
        starts = np.concatenate([[0], spaces + 1])
        lengths = np.concatenate([spaces, [len(joined)]]) - starts
        first_word = np.searchsorted(starts, np.cumsum(sizes - 2) - (sizes - 2))
        caption_of_word = np.repeat(np.arange(count), np.diff(np.append(first_word, len(starts))))
        words8 = _as_words(joined)
        keys = _word_keys(words8, starts, lengths)
        rows = _find(self._tables, words8, starts, lengths, keys)
        missing = np.flatnonzero((rows < 0) & (sizes <= MAX_CAPTION_BYTES)[caption_of_word])
        examined = missing[: _EXAMINED_PER_LEARNED_WORD * budget]  # enough to find the frequent ones
        found = zip(starts[examined].tolist(), lengths[examined].tolist())
        if len(missing) and self._learn([joined[start : start + length] for start, length in found], budget):
            rows[missing] = _find(self._tables, words8, starts[missing], lengths[missing], keys[missing])
        resolved = (sizes <= MAX_CAPTION_BYTES) & (np.bincount(caption_of_word[rows < 0], minlength=count) == 0)
        tables = self._tables  # read after the lookups: it holds every row they found
        keep = resolved[caption_of_word]
        word_lengths = tables.id_lengths[rows[keep]]
        lengths = np.bincount(caption_of_word[keep], weights=word_lengths, minlength=count).astype(np.int64)
        ids = tables.ids[_ranges(tables.id_starts[rows[keep]], word_lengths)]
        return ids, np.cumsum(lengths) - lengths, lengths, resolved

    def _learn(self, missing: list[bytes], budget: int) -> bool:
        """Learn up to `budget` of the words met at least twice (in this batch or before), the most frequent first;
        True if any was added."""
        if len(self) >= MAX_WORDS:
            return False
        counts = Counter(missing)
        seen_once, refused = self._seen_once, self._refused
        candidates = [
            word
            for word, n in counts.most_common()
            if (n > 1 or word in seen_once) and 0 < len(word) <= MAX_WORD_BYTES and word not in refused
        ][:budget]
        for remembered in (seen_once, refused):
            if len(remembered) > _SEEN_ONCE_LIMIT:
                remembered.clear()
        seen_once.update(w for w, n in counts.items() if n == 1)
        learned = self._segment(candidates) if candidates else []
        refused.update(set(candidates).difference(word for word, _ in learned))
        if not learned:
            return False
        with self._lock:
            self._tables = _extended(self._tables, learned)
            seen_once.difference_update(word for word, _ in learned)
        return True

    def _segment(self, words: list[bytes]) -> list[tuple[bytes, list[int]]]:
        """The ids of each word whose segmentation cannot depend on its context, as the reference encodes it."""
        flat, sizes = self._encode_jobs([self._prefix + word for word in words])
        ids_of_all, ends = flat.tolist(), np.cumsum(sizes).tolist()
        unk, cut, sentencepiece = self._sp_model.unk_id(), self._prefix_length, self._sp_model
        learned = []
        for word, end, size in zip(words, ends, sizes.tolist()):
            ids = ids_of_all[end - size + cut : end]
            text = word.decode("utf-8")
            if not ids or unk in ids or sentencepiece.normalize(text) != _UNDERLINE + text:
                continue
            best = sentencepiece.nbest_encode(text, nbest_size=2, return_type="proto").nbests
            if len(best) > 1 and best[0].score - best[1].score <= 2 * (len(word) + 2) * self._ulp:
                continue
            if [piece.id for piece in best[0].pieces] == ids:
                learned.append((word, ids))
        return learned


def _find(tables: _Tables, words8: np.ndarray, starts: np.ndarray, lengths: np.ndarray, keys: np.ndarray):
    """The cache row of each word, -1 where it is not cached."""
    if not len(tables.keys):
        return np.full(len(keys), -1, np.int64)
    slots = np.minimum(np.searchsorted(tables.keys, keys), len(tables.keys) - 1)
    rows = np.where(tables.keys[slots] == keys, tables.rows[slots], -1)
    rows[(rows >= 0) & (tables.text_lengths[rows] != lengths)] = -1
    long = np.flatnonzero((rows >= 0) & (lengths > 8))
    if len(long):  # confirm hashed keys byte for byte, 8 at a time
        owner, offsets, _ = _chunks(lengths[long])
        cached = tables.text8[tables.text_starts[rows[long]][owner] + offsets]
        rows[long[owner[words8[starts[long][owner] + offsets] != cached]]] = -1
    return rows


def _extended(tables: _Tables, learned: list[tuple[bytes, list[int]]]) -> _Tables:
    """`tables` plus the learned words (a word whose key is already taken is left out)."""
    text = b"".join(word for word, _ in learned)
    text_lengths = np.array([len(word) for word, _ in learned], np.int64)
    text_starts = np.cumsum(text_lengths) - text_lengths
    keys = _word_keys(_as_words(text), text_starts, text_lengths)
    _, first = np.unique(keys, return_index=True)
    new = np.sort(first[~np.isin(keys[first], tables.keys)])
    if len(new) < len(learned):
        return _extended(tables, [learned[i] for i in new.tolist()]) if len(new) else tables
    id_lengths = np.array([len(ids) for _, ids in learned], np.int64)
    all_keys = np.concatenate([tables.keys, keys])
    order = np.argsort(all_keys, kind="stable")  # timsort: the cached keys are one sorted run, so near-linear
    return _Tables(
        keys=all_keys[order],
        rows=np.concatenate([tables.rows, np.arange(len(tables.rows), len(tables.rows) + len(learned))])[order],
        text=tables.text + text,
        text8=_as_words(tables.text + text),
        text_starts=np.concatenate([tables.text_starts, len(tables.text) + text_starts]),
        text_lengths=np.concatenate([tables.text_lengths, text_lengths]),
        ids=np.concatenate([tables.ids, np.fromiter(chain.from_iterable(ids for _, ids in learned), np.int64)]),
        id_starts=np.concatenate([tables.id_starts, len(tables.ids) + np.cumsum(id_lengths) - id_lengths]),
        id_lengths=np.concatenate([tables.id_lengths, id_lengths]),
    )
