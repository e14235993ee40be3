"""Type and range checks of every config.json field, run before anything is built.

A model folder is untrusted input: a `hidden_size` of "abc", `num_attention_heads: 0`, `patch_size: -8` or
`num_hidden_layers: 1000000` must be refused as a `ConfigError` naming the field, in milliseconds, not reach a
TypeError at the first forward or build a model for minutes. The bounds are far above every released SigLIP /
SigLIP2 checkpoint (so400m: width 1152, 27 layers; giant: width 1536, 40 layers) and far below what would
exhaust a machine; `MAX_TOWER_PARAMETERS` bounds their product.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .errors import ConfigError

# field -> (smallest, largest) accepted integer.
INT_BOUNDS: dict[str, tuple[int, int]] = {
    "vocab_size": (1, 1 << 22),
    "hidden_size": (1, 1 << 16),
    "intermediate_size": (1, 1 << 18),
    "num_hidden_layers": (0, 1024),
    "num_attention_heads": (1, 1 << 12),
    "max_position_embeddings": (1, 1 << 16),
    "num_channels": (1, 64),
    "image_size": (1, 1 << 15),
    "patch_size": (1, 1 << 12),
    "num_patches": (1, 1 << 20),
    "projection_size": (1, 1 << 16),
}
# Token ids the model never uses (kept for compatibility): any 32-bit integer, or None.
TOKEN_ID_FIELDS = ("pad_token_id", "bos_token_id", "eos_token_id")
# field -> (lowest, highest, whether lowest itself is accepted) for floats.
FLOAT_BOUNDS: dict[str, tuple[float, float, bool]] = {
    "layer_norm_eps": (0.0, 1.0, False),
    "attention_dropout": (0.0, 1.0, True),
    "initializer_factor": (0.0, 1e6, True),
}
BOOL_FIELDS = ("vision_use_head", "return_dict", "output_attentions", "output_hidden_states")
MAX_LABELS = 1_000_000
# A tower's parameter count (layers x (4 h^2 + 2 h i) + embeddings) beyond this is refused (~34 billion).
MAX_TOWER_PARAMETERS = 1 << 35
# Fields that may be None (the class then chooses).
OPTIONAL_FIELDS = ("projection_size", "image_size")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_int(name: str, value: Any, low: int, high: int) -> int:
    """`value` if it is an integer in [low, high] (not a bool, not a float), else ConfigError naming `name`."""
    if not _is_int(value) or not low <= value <= high:
        raise ConfigError(f"{name} must be an integer in [{low}, {high}], got {value!r}.")
    return value


def check_float(name: str, value: Any, low: float, high: float, low_inclusive: bool = True) -> float:
    """`value` if it is a finite number in the range, else ConfigError naming `name`."""
    valid = _is_number(value) and math.isfinite(value) and value <= high
    if not valid or not (value >= low if low_inclusive else value > low):
        bracket = "[" if low_inclusive else "("
        raise ConfigError(f"{name} must be a finite number in {bracket}{low}, {high}], got {value!r}.")
    return value


def check_config_fields(config: Any) -> None:
    """Check every known field that `config` (a config dataclass, after construction) carries."""
    fields = vars(config)
    declared = getattr(type(config), "__dataclass_fields__", {})
    for name in ("text_config", "vision_config"):
        if name in fields and name not in declared:  # an extra key: a tower config holding a sub-config
            raise ConfigError(
                f"{name} belongs in a two-tower config (model_type siglip or siglip2), not in a "
                f"{getattr(config, 'model_type', '')!r} config."
            )
    for name, (low, high) in INT_BOUNDS.items():
        optional = name in OPTIONAL_FIELDS and getattr(type(config), name, 0) is None  # None is the default
        if name in fields and not (optional and fields[name] is None):
            check_int(name, fields[name], low, high)
    for name, (low, high, inclusive) in FLOAT_BOUNDS.items():
        if name in fields:
            check_float(name, fields[name], low, high, inclusive)
    for name in BOOL_FIELDS:
        if name in fields and not isinstance(fields[name], bool):
            raise ConfigError(f"{name} must be true or false, got {fields[name]!r}.")
    for name in TOKEN_ID_FIELDS:
        value = fields.get(name)
        values = value if isinstance(value, list) else [value]
        if not all(v is None or (_is_int(v) and -(1 << 31) <= v < 1 << 31) for v in values):
            raise ConfigError(f"{name} must be an integer, a list of integers or null, got {value!r}.")
    for name in ("hidden_act", "dtype", "problem_type", "attn_implementation"):
        value = fields.get(name)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}.")
    if fields.get("hidden_act") == "":
        raise ConfigError("hidden_act must name an activation, got ''.")
    architectures = fields.get("architectures")
    if architectures is not None and not (
        isinstance(architectures, list) and all(isinstance(a, str) for a in architectures)
    ):
        raise ConfigError(f"architectures must be a list of class names, got {architectures!r}.")
    check_labels(fields.get("id2label"), fields.get("label2id"))
    if "hidden_size" in fields and "num_attention_heads" in fields:
        _check_tower_size(fields)


def _check_tower_size(fields: dict[str, Any]) -> None:
    hidden, heads = fields["hidden_size"], fields["num_attention_heads"]
    if hidden % heads:
        raise ConfigError(f"hidden_size ({hidden}) must be divisible by num_attention_heads ({heads}).")
    if heads > hidden:
        raise ConfigError(f"num_attention_heads ({heads}) must not exceed hidden_size ({hidden}).")
    patch, image = fields.get("patch_size"), fields.get("image_size")
    if patch is not None and image is not None and patch > image:
        raise ConfigError(f"patch_size ({patch}) must not exceed image_size ({image}).")
    layers, inner = fields.get("num_hidden_layers", 0), fields.get("intermediate_size", 0)
    embeddings = fields.get("vocab_size", 0) + fields.get("max_position_embeddings", 0)
    if image is not None and patch is not None:
        embeddings += (image // patch) ** 2 + fields.get("num_channels", 3) * patch * patch
    embeddings += fields.get("num_patches", 0)
    total = layers * (4 * hidden * hidden + 2 * hidden * inner) + embeddings * hidden
    if total > MAX_TOWER_PARAMETERS:
        raise ConfigError(
            f"these sizes (hidden_size {hidden}, intermediate_size {inner}, {layers} layers) make a tower of "
            f"~{total / 1e9:.0f} billion parameters, more than the limit of {MAX_TOWER_PARAMETERS / 1e9:.0f} "
            f"billion; refused."
        )


def check_labels(id2label: Any, label2id: Any) -> None:
    """id2label: {index: name} with integer (or integer-string) indices; label2id: {name: index}."""
    if not isinstance(id2label, dict):
        raise ConfigError(f"id2label must be an object {{index: label}}, got {type(id2label).__name__}.")
    if len(id2label) > MAX_LABELS:
        raise ConfigError(f"id2label has {len(id2label)} labels, more than {MAX_LABELS}.")
    for key, value in id2label.items():
        if _index(key) is None or not isinstance(value, str):
            raise ConfigError(f"id2label must map integer indices to label strings, got {key!r}: {value!r}.")
    if label2id is not None:
        if not isinstance(label2id, dict):
            raise ConfigError(f"label2id must be an object {{label: index}}, got {type(label2id).__name__}.")
        for key, value in label2id.items():
            if not isinstance(key, str) or _index(value) is None:
                raise ConfigError(f"label2id must map label strings to integer indices, got {key!r}: {value!r}.")


def _index(value: Any) -> int | None:
    if _is_int(value):
        return value if 0 <= value < 1 << 31 else None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 10:
        return int(value)
    return None


def check_num_labels(value: Any) -> int:
    return check_int("num_labels", value, 0, MAX_LABELS)


@contextmanager
def config_field(prefix: str) -> Iterator[None]:
    """ConfigErrors raised inside name the sub-config they come from (`text_config: hidden_size ...`)."""
    try:
        yield
    except ConfigError as error:
        raise ConfigError(f"{prefix}: {error}") from None


@contextmanager
def config_file(path: Any) -> Iterator[None]:
    """ConfigErrors raised inside name the file (unless they already do)."""
    try:
        yield
    except ConfigError as error:
        if str(path) in str(error):
            raise
        raise ConfigError(f"{path}: {error}") from None
