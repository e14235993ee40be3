"""Reading a tokenizer's JSON files from an untrusted folder: tokenizer_config.json, special_tokens_map.json.

Both tokenizers (SentencePiece `SiglipTokenizer`, Gemma `GemmaTokenizer`) read them through `read_tokenizer_json`,
which checks every field they use for type and range and raises `ConfigError` naming the file and the field,
before a tokenizer is built. `sp_model_kwargs` may only hold SentencePiece's sampling options: anything else
(`model_file`, ...) would let a folder point the tokenizer at files outside it.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import ConfigError
from ..files import read_json

TOKEN_FIELDS = ("bos_token", "eos_token", "unk_token", "pad_token", "mask_token", "sep_token", "cls_token")
BOOL_FIELDS = ("do_lower_case", "add_bos_token", "add_eos_token", "clean_up_tokenization_spaces", "legacy")
SIDE_FIELDS = ("padding_side", "truncation_side")
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
SAMPLING_OPTIONS = {"enable_sampling": bool, "nbest_size": int, "alpha": (int, float)}
MAX_TOKENIZER_CONFIG_BYTES = 16 * 1024 * 1024


def read_tokenizer_json(path: str | os.PathLike) -> dict[str, Any]:
    """Parse and check a tokenizer_config.json or special_tokens_map.json (ConfigError naming file and field)."""
    config = read_json(path, "tokenizer file", ConfigError, max_bytes=MAX_TOKENIZER_CONFIG_BYTES)
    if not isinstance(config, dict):
        raise ConfigError(f"{path} must hold a JSON object, got {type(config).__name__}.")
    try:
        check_tokenizer_config(config)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    return config


def check_tokenizer_config(config: dict[str, Any]) -> None:
    """Raise ConfigError for the first field of `config` with a wrong type or value."""
    length = config.get("model_max_length")
    if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
        raise ConfigError(f"model_max_length must be a positive integer, got {length!r}.")
    for name in BOOL_FIELDS:
        if config.get(name) is not None and not isinstance(config[name], bool):
            raise ConfigError(f"{name} must be true or false, got {config[name]!r}.")
    for name in SIDE_FIELDS:
        if config.get(name) is not None and config[name] not in ("right", "left"):
            raise ConfigError(f"{name} must be 'right' or 'left', got {config[name]!r}.")
    for name in TOKEN_FIELDS:
        check_token(name, config.get(name))
    for name in ("additional_special_tokens", "extra_special_tokens"):
        tokens = config.get(name)
        if tokens is None:
            continue
        if not isinstance(tokens, (list, dict)):
            raise ConfigError(f"{name} must be a list of tokens (or an object of named tokens), got {tokens!r}.")
        for token in tokens.values() if isinstance(tokens, dict) else tokens:
            check_token(name, token, required=True)
    _check_added_tokens(config.get("added_tokens_decoder"))
    names = config.get("model_input_names")
    if names is not None and not (isinstance(names, list) and names and all(n in INPUT_NAMES for n in names)):
        raise ConfigError(f"model_input_names must be a list drawn from {list(INPUT_NAMES)}, got {names!r}.")
    _check_sampling(config.get("sp_model_kwargs"))


def check_token(name: str, token: Any, required: bool = False) -> None:
    """A special token is a string or its JSON form `{"content": "...", ...}` (or null where optional)."""
    if token is None and not required:
        return
    if isinstance(token, str):
        return
    if isinstance(token, dict) and isinstance(token.get("content"), str):
        return
    raise ConfigError(f'{name} must be a token string or {{"content": string, ...}}, got {token!r}.')


def _check_added_tokens(added: Any) -> None:
    if added is None:
        return
    if not isinstance(added, dict):
        raise ConfigError(f"added_tokens_decoder must be an object {{id: token}}, got {type(added).__name__}.")
    for key, token in added.items():
        text = str(key)
        if not (text.isascii() and text.isdigit() and len(text) < 10):
            raise ConfigError(f"added_tokens_decoder keys must be token ids (0-999999999), got {key!r}.")
        check_token(f"added_tokens_decoder[{key}]", token, required=True)


def _check_sampling(options: Any) -> None:
    if options is None:
        return
    if not isinstance(options, dict):
        raise ConfigError(f"sp_model_kwargs must be an object, got {options!r}.")
    for key, value in options.items():
        kind = SAMPLING_OPTIONS.get(key)
        if kind is None:
            raise ConfigError(
                f"sp_model_kwargs may only hold SentencePiece's sampling options {sorted(SAMPLING_OPTIONS)}, "
                f"got {key!r}."
            )
        if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
            raise ConfigError(f"sp_model_kwargs[{key!r}] has the wrong type: {value!r}.")
