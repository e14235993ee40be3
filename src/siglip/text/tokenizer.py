"""SigLIP's SentencePiece tokenizer: canonicalise, encode, append `</s>`, pad with `</s>`.

The ids are the reference's (transformers' slow `SiglipTokenizer`) for every input. The module is split by
concern: `text.canonical` (big_vision's text canonicalisation, batched), `text.encoding` (text ->
SentencePiece ids with the reference's quirks, threaded), `text.batching` (truncation, padding and output
types, shared with the Gemma tokenizer); this file holds the class, its vocabulary, decoding and files.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import sentencepiece as spm

from ..errors import CheckpointError, ConfigError, InputError
from ..files import read_regular
from ..hub import HubOptions, resolve_file
from .canonical import SPIECE_UNDERLINE, canonicalize_batch, canonicalize_text
from .encoding import SentencePieceEncoding
from .tokenizer_files import check_tokenizer_config, read_tokenizer_json

__all__ = ["SPIECE_UNDERLINE", "SiglipTokenizer", "canonicalize_batch", "canonicalize_text"]

VOCAB_FILE = "spiece.model"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"


def _token_content(token: Any) -> str | None:
    """The text of a special token given as a string or in its JSON form (`{"content": ...}`)."""
    if token is None or isinstance(token, str):
        return token
    if isinstance(token, dict):
        return token["content"]
    return str(token)


class SiglipTokenizer(SentencePieceEncoding):
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
        self.sp_model = load_sentencepiece(self.vocab_file, self.sp_model_kwargs)
        self.eos_token, self.unk_token, self.pad_token = map(_token_content, (eos_token, unk_token, pad_token))
        if not all(isinstance(token, str) for token in (self.eos_token, self.unk_token, self.pad_token)):
            raise ConfigError(
                f"eos_token, unk_token and pad_token must be token strings, got {eos_token!r}, {unk_token!r}, "
                f"{pad_token!r}."
            )
        self.additional_special_tokens = [_token_content(t) for t in additional_special_tokens or []]
        self.model_max_length = int(1e30) if model_max_length is None else model_max_length  # None: no limit
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
        self._setup_encoding()

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

    # ---------------------------------------------------------------- special-token helpers

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
                saved.update(read_tokenizer_json(path))
        extra = saved.get("extra_special_tokens") or saved.get("additional_special_tokens") or []
        saved["additional_special_tokens"] = list(extra.values() if isinstance(extra, dict) else extra)
        accepted = cls._init_keys()
        arguments = {key: value for key, value in saved.items() if key in accepted}
        arguments.update({key: value for key, value in kwargs.items() if key in accepted})
        arguments["vocab_file"] = vocab_file
        return cls(**arguments)

    @classmethod
    def _init_keys(cls) -> set[str]:
        return set(inspect.signature(cls.__init__).parameters) - {"self"}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(vocab_file={self.vocab_file!r}, vocab_size={self.vocab_size}, "
            f"model_max_length={self.model_max_length}, special_tokens={self.all_special_tokens})"
        )


MAX_SPIECE_BYTES = 256 * 1024 * 1024


def load_sentencepiece(vocab_file: str, options: dict[str, Any]) -> spm.SentencePieceProcessor:
    """A SentencePiece model from the regular file `vocab_file` (at most 256 MiB); a file SentencePiece cannot
    parse (empty, garbage, truncated) is a `CheckpointError` naming it."""
    data = read_regular(vocab_file, MAX_SPIECE_BYTES, "the SentencePiece model", CheckpointError)
    try:
        check_tokenizer_config({"sp_model_kwargs": options})
        model = spm.SentencePieceProcessor(**options)
        model.LoadFromSerializedProto(data)
    except (RuntimeError, OSError, TypeError, ValueError) as error:
        if isinstance(error, ConfigError):
            raise
        raise CheckpointError(
            f"the SentencePiece model {vocab_file} cannot be loaded ({type(error).__name__}: {error}): the file is "
            f"empty, corrupt or not a SentencePiece model."
        ) from None
    if model.get_piece_size() <= 0:
        raise CheckpointError(f"the SentencePiece model {vocab_file} holds no pieces.")
    return model


def _as_id_list(ids: Any) -> list[int]:
    """A flat list of Python ints from an int, a list, a 1-D numpy array or tensor."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    return [ids] if isinstance(ids, int) else list(ids)


def _as_rows(sequences: Any) -> list[Any]:
    """A list of rows from a list of lists, a 2-D numpy array or a 2-D tensor."""
    return sequences.tolist() if hasattr(sequences, "tolist") else list(sequences)
