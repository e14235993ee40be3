"""Text -> SentencePiece ids the way the reference's `SiglipTokenizer` produces them, fast on large batches.

The reference's quirks decide the ids:

- Literal special tokens in the text (`"</s>"`, `"<unk>"`, additional ones) are split out first, case-sensitively,
  and map straight to their ids; only the text between them is canonicalised and encoded.
- The text gets a leading `▁` (any `▁` inside becomes a space) before canonicalisation, so `strip` never removes
  leading whitespace; a lone `▁` piece right before a special token is dropped again.
- Each segment is canonicalised (lowercase, drop `string.punctuation`, collapse whitespace, strip), then
  encoded as `"<unk>" + segment` with the first `len(encode("<unk>"))` pieces dropped, which keeps
  SentencePiece from treating the leading `▁` as its dummy prefix.
- A text that ends in `</s>` gets no second `</s>`; truncation keeps room for one `</s>` (`max_length - 1` ids).

Speed. In the common case (no special token anywhere in the batch) the batch is cut into chunks that worker
threads canonicalise (holding the GIL) and encode (SentencePiece releases it), so the Python work of one chunk
overlaps the encoding of another on the other core. Where SentencePiece offers it (its pybind11 builds, 0.2.3
here), ids come back as one int32 buffer per text instead of Python int lists. Truncation, `</s>` and padding are numpy
operations on the whole batch (`text.batching`). The `"<unk>"` prefix stays even where no piece could
straddle it: SentencePiece's Viterbi breaks ties between equal-scoring segmentations (e.g. "3"+"33" vs
"33"+"3") by floating-point sums that the prefix's score changes, so dropping it changes a few ids.
Batches of `_CACHED_BATCH` texts or more first go through the per-word id cache (`text.word_cache`), when a
sample shows that it resolves most captions; the captions it cannot resolve take the path above.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import sentencepiece as spm

from ..errors import InputError
from ..threads import shared_pool
from .batching import BatchingTokenizer, EncodedRows, flatten_rows
from .canonical import SEPARATOR, SPIECE_UNDERLINE, canonicalize_batch, canonicalize_joined
from .word_cache import WordCache, learning_budget, supports_word_cache

# SentencePiece's list API always starts a thread pool (~40 us); below this many jobs, encode them one by one.
_THREADED_BATCH = 64
# Batches of at least this many texts go through the word cache (smaller ones would pay more for the sample
# and the learning than they could save).
_CACHED_BATCH = 2048
# Texts of such a batch that the word cache looks up first, to tell whether it pays off: at most this many and
# one in `_PROBE_STEP`.
_PROBE = 128
_PROBE_STEP = 16
# Texts per chunk when a batch is split across worker threads.
_CHUNK = 1024


class SentencePieceEncoding(BatchingTokenizer):
    """The encoding half of `SiglipTokenizer` (which sets `sp_model`, `unk_token`, `do_lower_case`, the added
    tokens and `num_threads` before calling `_setup_encoding`)."""

    sp_model: spm.SentencePieceProcessor

    def _setup_encoding(self) -> None:
        # Number of pieces of the "<unk>" prefix to drop after encoding "<unk>" + segment.
        self._unk_prefix = self.unk_token.encode("utf-8")
        self._prefix_length = len(self.sp_model.encode(self.unk_token))
        self._word_cache = None
        if supports_word_cache(self.sp_model) and not self.sp_model_kwargs.get("enable_sampling"):
            encode = partial(self._encode_jobs_flat, threads=self.num_threads)
            self._word_cache = WordCache(self.sp_model, encode, self._unk_prefix, self._prefix_length)

    def tokenize(self, text: str) -> list[str]:
        """The pieces of `text`, without `</s>` (what the reference's `tokenize` returns)."""
        rows, _ = self._encode_rows([text], as_pieces=True)
        return rows[0]

    def _encode_ids(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All ids of all texts (without `</s>`) in one flat array, and where each text's ids start and how many
        there are."""
        joined = SEPARATOR.join(texts)
        plain = joined.count(SEPARATOR) == len(texts) - 1 and not self._unk_surfaces
        if plain and self._split_pattern is not None:
            plain = self._split_pattern.search(joined) is None
        if not plain:
            rows, cut = self._encode_rows(texts)
            flat, sizes = flatten_rows(rows)
            return _without_prefix(flat, sizes, cut)
        if self._word_cache is not None and len(texts) >= _CACHED_BATCH and self._cache_pays_off(texts):
            return self._encode_through_cache(texts)
        chunks = [texts[start : start + _CHUNK] for start in range(0, len(texts), _CHUNK)]
        if len(chunks) == 1 or self.num_threads == 1:
            parts = [self._encode_chunk(chunk, self.num_threads) for chunk in chunks]
        else:
            parts = list(shared_pool("tokenize", self.num_threads).map(self._encode_chunk, chunks))
        flat = np.concatenate([part[0] for part in parts])
        return _without_prefix(flat, np.concatenate([part[1] for part in parts]), self._prefix_length)

    def _encode_through_cache(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`_encode_ids` for a plain batch: known words from the word cache, the other captions by SentencePiece."""
        captions = self._canonical(texts, b"")
        flat, starts, lengths, resolved = self._word_cache.lookup(captions, learning_budget(len(captions)))
        rest = np.flatnonzero(~resolved)
        if len(rest):
            jobs = [self._unk_prefix + captions[i] for i in rest.tolist()]
            more, more_starts, more_lengths = _without_prefix(
                *self._encode_jobs_flat(jobs, self.num_threads), self._prefix_length
            )
            starts[rest], lengths[rest] = more_starts + len(flat), more_lengths
            flat = np.concatenate([flat, more])
        return flat, starts, lengths

    def _cache_pays_off(self, texts: Sequence[str]) -> bool:
        """Ask the word cache about an even sample of the texts."""
        step = max(_PROBE_STEP, len(texts) // _PROBE)
        return self._word_cache.pays_off(lambda: self._canonical(texts[::step], b""), len(texts))

    def _canonical(self, texts: Sequence[str], prefix: bytes) -> list[bytes]:
        """`prefix` + `▁` + canonical text for texts holding no NUL and no special token, in UTF-8."""
        joined = SPIECE_UNDERLINE + SEPARATOR.join(texts).replace(SPIECE_UNDERLINE, " ")
        joined = joined.replace(SEPARATOR, SEPARATOR + SPIECE_UNDERLINE)
        try:
            return canonicalize_joined(joined, self.do_lower_case, prefix)
        except UnicodeEncodeError:
            raise InputError("text contains unpaired surrogate characters, which are not valid Unicode.") from None

    def _encode_chunk(self, texts: Sequence[str], threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Canonicalise and encode texts holding no NUL and no special token; ids flat, and sizes."""
        return self._encode_jobs_flat(self._canonical(texts, self._unk_prefix), threads)

    def _encode_jobs_flat(self, jobs: list[bytes], threads: int) -> tuple[np.ndarray, np.ndarray]:
        """The ids of all jobs in one flat array, and each job's id count.

        SentencePiece's pybind11 builds (0.2.3 here) can return each job's ids as an int32 buffer, releasing the
        GIL while it encodes; that skips the Python int lists and lets another thread canonicalise the next chunk
        meanwhile. Builds without it take the list path."""
        encode_buffers = getattr(getattr(self.sp_model, "_processor", None), "_EncodeAsBufferBatch", None)
        if encode_buffers is not None and len(jobs) >= _THREADED_BATCH:
            try:  # (inputs, num_threads, thread_pool, sampling, nbest_size, alpha, add_bos, add_eos, reverse)
                buffers = encode_buffers(jobs, threads, None, False, -1, 0.1, False, False, False)
            except TypeError:  # a future signature: fall back to the public API below
                pass
            else:
                sizes = np.fromiter((memoryview(ids).nbytes >> 2 for ids in buffers), dtype=np.int64, count=len(jobs))
                return np.frombuffer(b"".join(buffers), dtype=np.int32).astype(np.int64), sizes
        return flatten_rows(self._encode_jobs(jobs, int, threads))

    def _encode_jobs(self, jobs: list[bytes], out_type: type, threads: int) -> list[list[Any]]:
        if len(jobs) >= _THREADED_BATCH:
            return self.sp_model.encode(jobs, out_type=out_type, num_threads=threads)
        return [self.sp_model.encode(job, out_type=out_type) for job in jobs]

    def _encode_rows(self, texts: Sequence[str], as_pieces: bool = False) -> tuple[list[list[Any]], int]:
        """The general path: ids (or pieces) of each text without `</s>`, special tokens split out, and the
        number of prefix pieces still to cut (0 once rows are assembled here)."""
        # "▁" + text with any "▁" made a space; done on the joined batch unless a text holds a NUL.
        joined = SEPARATOR.join(texts)
        segments = None
        if joined.count(SEPARATOR) == len(texts) - 1:
            joined = SPIECE_UNDERLINE + joined.replace(SPIECE_UNDERLINE, " ")
            joined = joined.replace(SEPARATOR, SEPARATOR + SPIECE_UNDERLINE)
        else:
            segments = [SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, " ") for text in texts]
            joined = SEPARATOR.join(segments)
        plans: list[list[int | str]] | None = None
        if self._split_pattern is not None and self._split_pattern.search(joined):
            segments, plans = self._split_special_tokens(segments or joined.split(SEPARATOR))
        try:
            if segments is None:
                jobs = canonicalize_joined(joined, self.do_lower_case, self._unk_prefix)
            else:
                jobs = canonicalize_batch(segments, self.do_lower_case, self._unk_prefix)
        except UnicodeEncodeError:
            raise InputError("text contains unpaired surrogate characters, which are not valid Unicode.") from None
        encoded = self._encode_jobs(jobs, str if as_pieces else int, self.num_threads)
        cut = self._prefix_length
        if plans is None and not as_pieces and not self._unk_surfaces:
            return encoded, cut

        encoded = [pieces[cut:] if len(pieces) >= cut else pieces for pieces in encoded]
        if self._unk_surfaces and not as_pieces:  # an added token outside the vocab may hide behind an <unk> id
            unk = self.sp_model.unk_id()
            encoded = [self._pieces_to_ids(jobs[j]) if unk in ids else ids for j, ids in enumerate(encoded)]
        if plans is None:
            return encoded, 0
        rows = []
        specials = [[token] for token in self.all_special_tokens]
        for plan in plans:
            row: list[Any] = []
            for step, item in enumerate(plan):
                if isinstance(item, str):
                    row.append(item if as_pieces else self._added_tokens[item])
                elif step == 0 and self._is_lone_underline(encoded[item], jobs[item]) and plan[1:2] in specials:
                    continue  # the reference drops a lone leading "▁" right before a special token
                else:
                    row.extend(encoded[item])
            rows.append(row)
        return rows, 0

    def _split_special_tokens(self, texts: list[str]) -> tuple[list[str], list[list[int | str]]]:
        """Segments to encode, and per text a plan: segment indices and special tokens, in order."""
        segments: list[str] = []
        plans: list[list[int | str]] = []
        for text in texts:
            plan: list[int | str] = []
            for index, part in enumerate(self._split_pattern.split(text)):
                if index % 2:
                    plan.append(part)
                elif part:  # empty segments (adjacent special tokens) encode to nothing
                    plan.append(len(segments))
                    segments.append(part)
            plans.append(plan)
        return segments, plans

    def _is_lone_underline(self, pieces: list[Any], job: bytes) -> bool:
        """Whether a segment encodes to exactly the piece "▁" (an unknown "▁" has the <unk> id: look at pieces)."""
        if len(pieces) != 1:
            return False
        if isinstance(pieces[0], str):
            return pieces[0] == SPIECE_UNDERLINE
        if pieces[0] == self.sp_model.unk_id():
            return self.sp_model.encode(job, out_type=str)[self._prefix_length :] == [SPIECE_UNDERLINE]
        return self.sp_model.id_to_piece(pieces[0]) == SPIECE_UNDERLINE

    def _pieces_to_ids(self, job: bytes) -> list[int]:
        """Encode one job through its pieces, as the reference does, so that added tokens take precedence."""
        pieces = self.sp_model.encode(job, out_type=str)
        return self.convert_tokens_to_ids(
            pieces[self._prefix_length :] if len(pieces) >= self._prefix_length else pieces
        )

    def _rows(
        self, texts: Sequence[str], truncate: bool, max_length: int | None, add_special_tokens: bool
    ) -> EncodedRows:
        """Encode, drop the prefix pieces and truncate (keeping room for `</s>`), all in numpy."""
        flat, starts, lengths = self._encode_ids(texts)
        room = max_length - int(add_special_tokens) if truncate and max_length else None
        if room is not None:
            kept = np.minimum(lengths, max(room, 0))
            if self.truncation_side == "left":
                starts = starts + lengths - kept
            lengths = kept
        if not add_special_tokens:
            return EncodedRows(flat, starts, lengths, np.zeros(len(lengths), dtype=bool))
        last = flat[np.clip(starts + lengths - 1, 0, max(len(flat) - 1, 0))] if len(flat) else lengths
        return EncodedRows(flat, starts, lengths, (lengths == 0) | (last != self.eos_token_id))


def _without_prefix(flat: np.ndarray, sizes: np.ndarray, cut: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flat, starts, lengths) of consecutive rows of `sizes` ids, each row's first `cut` ids dropped (rows
    shorter than that are kept whole)."""
    cuts = np.where(sizes >= cut, cut, 0)
    return flat, np.cumsum(sizes) - sizes + cuts, sizes - cuts
