"""SigLIP's SentencePiece tokenizer: canonicalise, encode, append `</s>`, pad with `</s>`.

The ids are the reference's (transformers' slow `SiglipTokenizer`) for every input, which fixes a few quirks:

- Literal special tokens in the text (`"</s>"`, `"<unk>"`, additional ones) are split out first, case-sensitively,
  and map straight to their ids; only the text between them is canonicalised and encoded.
- The text gets a leading `▁` (any `▁` inside becomes a space) before canonicalisation, so `strip` never removes
  leading whitespace; a lone `▁` piece right before a special token is dropped again.
- Each text segment is canonicalised (lowercase, drop `string.punctuation`, collapse whitespace, strip), then
  encoded as `"<unk>" + segment` with the first `len(encode("<unk>"))` pieces dropped. That prefix is how the
  reference keeps SentencePiece from treating the leading `▁` as a dummy prefix; it can change pieces at the
  boundary, so we do exactly the same rather than encode the segment alone.
- A text that ends in `</s>` gets no second `</s>`; truncation keeps room for one `</s>` (`max_length - 1` ids).

Speed comes from canonicalising the whole batch as one string (in UTF-8 bytes), one batched, multithreaded
`SentencePieceProcessor.encode` call for every segment of every text, and truncating and padding in numpy.
There is a single code path: a lone string is a batch of one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import string
from collections.abc import Sequence
from itertools import chain
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import sentencepiece as spm

from .batch import TENSOR_TYPES, BatchFeature
from .errors import InputError
from .hub import HubOptions, resolve_file

SPIECE_UNDERLINE = "▁"
VOCAB_FILE = "spiece.model"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
LARGE_INTEGER = int(1e20)  # the reference's threshold above which model_max_length means "no limit"
_SEPARATOR = "\x00"  # joins a batch for canonicalisation: not whitespace, punctuation, cased or case-ignorable
_MARKER = "\x01"  # stands for "▁" during canonicalisation (see _canonicalize_joined)
_PUNCTUATION = string.punctuation.encode()
_ASCII_SPACES = bytes.maketrans(b"\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f", b" " * 9)
# The other characters Python's str.split() and re's \s treat as whitespace, in UTF-8, and their first bytes.
_OTHER_SPACES = [chr(c).encode() for c in (0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F)]
_OTHER_SPACES.append("\u3000".encode())
_OTHER_SPACES_PATTERN = re.compile(b"|".join(map(re.escape, _OTHER_SPACES)))
_OTHER_SPACES_LEADS = tuple({space[:2] for space in _OTHER_SPACES})
# SentencePiece's list API always starts a thread pool (~40 us); below this many jobs, encode them one by one.
_THREADED_BATCH = 64
_PADDING = {True: "longest", False: "do_not_pad", None: "do_not_pad", "longest": "longest"}
_PADDING.update({"max_length": "max_length", "do_not_pad": "do_not_pad"})
_TRUNCATION = {True: "longest_first", "longest_first": "longest_first", "only_first": "longest_first"}
_TRUNCATION.update({False: None, None: None, "do_not_truncate": None})


def _canonical_utf8(text: str, lowercase: bool, separated: bool) -> bytes:
    """big_vision's canonicalisation (lowercase, drop `string.punctuation`, collapse whitespace, strip) in UTF-8.

    Bytes are several times faster than `re` on `str` and equal to it: ASCII bytes never occur inside a multi-byte
    character, and every non-ASCII whitespace character is mapped to a space first. With `separated`, NULs
    split `text` into independently stripped segments (NUL is not whitespace, punctuation, cased or
    case-ignorable, so lowercasing and collapsing never cross it).
    """
    if lowercase:
        text = text.lower()
    data = text.encode("utf-8").translate(_ASCII_SPACES, _PUNCTUATION)
    if not data.isascii() and any(lead in data for lead in _OTHER_SPACES_LEADS):
        data = _OTHER_SPACES_PATTERN.sub(b" ", data)
    while b"  " in data:
        data = data.replace(b"  ", b" ")
    if separated:
        data = data.replace(b" \x00", b"\x00").replace(b"\x00 ", b"\x00")
    return data.strip(b" ")


def canonicalize_batch(texts: Sequence[str], lowercase: bool = True, prefix: bytes = b"") -> list[bytes]:
    """`prefix` + `canonicalize_text(text)` in UTF-8 for each text, computed on the batch joined into one string."""
    joined = _SEPARATOR.join(texts)
    if len(texts) < 2 or joined.count(_SEPARATOR) != len(texts) - 1:  # nothing to join, or NULs inside texts
        return [prefix + _canonical_utf8(text, lowercase, separated=False) for text in texts]
    return _canonicalize_joined(joined, lowercase, prefix)


def _canonicalize_joined(joined: str, lowercase: bool, prefix: bytes) -> list[bytes]:
    """`canonicalize_batch` of texts already joined by NUL (none of which contains a NUL).

    `▁` travels as the ASCII \x01 when no text holds one (both are neither whitespace, punctuation, cased nor
    case-ignorable, so nothing changes), which keeps ASCII captions on the ASCII fast paths.
    """
    marker = _MARKER not in joined
    if marker:
        joined = joined.replace(SPIECE_UNDERLINE, _MARKER)
    data = _canonical_utf8(joined, lowercase, separated=True)
    separator = _SEPARATOR.encode()
    data = prefix + data.replace(separator, separator + prefix)
    if marker:
        data = data.replace(_MARKER.encode(), SPIECE_UNDERLINE.encode())
    return data.split(separator)


def canonicalize_text(text: str, lowercase: bool = True) -> str:
    """The reference's `canonicalize_text`: lowercase, drop ASCII punctuation, collapse whitespace, strip."""
    return _canonical_utf8(text, lowercase, separated=False).decode("utf-8")


def _token_content(token: Any) -> str | None:
    """The text of a special token given as a string or in its JSON form (`{"content": ...}`)."""
    if token is None or isinstance(token, str):
        return token
    if isinstance(token, dict):
        return token["content"]
    return str(token)


class SiglipTokenizer:
    """SigLIP's tokenizer over a SentencePiece `spiece.model`; ids identical to transformers' `SiglipTokenizer`.

    Args:
        vocab_file: path of the SentencePiece model.
        eos_token: appended to every sequence.
        unk_token: SentencePiece's unknown piece; also the prefix of the encoding trick (see the module doc).
        pad_token: pads batches; SigLIP pads with `</s>`, and was trained with `padding="max_length"`.
        additional_special_tokens: extra strings that are never split and get their own ids.
        sp_model_kwargs: passed to `sentencepiece.SentencePieceProcessor` (e.g. sampling options).
        model_max_length: the default `max_length` for truncation and `padding="max_length"`.
        do_lower_case: lowercase before encoding.
        added_tokens_decoder: `{id: token}` as saved in `tokenizer_config.json`; ids of tokens outside the vocab.
        model_input_names: what `__call__` returns; an `"attention_mask"` entry turns the mask on by default.
        padding_side, truncation_side: `"right"` (default) or `"left"`.
    """

    vocab_files_names: ClassVar[dict[str, str]] = {"vocab_file": VOCAB_FILE}
    model_input_names: list[str] = ["input_ids", "attention_mask"]  # the reference's default

    def __init__(
        self,
        vocab_file: str | os.PathLike,
        eos_token: str = "</s>",
        unk_token: str = "<unk>",
        pad_token: str = "</s>",
        additional_special_tokens: Sequence[str] | None = None,
        sp_model_kwargs: dict[str, Any] | None = None,
        model_max_length: int = 64,
        do_lower_case: bool = True,
        *,
        added_tokens_decoder: dict[int | str, Any] | None = None,
        model_input_names: Sequence[str] | None = None,
        padding_side: str = "right",
        truncation_side: str = "right",
    ) -> None:
        self.vocab_file = str(vocab_file)
        self.sp_model_kwargs = dict(sp_model_kwargs or {})
        self.sp_model = spm.SentencePieceProcessor(**self.sp_model_kwargs)
        self.sp_model.Load(self.vocab_file)
        self.eos_token, self.unk_token, self.pad_token = map(_token_content, (eos_token, unk_token, pad_token))
        self.additional_special_tokens = [_token_content(t) for t in additional_special_tokens or []]
        self.model_max_length = model_max_length
        self.do_lower_case = do_lower_case
        if model_input_names is not None:
            self.model_input_names = list(model_input_names)
        if padding_side not in ("right", "left") or truncation_side not in ("right", "left"):
            raise InputError(
                f"padding_side/truncation_side must be 'right' or 'left', got {padding_side}/{truncation_side}"
            )
        self.padding_side, self.truncation_side = padding_side, truncation_side
        self.num_threads = os.cpu_count() or 1
        self._build_added_tokens(added_tokens_decoder or {})
        # Number of pieces of the "<unk>" prefix to drop after encoding "<unk>" + segment.
        self._unk_prefix = self.unk_token.encode("utf-8")
        self._prefix_length = len(self.sp_model.encode(self.unk_token))

    def _build_added_tokens(self, saved: dict[int | str, Any]) -> None:
        """Ids of the special tokens, as the reference assigns them: saved ids first, then the vocab, then new ids."""
        self._added_tokens: dict[str, int] = {_token_content(t): int(i) for i, t in saved.items()}
        next_id = self.vocab_size + sum(int(i) >= self.vocab_size for i in saved)
        for token in self.all_special_tokens:
            if token in self._added_tokens:
                continue
            piece_id = self.sp_model.piece_to_id(token)
            if self.sp_model.id_to_piece(piece_id) == token:
                self._added_tokens[token] = piece_id
            else:
                self._added_tokens[token], next_id = next_id, next_id + 1
        self._added_ids = {i: t for t, i in self._added_tokens.items()}
        # Added tokens outside the vocab that SentencePiece could still emit as an unknown piece: rare, see _pieces_to_ids.
        self._unk_surfaces = {t for t, i in self._added_tokens.items() if i >= self.vocab_size}
        # Longest first, so that a regex alternation matches like the reference's longest-match trie.
        tokens = sorted(self._added_tokens, key=len, reverse=True)
        self._split_pattern = re.compile("(" + "|".join(map(re.escape, tokens)) + ")") if tokens else None

    # ---------------------------------------------------------------- vocabulary and special tokens

    @property
    def vocab_size(self) -> int:
        """Pieces in the SentencePiece model (added tokens outside it not included)."""
        return self.sp_model.get_piece_size()

    def __len__(self) -> int:
        return len(self.get_vocab())

    def get_vocab(self) -> dict[str, int]:
        """Piece -> id for the whole vocabulary, added tokens included."""
        vocab = {self.sp_model.id_to_piece(i): i for i in range(self.vocab_size)}
        vocab.update(self._added_tokens)
        return vocab

    @property
    def all_special_tokens(self) -> list[str]:
        """eos, unk, pad and the additional special tokens, without repeats, in the reference's order."""
        tokens = [self.eos_token, self.unk_token, self.pad_token, *self.additional_special_tokens]
        return list(dict.fromkeys(t for t in tokens if t is not None))

    @property
    def all_special_ids(self) -> list[int]:
        return [self._added_tokens[t] for t in self.all_special_tokens]

    @property
    def eos_token_id(self) -> int:
        return self._added_tokens[self.eos_token]

    @property
    def unk_token_id(self) -> int:
        return self._added_tokens[self.unk_token]

    @property
    def pad_token_id(self) -> int:
        return self._added_tokens[self.pad_token]

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        """Piece(s) -> id(s); unknown pieces give the `<unk>` id."""
        if isinstance(tokens, str):
            return self._added_tokens[tokens] if tokens in self._added_tokens else self.sp_model.piece_to_id(tokens)
        return [self.convert_tokens_to_ids(token) for token in tokens]

    def convert_ids_to_tokens(self, ids: int | Sequence[int], skip_special_tokens: bool = False) -> str | list[str]:
        """Id(s) -> piece(s)."""
        if isinstance(ids, (int, np.integer)):
            return self._id_to_token(int(ids))
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._id_to_token(int(i)) for i in _as_id_list(ids) if int(i) not in skip]

    def _id_to_token(self, index: int) -> str:
        if index in self._added_ids:
            return self._added_ids[index]
        if not 0 <= index < self.vocab_size:
            raise InputError(f"token id {index} is outside the vocabulary (0..{len(self) - 1}).")
        return self.sp_model.id_to_piece(index)

    # ---------------------------------------------------------------- encoding

    def tokenize(self, text: str) -> list[str]:
        """The pieces of `text`, without `</s>` (what the reference's `tokenize` returns)."""
        rows, _ = self._encode_texts([text], as_pieces=True)
        return rows[0]

    def _encode_texts(self, texts: Sequence[str], as_pieces: bool = False) -> tuple[list[list[Any]], int]:
        """Ids (or pieces) of each text without the final `</s>`, and how many prefix pieces each row still has.

        Texts are prefixed with `▁`, split around special tokens, canonicalised as one batch and encoded in one
        multithreaded SentencePiece call. In the common case (no special token in any text) the rows come back
        as SentencePiece gave them, `"<unk>"` prefix included, for `_finish` to cut in numpy; otherwise they are
        assembled here per text from job indices and special tokens, and the cut is 0.
        """
        if not set(map(type, texts)) <= {str}:
            for position, text in enumerate(texts):
                if not isinstance(text, str):
                    raise InputError(
                        f"text must be a string or a list of strings; item {position} is a {type(text).__name__} "
                        f"({text!r:.60}). Convert it with str() or drop it."
                    )
        # "▁" + text with any "▁" made a space; done on the joined batch unless a text holds a NUL.
        joined = _SEPARATOR.join(texts)
        segments = None
        if joined.count(_SEPARATOR) == len(texts) - 1:
            joined = SPIECE_UNDERLINE + joined.replace(SPIECE_UNDERLINE, " ")
            joined = joined.replace(_SEPARATOR, _SEPARATOR + SPIECE_UNDERLINE)
        else:
            segments = [SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, " ") for text in texts]
            joined = _SEPARATOR.join(segments)
        plans: list[list[int | str]] | None = None
        if self._split_pattern is not None and self._split_pattern.search(joined):
            segments, plans = self._split_special_tokens(segments or joined.split(_SEPARATOR))
        try:
            if segments is None:
                jobs = _canonicalize_joined(joined, self.do_lower_case, self._unk_prefix)
            else:
                jobs = canonicalize_batch(segments, self.do_lower_case, self._unk_prefix)
        except UnicodeEncodeError:
            raise InputError("text contains unpaired surrogate characters, which are not valid Unicode.") from None
        out_type = str if as_pieces else int
        if len(jobs) >= _THREADED_BATCH:
            encoded = self.sp_model.encode(jobs, out_type=out_type, num_threads=self.num_threads)
        else:
            encoded = [self.sp_model.encode(job, out_type=out_type) for job in jobs]
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

    def build_inputs_with_special_tokens(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        """`A </s>` or `A </s> B </s>`; a sequence that already ends in `</s>` gets no second one."""
        eos = self.eos_token_id
        ids = token_ids_0 if token_ids_0 and token_ids_0[-1] == eos else [*token_ids_0, eos]
        if token_ids_1 is None:
            return ids
        return ids + (token_ids_1 if token_ids_1 and token_ids_1[-1] == eos else [*token_ids_1, eos])

    def get_special_tokens_mask(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None, already_has_special_tokens: bool = False
    ) -> list[int]:
        """1 where a special token is (or will be, once `build_inputs_with_special_tokens` ran), else 0."""
        if already_has_special_tokens:
            if token_ids_1 is not None:
                raise InputError("already_has_special_tokens=True takes one formatted sequence, not a pair.")
            special = set(self.all_special_ids)
            return [int(i in special) for i in token_ids_0]
        mask = [0] * len(token_ids_0) + [1]
        return mask if token_ids_1 is None else mask + [0] * len(token_ids_1) + [1]

    def create_token_type_ids_from_sequences(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        """All zeros: SigLIP has no token types."""
        count = len(token_ids_0) + 1 + (0 if token_ids_1 is None else len(token_ids_1) + 1)
        return [0] * count

    def __call__(
        self,
        text: str | Sequence[str],
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        return_tensors: str | None = None,
        return_attention_mask: bool | None = None,
        add_special_tokens: bool = True,
        pad_to_multiple_of: int | None = None,
    ) -> BatchFeature:
        """Tokenize one text or a list of texts into `input_ids` (and `attention_mask`, on by default).

        `padding`: False/"do_not_pad", True/"longest" (to the longest in the batch) or "max_length" (to
        `max_length`, default `model_max_length`). `truncation`: True/"longest_first"/"only_first" cut to
        `max_length` keeping room for `</s>`; passing only `max_length` turns it on, as in the reference.
        `return_tensors`: None (lists), "pt" or "np"; a lone string then gets a batch axis of 1.
        """
        single = isinstance(text, str)
        if not single and not (isinstance(text, (list, tuple)) and text):
            raise InputError(
                f"text must be a string or a non-empty list of strings, got {type(text).__name__}"
                + (" of length 0" if isinstance(text, (list, tuple)) else "")
            )
        if return_tensors not in TENSOR_TYPES:
            raise InputError(f"return_tensors must be one of 'pt', 'np' or None, got {return_tensors!r}")
        padding, truncate, max_length = self._resolve_strategies(padding, truncation, max_length, pad_to_multiple_of)
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names

        rows, cut = self._encode_texts([text] if single else text)
        flat, starts, kept, eos = self._finish(rows, cut, truncate, max_length, add_special_tokens)
        lengths = kept + eos
        target = {"longest": int(lengths.max()), "max_length": max_length, "do_not_pad": None}[padding]
        if target is not None and pad_to_multiple_of and target % pad_to_multiple_of:
            target += pad_to_multiple_of - target % pad_to_multiple_of
        if target is None and (lengths == lengths[0]).all():
            target = int(lengths[0])  # nothing to pad: the rectangular path serves as well
        if target is not None and lengths.max() <= target:
            input_ids, attention_mask = self._pad(flat, starts, kept, eos, target)
            if return_tensors is None:
                input_ids, attention_mask = input_ids.tolist(), attention_mask.tolist()
        elif return_tensors is not None:
            raise InputError(
                f"cannot stack sequences of different lengths ({lengths.min()}..{lengths.max()} tokens) into "
                f"{return_tensors!r} tensors: pass padding=True or padding='max_length' (with truncation=True)."
            )
        else:  # ragged lists; "max_length" without truncation pads the short rows only, like the reference
            input_ids, attention_mask = [], []
            for start, count, length in zip(starts.tolist(), kept.tolist(), lengths.tolist()):
                ids = flat[start : start + count].tolist() + [self.eos_token_id] * (length - count)
                padding_ids = [self.pad_token_id] * max(0, (target or 0) - length)
                mask = [1] * length + [0] * len(padding_ids)
                left = self.padding_side == "left"
                input_ids.append(padding_ids + ids if left else ids + padding_ids)
                attention_mask.append(mask[::-1] if left else mask)

        data = {"input_ids": input_ids}
        if return_attention_mask:
            data["attention_mask"] = attention_mask
        if single and return_tensors is None:
            data = {key: value[0] for key, value in data.items()}
        return BatchFeature(data, tensor_type=return_tensors)

    def _resolve_strategies(
        self, padding: Any, truncation: Any, max_length: int | None, pad_to_multiple_of: int | None = None
    ) -> tuple[str, bool, int | None]:
        """The reference's rules: only `max_length` given -> truncate; a missing `max_length` -> model_max_length."""
        if max_length is not None and padding is False and truncation is None:
            truncation = True
        try:
            padding_strategy, truncation_strategy = _PADDING[padding], _TRUNCATION[truncation]
        except (KeyError, TypeError):
            raise InputError(
                f"padding must be one of {sorted(map(repr, _PADDING))} and truncation one of "
                f"{sorted(map(repr, _TRUNCATION))}; got padding={padding!r}, truncation={truncation!r}"
            ) from None
        truncate = truncation_strategy is not None
        if max_length is None:
            no_limit = self.model_max_length > LARGE_INTEGER
            if padding_strategy == "max_length":
                padding_strategy = "do_not_pad" if no_limit else padding_strategy
                max_length = None if no_limit else self.model_max_length
            if truncate:
                truncate = not no_limit
                max_length = None if no_limit else self.model_max_length
        if truncate and padding_strategy != "do_not_pad" and pad_to_multiple_of and max_length:
            if max_length % pad_to_multiple_of:
                raise InputError(
                    f"truncation to {max_length} tokens and padding to a multiple of {pad_to_multiple_of} disagree: "
                    "make max_length a multiple of pad_to_multiple_of."
                )
        return padding_strategy, truncate, max_length

    def _finish(
        self, rows: list[list[int]], cut: int, truncate: bool, max_length: int | None, add_special_tokens: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Drop the prefix pieces and truncate (keeping room for `</s>`), in numpy.

        Returns all ids as one flat array, each row's start and kept length, and whether it gets a `</s>`
        (every row unless it already ends with one).
        """
        sizes = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        flat = np.fromiter(chain.from_iterable(rows), dtype=np.int64, count=int(sizes.sum()))
        cuts = np.where(sizes >= cut, cut, 0)
        starts = np.cumsum(sizes) - sizes + cuts
        lengths = sizes - cuts
        room = max_length - int(add_special_tokens) if truncate and max_length else None
        if room is not None:
            kept = np.minimum(lengths, max(room, 0))
            if self.truncation_side == "left":
                starts = starts + lengths - kept
            lengths = kept
        if not add_special_tokens:
            return flat, starts, lengths, np.zeros(len(rows), dtype=bool)
        last = flat[np.clip(starts + lengths - 1, 0, max(len(flat) - 1, 0))] if len(flat) else sizes
        return flat, starts, lengths, (lengths == 0) | (last != self.eos_token_id)

    def _pad(
        self, flat: np.ndarray, starts: np.ndarray, kept: np.ndarray, eos: np.ndarray, target: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """A (batch, target) array: each row's kept ids, then its `</s>`, then pad ids; and the attention mask."""
        lengths = kept + eos
        columns = np.arange(target)
        offsets = columns if self.padding_side == "right" else columns - (target - lengths)[:, None]
        # Index into [flat..., pad, eos]: ids where offset < kept, the eos slot at offset == kept, pad elsewhere.
        source = np.append(flat, [self.pad_token_id, self.eos_token_id])
        index = np.where((offsets >= 0) & (offsets < kept[:, None]), starts[:, None] + offsets, len(flat))
        index[(offsets == kept[:, None]) & eos[:, None]] = len(flat) + 1
        mask = (offsets >= 0) & (offsets < lengths[:, None])
        return source[index], mask.astype(np.int64)

    # ---------------------------------------------------------------- decoding

    def decode(self, token_ids: Any, skip_special_tokens: bool = False) -> str:
        """Ids -> text. Special tokens are written out verbatim (SentencePiece never sees them), as in the reference."""
        tokens = self.convert_ids_to_tokens(_as_id_list(token_ids), skip_special_tokens=skip_special_tokens)
        special = set(self.all_special_tokens)
        text, pending, previous_special = "", [], False
        for token in tokens:
            if token in special:
                text += ("" if previous_special else " ") + self.sp_model.decode(pending) + token
                pending, previous_special = [], True
            else:
                pending.append(token)
                previous_special = False
        return (text + self.sp_model.decode(pending)).strip()

    def batch_decode(self, sequences: Any, skip_special_tokens: bool = False) -> list[str]:
        """`decode` for each row of a batch (list of lists, 2-D array or tensor)."""
        return [self.decode(ids, skip_special_tokens=skip_special_tokens) for ids in _as_rows(sequences)]

    # ---------------------------------------------------------------- files

    def save_vocabulary(self, save_directory: str | os.PathLike, filename_prefix: str | None = None) -> tuple[str]:
        """Write `spiece.model` (copied, or serialised from memory if the source file is gone)."""
        target = Path(save_directory) / ((filename_prefix + "-" if filename_prefix else "") + VOCAB_FILE)
        if not Path(save_directory).is_dir():
            raise InputError(f"save_vocabulary needs an existing folder, got {save_directory}")
        source = Path(self.vocab_file)
        if source.is_file():
            if source.resolve() != target.resolve():
                shutil.copyfile(source, target)
        else:
            target.write_bytes(self.sp_model.serialized_model_proto())
        return (str(target),)

    def save_pretrained(self, save_directory: str | os.PathLike) -> tuple[str, ...]:
        """Write spiece.model, tokenizer_config.json and special_tokens_map.json as transformers does."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        (vocab,) = self.save_vocabulary(directory)
        flags = dict(lstrip=False, normalized=False, rstrip=False, single_word=False, special=True)
        added = {str(i): {"content": t, **flags} for t, i in sorted(self._added_tokens.items(), key=lambda x: x[1])}
        config: dict[str, Any] = {
            "added_tokens_decoder": added,
            "backend": "sentencepiece",
            "do_lower_case": self.do_lower_case,
            "eos_token": self.eos_token,
            "extra_special_tokens": self.additional_special_tokens,
            "model_max_length": self.model_max_length,
            "pad_token": self.pad_token,
            "sp_model_kwargs": self.sp_model_kwargs,
            "tokenizer_class": type(self).__name__,
            "unk_token": self.unk_token,
        }
        if self.model_input_names != type(self).model_input_names:
            config["model_input_names"] = self.model_input_names
        for side in ("padding_side", "truncation_side"):
            if getattr(self, side) != "right":
                config[side] = getattr(self, side)
        special_map = {"eos_token": self.eos_token, "pad_token": self.pad_token, "unk_token": self.unk_token}
        if self.additional_special_tokens:
            special_map["additional_special_tokens"] = self.additional_special_tokens
        paths = []
        for name, content in ((CONFIG_FILE, config), (SPECIAL_TOKENS_MAP_FILE, special_map)):
            path = directory / name
            path.write_text(json.dumps(content, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
            paths.append(str(path))
        return (vocab, *paths)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> SiglipTokenizer:
        """Load from a folder or Hub id holding spiece.model (+ tokenizer_config.json, special_tokens_map.json).

        Hub options (revision, cache_dir, local_files_only, token, subfolder) pick the files; any constructor
        argument given here overrides the saved one; other keyword arguments are ignored.
        """
        options = HubOptions.from_kwargs(kwargs)
        name = pretrained_model_name_or_path
        vocab_file = resolve_file(name, VOCAB_FILE, options)
        saved: dict[str, Any] = {}
        for filename in (CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE):  # the special tokens map wins, as in transformers
            path = resolve_file(name, filename, options, required=False)
            if path is not None:
                saved.update(json.loads(Path(path).read_text(encoding="utf-8")))
        extra = saved.get("extra_special_tokens") or saved.get("additional_special_tokens") or []
        saved["additional_special_tokens"] = list(extra.values() if isinstance(extra, dict) else extra)
        accepted = cls._init_keys()
        arguments = {key: value for key, value in saved.items() if key in accepted}
        arguments.update({key: value for key, value in kwargs.items() if key in accepted})
        arguments["vocab_file"] = vocab_file
        return cls(**arguments)

    @classmethod
    def _init_keys(cls) -> set[str]:
        import inspect

        return set(inspect.signature(cls.__init__).parameters) - {"self"}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(vocab_file={self.vocab_file!r}, vocab_size={self.vocab_size}, "
            f"model_max_length={self.model_max_length}, special_tokens={self.all_special_tokens})"
        )


def _as_id_list(ids: Any) -> list[int]:
    """A flat list of Python ints from an int, a list, a 1-D numpy array or tensor."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    return [ids] if isinstance(ids, int) else list(ids)


def _as_rows(sequences: Any) -> list[Any]:
    """A list of rows from a list of lists, a 2-D numpy array or a 2-D tensor."""
    return sequences.tolist() if hasattr(sequences, "tolist") else list(sequences)
