"""Padding, truncation and output packing shared by every tokenizer (`SiglipTokenizer`, `GemmaTokenizer`).

The tokenizers differ only in how they turn texts into ids. What happens next is the reference's
`PreTrainedTokenizerBase` behaviour, written once here and done in numpy on the whole batch:

- `resolve_strategies`: which padding, whether to truncate and to what length (`max_length` alone turns
  truncation on; a missing `max_length` means `model_max_length`, unless that is the "no limit" sentinel);
- `EncodedRows`: every row's ids in one flat array, with per-row start, kept length and whether a `</s>` is still
  to be appended (SigLIP appends it after truncation; Gemma's post-processor already did);
- `pack_rows`: pad (right or left, to the longest row, `max_length` or a multiple), build the attention mask and
  return a `BatchFeature` of lists, numpy arrays or torch tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np

from ..batch import TENSOR_TYPES, BatchFeature
from ..errors import InputError

MAX_PAD_LENGTH = 1 << 20  # longest row padding may produce (a hostile model_max_length must not allocate TiBs)
LARGE_INTEGER = int(1e20)  # the reference's threshold above which model_max_length means "no limit"
PADDING = {True: "longest", False: "do_not_pad", None: "do_not_pad", "longest": "longest"}
PADDING.update({"max_length": "max_length", "do_not_pad": "do_not_pad"})
TRUNCATION = {True: "longest_first", "longest_first": "longest_first", "only_first": "longest_first"}
TRUNCATION.update({False: None, None: None, "do_not_truncate": None})


def check_call(text: Any, return_tensors: str | None) -> bool:
    """Validate the text argument's shape and `return_tensors`; True for a lone string (a batch of one)."""
    single = isinstance(text, str)
    if not single and not (isinstance(text, (list, tuple)) and text):
        raise InputError(
            f"text must be a string or a non-empty list of strings, got {type(text).__name__}"
            + (" of length 0" if isinstance(text, (list, tuple)) else "")
        )
    if not single and not set(map(type, text)) <= {str}:
        for position, item in enumerate(text):
            if not isinstance(item, str):
                raise InputError(
                    f"text must be a string or a list of strings; item {position} is a {type(item).__name__} "
                    f"({item!r:.60}). Convert it with str() or drop it."
                )
    if return_tensors not in TENSOR_TYPES:
        raise InputError(f"return_tensors must be one of 'pt', 'np' or None, got {return_tensors!r}")
    return single


def resolve_strategies(
    padding: Any, truncation: Any, max_length: int | None, pad_to_multiple_of: int | None, model_max_length: int
) -> tuple[str, bool, int | None]:
    """(padding strategy, truncate?, max_length) by the reference's rules."""
    if max_length is not None and padding is False and truncation is None:
        truncation = True
    try:
        padding_strategy, truncation_strategy = PADDING[padding], TRUNCATION[truncation]
    except (KeyError, TypeError):
        raise InputError(
            f"padding must be one of {sorted(map(repr, PADDING))} and truncation one of "
            f"{sorted(map(repr, TRUNCATION))}; got padding={padding!r}, truncation={truncation!r}"
        ) from None
    truncate = truncation_strategy is not None
    if max_length is None:
        no_limit = model_max_length > LARGE_INTEGER
        if padding_strategy == "max_length":
            padding_strategy = "do_not_pad" if no_limit else padding_strategy
            max_length = None if no_limit else model_max_length
        if truncate:
            truncate = not no_limit
            max_length = None if no_limit else model_max_length
    if truncate and padding_strategy != "do_not_pad" and pad_to_multiple_of and max_length:
        if max_length % pad_to_multiple_of:
            raise InputError(
                f"truncation to {max_length} tokens and padding to a multiple of {pad_to_multiple_of} disagree: "
                "make max_length a multiple of pad_to_multiple_of."
            )
    return padding_strategy, truncate, max_length


def flatten_rows(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """All ids of `rows` in one int64 array, and each row's length."""
    sizes = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    return np.fromiter(chain.from_iterable(rows), dtype=np.int64, count=int(sizes.sum())), sizes


@dataclass
class EncodedRows:
    """A batch of id sequences as one flat array: row i is `flat[starts[i] : starts[i] + kept[i]]`, plus `</s>`
    when `eos[i]`."""

    flat: np.ndarray
    starts: np.ndarray
    kept: np.ndarray
    eos: np.ndarray

    @classmethod
    def from_lists(cls, rows: list[list[int]]) -> EncodedRows:
        """Rows as given, nothing to append."""
        flat, sizes = flatten_rows(rows)
        return cls(flat, np.cumsum(sizes) - sizes, sizes, np.zeros(len(rows), dtype=bool))

    @property
    def lengths(self) -> np.ndarray:
        return self.kept + self.eos

    def padded(self, target: int, pad_id: int, eos_id: int, side: str) -> tuple[np.ndarray, np.ndarray]:
        """A (batch, target) array of ids (`</s>` appended where due, pad ids around) and its attention mask."""
        lengths = self.lengths
        shift = 0 if side == "right" else (target - lengths)[:, None]
        offsets = np.arange(target)[None, :] - shift  # position within each row's own ids
        ids = np.full((len(lengths), target), pad_id, dtype=np.int64)
        ids[(offsets >= 0) & (offsets < self.kept[:, None])] = self.flat[self._kept_positions()]
        rows = np.flatnonzero(self.eos)
        ids[rows, self.kept[rows] + (0 if side == "right" else target - lengths[rows])] = eos_id
        mask = (offsets >= 0) & (offsets < lengths[:, None])
        return ids, mask.astype(np.int64)

    def _kept_positions(self) -> np.ndarray | slice:
        """Indices into `flat` of every kept id, row after row."""
        total = int(self.kept.sum())
        if total == len(self.flat):
            return slice(None)
        out_starts = np.cumsum(self.kept) - self.kept  # where each row's ids begin in the packed output
        return np.repeat(self.starts - out_starts, self.kept) + np.arange(total)

    def to_lists(self, target: int | None, pad_id: int, eos_id: int, side: str) -> tuple[list, list]:
        """Ragged lists: rows shorter than `target` padded, longer ones left as they are (the reference's rule)."""
        input_ids, attention_mask = [], []
        flat = self.flat.tolist()
        for start, count, length in zip(self.starts.tolist(), self.kept.tolist(), self.lengths.tolist()):
            ids = flat[start : start + count] + [eos_id] * (length - count)
            padding = [pad_id] * max(0, (target or 0) - length)
            mask = [1] * length + [0] * len(padding)
            left = side == "left"
            input_ids.append(padding + ids if left else ids + padding)
            attention_mask.append(mask[::-1] if left else mask)
        return input_ids, attention_mask


def pack_rows(
    rows: EncodedRows,
    padding_strategy: str,
    max_length: int | None,
    pad_to_multiple_of: int | None,
    *,
    pad_id: int | None,
    eos_id: int,
    padding_side: str,
    return_tensors: str | None,
    return_attention_mask: bool,
    single: bool,
) -> BatchFeature:
    """Pad `rows` by `padding_strategy` and return `input_ids` (+ `attention_mask`) as the caller asked."""
    lengths = rows.lengths
    target = {"longest": int(lengths.max()), "max_length": max_length, "do_not_pad": None}[padding_strategy]
    if target is not None and pad_id is None:
        raise InputError("asking to pad but the tokenizer has no pad_token")
    if target is not None and pad_to_multiple_of and target % pad_to_multiple_of:
        target += pad_to_multiple_of - target % pad_to_multiple_of
    if target is not None and target > MAX_PAD_LENGTH:
        raise InputError(
            f"padding to {target} tokens is more than {MAX_PAD_LENGTH}: pass max_length= (the model's text length, "
            f"e.g. 64), or check model_max_length in tokenizer_config.json."
        )
    if target is None and (lengths == lengths[0]).all():
        target = int(lengths[0])  # nothing to pad: the rectangular path serves as well
    if target is not None and lengths.max() <= target:
        input_ids, attention_mask = rows.padded(target, pad_id if pad_id is not None else 0, eos_id, padding_side)
        if return_tensors is None:
            input_ids, attention_mask = input_ids.tolist(), attention_mask.tolist()
    elif return_tensors is not None:
        raise InputError(_ragged_message(lengths, target, return_tensors))
    else:
        input_ids, attention_mask = rows.to_lists(target, pad_id, eos_id, padding_side)
    data = {"input_ids": input_ids}
    if return_attention_mask:
        data["attention_mask"] = attention_mask
    if single and return_tensors is None:
        data = {key: value[0] for key, value in data.items()}
    return BatchFeature(data, tensor_type=return_tensors)


def _ragged_message(lengths: Any, target: int | None, return_tensors: str) -> str:
    """Why rows of different lengths cannot become `return_tensors` tensors, and the one fix that applies."""
    if target is not None:  # padding to `target` was asked, but some texts are longer and nothing cuts them
        longer = int((lengths > target).sum())
        return (
            f"cannot stack texts of different lengths into {return_tensors!r} tensors: {longer} of {len(lengths)} "
            f"texts are longer than max_length={target} tokens (the longest has {int(lengths.max())}) and "
            f"truncation is off: pass truncation=True to cut them to {target} tokens."
        )
    return (
        f"cannot stack texts of different lengths ({int(lengths.min())}..{int(lengths.max())} tokens) into "
        f"{return_tensors!r} tensors without padding: pass padding='max_length' (what SigLIP was trained with; "
        f"add truncation=True for texts longer than max_length) or padding=True (pad to the longest)."
    )


class BatchingTokenizer:
    """`__call__` for every tokenizer: subclasses implement `_rows` (texts -> `EncodedRows`, truncated) and have
    `model_max_length`, `model_input_names`, `padding_side`, `pad_token_id` and `eos_token_id`."""

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
        padding_side: str | None = None,
    ) -> BatchFeature:
        """Tokenize one text or a list of texts into `input_ids` (and `attention_mask` when `model_input_names`
        lists it, or when asked).

        `padding`: False/"do_not_pad", True/"longest" (to the longest in the batch) or "max_length" (to
        `max_length`, default `model_max_length`). `truncation`: True/"longest_first"/"only_first" cut to
        `max_length` (keeping room for the end token); passing only `max_length` turns it on, as in the reference.
        `return_tensors`: None (lists), "pt" or "np"; a lone string then gets a batch axis of 1.
        """
        single = check_call(text, return_tensors)
        padding, truncate, max_length = resolve_strategies(
            padding, truncation, max_length, pad_to_multiple_of, self.model_max_length
        )
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        return pack_rows(
            self._rows([text] if single else list(text), truncate, max_length, add_special_tokens),
            padding,
            max_length,
            pad_to_multiple_of,
            pad_id=self.pad_token_id,
            eos_id=self.eos_token_id,
            padding_side=padding_side or self.padding_side,
            return_tensors=return_tensors,
            return_attention_mask=return_attention_mask,
            single=single,
        )

    def _rows(self, texts: list[str], truncate: bool, max_length: int | None, add_special_tokens: bool) -> EncodedRows:
        raise NotImplementedError
