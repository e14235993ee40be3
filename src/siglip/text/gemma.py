"""The SigLIP2 text tokenizer: Gemma's byte-fallback BPE from a `tokenizer.json`, via the `tokenizers` library.

SigLIP2 checkpoints ship Gemma tokenizer files (`tokenizer.json`, `tokenizer_config.json`, maybe
`special_tokens_map.json` and `tokenizer.model`). Two classes read them, as the reference does:

- `GemmaTokenizer`: what FixRes SigLIP2 checkpoints (config `model_type: "siglip"`) load, because their
  `tokenizer_config.json` names `GemmaTokenizer`. Text is *not* lowercased.
- `Siglip2Tokenizer`: what NaFlex checkpoints (`model_type: "siglip2"`) load. Identical, plus a `Lowercase`
  normaliser, the SigLIP2 training default.

Like the reference, the pipeline is rebuilt rather than trusted from the file: a BPE model over the file's vocab
and merges (byte fallback, fused unknowns), spaces replaced by `▁`, `▁ -> space` + byte fallback + fuse when
decoding. What the file does decide: the vocabulary, the merges and the post-processor (Gemma's SigLIP2 files
append `<eos>` and add no `<bos>`). Special and added tokens come from `tokenizer_config.json`
(`added_tokens_decoder`), or from the file's `added_tokens` when the config has none; `<pad>` (id 0) pads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from ..errors import CheckpointError, ConfigError, InputError, SiglipError
from ..files import read_json
from ..hub import HubOptions, resolve_file
from .batching import BatchingTokenizer, EncodedRows
from .tokenizer_files import read_tokenizer_json

MAX_TOKENIZER_JSON_BYTES = 256 * 1024 * 1024  # Gemma's tokenizer.json is ~35 MB

VERY_LARGE_INTEGER = int(1e30)  # the reference's "no limit" model_max_length
NAMED_SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# tokenizer_config.json keys that describe this object; everything else in the file is kept and written back.
_OWN_CONFIG_KEYS = {
    *NAMED_SPECIAL_TOKENS,
    "added_tokens_decoder",
    "additional_special_tokens",
    "extra_special_tokens",
    "padding_side",
    "truncation_side",
    "model_max_length",
    "model_input_names",
    "clean_up_tokenization_spaces",
    "tokenizer_class",
    "add_bos_token",
    "add_eos_token",
    "tokenizer_file",
    "name_or_path",
}


def _content(token: str | dict | AddedToken | None) -> str | None:
    """The text of a special token given as a string, an `AddedToken` or its JSON form."""
    if token is None or isinstance(token, str):
        return token
    if isinstance(token, AddedToken):
        return token.content
    return token["content"]


def _added_token(spec: str | dict | AddedToken, special: bool) -> AddedToken:
    """An `AddedToken` from its JSON form (`{"content": ..., "normalized": ...}`) or a plain string."""
    if isinstance(spec, AddedToken):
        return spec
    if isinstance(spec, str):
        return AddedToken(spec, special=special, normalized=not special)
    flags = {key: spec[key] for key in ("single_word", "lstrip", "rstrip", "normalized", "special") if key in spec}
    token = AddedToken(spec["content"], **flags)
    if special and not token.special:
        token = AddedToken(spec["content"], **{**flags, "special": True})
    return token


class GemmaTokenizer(BatchingTokenizer):
    """Gemma byte-fallback BPE tokenizer returning `BatchFeature`s; matches transformers' `GemmaTokenizer(Fast)`.

    Build it with `from_pretrained(folder_or_hub_id)`; the constructor takes the parsed `tokenizer.json` and the
    `tokenizer_config.json` settings. `padding_side` defaults to `"left"` like the reference class; SigLIP2
    checkpoints set `"right"` in their config. Whether `attention_mask` is returned by default follows
    `model_input_names` (SigLIP2 checkpoints list only `input_ids`: their text tower was trained without one).
    """

    lowercase: ClassVar[bool] = False
    default_padding_side: ClassVar[str] = "left"

    def __init__(
        self,
        tokenizer_json: dict[str, Any],
        *,
        bos_token: str | dict | None = "<bos>",
        eos_token: str | dict | None = "<eos>",
        unk_token: str | dict | None = "<unk>",
        pad_token: str | dict | None = "<pad>",
        mask_token: str | dict | None = "<mask>",
        sep_token: str | dict | None = None,
        cls_token: str | dict | None = None,
        extra_special_tokens: list | None = None,
        added_tokens_decoder: dict[str, dict] | None = None,
        padding_side: str | None = None,
        truncation_side: str = "right",
        model_max_length: int = VERY_LARGE_INTEGER,
        model_input_names: list[str] | None = None,
        add_bos_token: bool | None = None,
        add_eos_token: bool | None = None,
        **extra_config: Any,
    ) -> None:
        specials = dict(
            bos_token=bos_token,
            eos_token=eos_token,
            unk_token=unk_token,
            pad_token=pad_token,
            mask_token=mask_token,
            sep_token=sep_token,
            cls_token=cls_token,
        )
        if eos_token is None or unk_token is None:  # the byte-fallback BPE and the row packing need both
            raise ConfigError(
                f"{type(self).__name__} needs an eos_token and an unk_token, got {eos_token!r} / {unk_token!r}."
            )
        self.special_tokens = {key: _content(value) for key, value in specials.items() if value is not None}
        self.extra_special_tokens = [_content(token) for token in extra_special_tokens or []]
        file_padding = tokenizer_json.get("padding") or {}
        self.padding_side = padding_side or file_padding.get("direction", "").lower() or self.default_padding_side
        self.truncation_side = truncation_side
        self.model_max_length = int(model_max_length)
        self.model_input_names = list(model_input_names or ["input_ids", "attention_mask"])
        self.config = extra_config  # unknown tokenizer_config.json keys, written back by save_pretrained
        self._backend = self._build_backend(tokenizer_json, specials, extra_special_tokens, added_tokens_decoder)
        if add_bos_token is not None or add_eos_token is not None:
            self._set_template(bool(add_bos_token), bool(add_eos_token))

    # ------------------------------------------------------------------ construction
    def _build_backend(
        self,
        tokenizer_json: dict[str, Any],
        specials: dict[str, Any],
        extra_special_tokens: list | None,
        added_tokens_decoder: dict[str, dict] | None,
    ) -> Tokenizer:
        """The reference's Gemma pipeline over the file's vocab/merges, its post-processor and its added tokens."""
        model = tokenizer_json.get("model", {})
        if model.get("type", "BPE") != "BPE" or not isinstance(model.get("vocab"), dict):
            raise InputError(f"{type(self).__name__} needs a BPE tokenizer.json, got model type {model.get('type')!r}")
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]
        unk = _content(specials["unk_token"])
        bpe = models.BPE(vocab=model["vocab"], merges=merges, fuse_unk=True, unk_token=unk, byte_fallback=True)
        backend = Tokenizer(bpe)
        replace = normalizers.Replace(" ", "▁")
        backend.normalizer = normalizers.Sequence([normalizers.Lowercase(), replace]) if self.lowercase else replace
        backend.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
        backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
        if tokenizer_json.get("post_processor") is not None:
            processor = dict(tokenizer_json, model={**model, "vocab": {}, "merges": []}, added_tokens=[])
            backend.post_processor = Tokenizer.from_str(json.dumps(processor)).post_processor

        # Added tokens: the config's added_tokens_decoder (or the file's list) by id, then named/extra specials.
        if added_tokens_decoder:
            listed = sorted(((int(i), spec) for i, spec in added_tokens_decoder.items()), key=lambda item: item[0])
        else:
            listed = [(spec["id"], spec) for spec in tokenizer_json.get("added_tokens", [])]
        named = {_content(value) for value in specials.values() if value is not None}
        tokens = {}
        for _, spec in listed:
            token = _added_token(spec, special=False)
            if token.content in named and not token.special:
                token = _added_token({**spec, "special": True}, special=True)
            tokens.setdefault(token.content, token)
        for value in [*specials.values(), *(extra_special_tokens or [])]:
            if value is not None and _content(value) not in tokens:
                tokens[_content(value)] = _added_token(value, special=True)
        backend.add_tokens(list(tokens.values()))
        return backend

    def _set_template(self, add_bos: bool, add_eos: bool) -> None:
        """Replace the post-processor by `[<bos>] $A [<eos>]`, as the reference does for explicit add_*_token."""
        bos, eos = self.special_tokens.get("bos_token"), self.special_tokens.get("eos_token")
        add_bos, add_eos = add_bos and bos is not None, add_eos and eos is not None
        single = f"{bos + ':0 ' if add_bos else ''}$A:0{' ' + eos + ':0' if add_eos else ''}"
        pair = f"{single}{' ' + bos + ':1' if add_bos else ''} $B:1{' ' + eos + ':1' if add_eos else ''}"
        used = [(token, self._backend.token_to_id(token)) for token, on in ((bos, add_bos), (eos, add_eos)) if on]
        self._backend.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=used)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> GemmaTokenizer:
        """Load from a folder or Hub id holding `tokenizer.json` (+ optional `tokenizer_config.json`).

        Keyword arguments override `tokenizer_config.json` entries (e.g. `padding_side="right"`,
        `add_eos_token=True`); Hub options (`revision`, `cache_dir`, `local_files_only`, `token`, `subfolder`)
        choose where files come from.
        """
        options = HubOptions.from_kwargs(kwargs)
        path = resolve_file(pretrained_model_name_or_path, "tokenizer.json", options)
        tokenizer_json = read_json(path, "the tokenizer file", CheckpointError, max_bytes=MAX_TOKENIZER_JSON_BYTES)
        if not isinstance(tokenizer_json, dict):
            raise CheckpointError(f"{path} must hold a JSON object, got {type(tokenizer_json).__name__}.")
        config_path = resolve_file(pretrained_model_name_or_path, "tokenizer_config.json", options, required=False)
        config = read_tokenizer_json(config_path) if config_path else {}
        config.pop("add_bos_token", None)  # with a tokenizer.json the reference trusts its post-processor
        config.pop("add_eos_token", None)
        for key in ("tokenizer_class", "tokenizer_file", "name_or_path", "auto_map", "backend", "is_local"):
            config.pop(key, None)
        if "added_tokens_decoder" not in config:  # legacy folders: special tokens in special_tokens_map.json
            map_path = resolve_file(pretrained_model_name_or_path, "special_tokens_map.json", options, required=False)
            for key, value in (read_tokenizer_json(map_path) if map_path else {}).items():
                config.setdefault(key, value)
        if "additional_special_tokens" in config and not config.get("extra_special_tokens"):
            config["extra_special_tokens"] = config.pop("additional_special_tokens")
        config.pop("additional_special_tokens", None)
        if isinstance(config.get("extra_special_tokens"), dict):  # model-specific named tokens
            config["extra_special_tokens"] = list(config["extra_special_tokens"].values())
        config.update(kwargs)
        try:
            return cls(tokenizer_json, **config)
        except SiglipError:
            raise
        except Exception as error:  # noqa: BLE001 - a malformed tokenizer.json fails anywhere in the tokenizers library
            raise CheckpointError(
                f"cannot build a tokenizer from {path} ({type(error).__name__}: {error}): the file is malformed."
            ) from None

    def save_pretrained(self, save_directory: str | os.PathLike) -> tuple[str, str]:
        """Write `tokenizer.json` and `tokenizer_config.json` in the layout transformers 5 writes and reads."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._backend.no_padding()
        self._backend.no_truncation()
        tokenizer_file = directory / "tokenizer.json"
        self._backend.save(str(tokenizer_file))
        config = {
            **self.config,
            "backend": "tokenizers",
            **self.special_tokens,
            "extra_special_tokens": self.extra_special_tokens,
            "model_input_names": self.model_input_names,
            "model_max_length": self.model_max_length,
            "padding_side": self.padding_side,
            "truncation_side": self.truncation_side,
            "clean_up_tokenization_spaces": False,
            "tokenizer_class": type(self).__name__,
        }
        config_file = directory / "tokenizer_config.json"
        config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False, sort_keys=True) + "\n", "utf-8")
        return str(tokenizer_file), str(config_file)

    # ------------------------------------------------------------------ vocabulary
    @property
    def backend_tokenizer(self) -> Tokenizer:
        """The underlying `tokenizers.Tokenizer`."""
        return self._backend

    @property
    def vocab_size(self) -> int:
        """Size of the BPE vocabulary, without added tokens."""
        return self._backend.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self._backend.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        return self._backend.get_vocab(with_added_tokens=True)

    def __getattr__(self, name: str) -> Any:
        # bos_token, pad_token_id, ...: named special tokens and their ids.
        specials = self.__dict__.get("special_tokens", {})
        if name in NAMED_SPECIAL_TOKENS:
            return specials.get(name)
        if name.endswith("_token_id") and name[: -len("_id")] in NAMED_SPECIAL_TOKENS:
            token = specials.get(name[: -len("_id")])
            return None if token is None else self.convert_tokens_to_ids(token)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def all_special_tokens(self) -> list[str]:
        """Named special tokens, then the extra ones, without duplicates."""
        return list(dict.fromkeys([*self.special_tokens.values(), *self.extra_special_tokens]))

    @property
    def all_special_ids(self) -> list[int]:
        return [self.convert_tokens_to_ids(token) for token in self.all_special_tokens]

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> int | list[int]:
        """Token(s) -> id(s); unknown tokens map to the `<unk>` id."""
        if isinstance(tokens, str):
            index = self._backend.token_to_id(tokens)
            return self._backend.token_to_id(self.special_tokens.get("unk_token", "")) if index is None else index
        return [self.convert_tokens_to_ids(token) for token in tokens]

    def convert_ids_to_tokens(self, ids: int | list[int], skip_special_tokens: bool = False) -> str | list[str]:
        """Id(s) -> token string(s); optionally drop the special tokens."""
        if isinstance(ids, int):
            return self._backend.id_to_token(ids)
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._backend.id_to_token(int(i)) for i in ids if int(i) not in skip]

    def tokenize(self, text: str) -> list[str]:
        """The tokens of `text`, without special tokens."""
        return self._backend.encode(text, add_special_tokens=False).tokens

    # ------------------------------------------------------------------ encode / decode
    def _rows(self, texts: list[str], truncate: bool, max_length: int | None, add_special_tokens: bool) -> EncodedRows:
        """The backend's ids (its post-processor adds `<eos>`; its truncation keeps room for it); padding is shared
        with SiglipTokenizer (`text.batching.BatchingTokenizer.__call__`)."""
        backend = self._backend
        if truncate and max_length is not None:
            backend.enable_truncation(max_length, strategy="longest_first", direction=self.truncation_side)
        try:
            encodings = backend.encode_batch(texts, add_special_tokens=add_special_tokens)
        finally:
            backend.no_truncation()
        return EncodedRows.from_lists([encoding.ids for encoding in encodings])

    def decode(self, token_ids: int | list[int] | Any, skip_special_tokens: bool = False) -> str:
        """Ids -> text (`▁` back to spaces, byte-fallback tokens merged into UTF-8)."""
        if hasattr(token_ids, "tolist"):
            token_ids = token_ids.tolist()
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        return self._backend.decode(list(token_ids), skip_special_tokens=skip_special_tokens)

    def batch_decode(self, sequences: list[list[int]] | Any, skip_special_tokens: bool = False) -> list[str]:
        """`decode` for each row of a batch."""
        if hasattr(sequences, "tolist"):
            sequences = sequences.tolist()
        return [self.decode(ids, skip_special_tokens=skip_special_tokens) for ids in sequences]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(vocab_size={self.vocab_size}, added={len(self) - self.vocab_size}, "
            f"padding_side={self.padding_side!r}, special_tokens={self.special_tokens})"
        )


GemmaTokenizerFast = GemmaTokenizer


class Siglip2Tokenizer(GemmaTokenizer):
    """`GemmaTokenizer` + lowercasing of the input text, the SigLIP2 training default (NaFlex checkpoints)."""

    lowercase: ClassVar[bool] = True
