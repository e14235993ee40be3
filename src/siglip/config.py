"""Configurations: dataclasses that read and write the reference's `config.json` unchanged.

Each config class is a dataclass with one commented field per documented option. The constructor accepts
any extra keyword (as the reference's `**kwargs`): extra keys become attributes and are written back by
`to_dict`, so a config.json with keys we do not know survives a load/save round trip.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from .config_validation import check_config_fields, check_labels, check_num_labels, config_field, config_file
from .errors import ConfigError
from .files import read_json
from .hub import HubOptions, resolve_file

CONFIG_NAME = "config.json"
ConfigT = TypeVar("ConfigT", bound="PretrainedConfig")

# Keys the reference writes for bookkeeping; accepted and ignored on load, some re-written on save.
_BOOKKEEPING_KEYS = {
    "transformers_version",
    "_name_or_path",
    "model_type",
    "torch_dtype",
    "_attn_implementation",
}


def _default_id2label() -> dict[int, str]:
    return {0: "LABEL_0", 1: "LABEL_1"}


def config_class(cls: type[ConfigT]) -> type[ConfigT]:
    """Make `cls` a dataclass whose constructor also takes unknown keyword arguments (kept as extras)."""
    cls = dataclass(cls, repr=False, eq=False)
    dataclass_init = cls.__init__
    known = {f.name for f in dataclasses.fields(cls)}

    def __init__(self, **kwargs: Any) -> None:
        aliases = {"torch_dtype": "dtype", "_attn_implementation": "attn_implementation"}
        for old, new in aliases.items():
            if old in kwargs:
                kwargs.setdefault(new, kwargs.pop(old))
        num_labels = kwargs.pop("num_labels", None)
        if num_labels is not None:
            check_num_labels(num_labels)
        extras = {key: kwargs.pop(key) for key in list(kwargs) if key not in known}
        dataclass_init(self, **kwargs)
        for key in _BOOKKEEPING_KEYS:
            extras.pop(key, None)
        self.extras = extras
        for key, value in extras.items():
            object.__setattr__(self, key, value)
        if num_labels is not None and "id2label" not in kwargs:
            self.num_labels = num_labels
        self.__post_init_config__()

    __init__.__doc__ = cls.__doc__
    cls.__init__ = __init__  # type: ignore[method-assign]
    return cls


@dataclass
class PretrainedConfig:
    """Fields every config shares (the reference's `PreTrainedConfig` subset that SigLIP uses)."""

    model_type: ClassVar[str] = ""
    # Label names for classification heads; `num_labels` is derived from them (default: 2 labels).
    id2label: dict[int, str] = field(default_factory=_default_id2label)
    label2id: dict[str, int] | None = None
    # "regression" | "single_label_classification" | "multi_label_classification" | None (inferred).
    problem_type: str | None = None
    # Output defaults used when a forward call leaves the argument as None.
    return_dict: bool = True
    output_attentions: bool = False
    output_hidden_states: bool = False
    # Weight dtype recorded in config.json ("float32", "bfloat16", ...); used by dtype="auto".
    dtype: str | None = None
    # Class names the checkpoint was saved from.
    architectures: list[str] | None = None
    # "sdpa" (default), "eager" or "flash_attention_2"; not written to config.json.
    attn_implementation: str | None = None

    def __post_init_config__(self) -> None:
        check_labels(self.id2label, self.label2id)
        self.id2label = {int(key): value for key, value in self.id2label.items()}
        if self.label2id is None:
            self.label2id = {value: key for key, value in self.id2label.items()}
        self.label2id = {key: int(value) for key, value in self.label2id.items()}
        problem_types = (None, "regression", "single_label_classification", "multi_label_classification")
        if self.problem_type not in problem_types:
            raise ConfigError(f"problem_type must be one of {problem_types}, got {self.problem_type!r}.")
        check_config_fields(self)

    @property
    def num_labels(self) -> int:
        """Number of classification labels, i.e. `len(id2label)`."""
        return len(self.id2label)

    @num_labels.setter
    def num_labels(self, count: int) -> None:
        if count != len(self.id2label):
            self.id2label = {index: f"LABEL_{index}" for index in range(count)}
            self.label2id = {value: key for key, value in self.id2label.items()}

    # ---- dict / json -------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls: type[ConfigT], config_dict: dict[str, Any], **overrides: Any) -> ConfigT:
        """Build a config from a `config.json` dict; `overrides` win over the file's values."""
        return cls(**{**copy.deepcopy(config_dict), **overrides})

    def to_dict(self) -> dict[str, Any]:
        """The `config.json` dict in the reference's layout (labels only when they are not the default)."""
        output: dict[str, Any] = {}
        for item in dataclasses.fields(self):
            if item.name == "attn_implementation":
                continue
            value = getattr(self, item.name)
            output[item.name] = value.to_dict() if isinstance(value, PretrainedConfig) else copy.deepcopy(value)
        if self.id2label == _default_id2label():
            output.pop("id2label")
            output.pop("label2id")
        else:
            output["id2label"] = {str(key): value for key, value in self.id2label.items()}
        for key in ("problem_type", "architectures", "dtype"):
            if output.get(key) is None:
                output.pop(key, None)
        for key, default in (
            ("return_dict", True),
            ("output_attentions", False),
            ("output_hidden_states", False),
        ):
            if output[key] == default:
                output.pop(key)
        output.update({key: copy.deepcopy(getattr(self, key)) for key in self.extras})
        output["model_type"] = self.model_type
        return dict(sorted(output.items()))

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, path: str | os.PathLike) -> None:
        Path(path).write_text(self.to_json_string(), encoding="utf-8")

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write `config.json` into `save_directory` (created if needed)."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.to_json_file(directory / CONFIG_NAME)

    @classmethod
    def from_json_file(cls: type[ConfigT], path: str | os.PathLike) -> ConfigT:
        with config_file(path):
            return cls.from_dict(read_config_dict(path))

    @classmethod
    def from_pretrained(cls: type[ConfigT], name_or_path: str | os.PathLike, **kwargs: Any) -> ConfigT:
        """Load from a folder or Hub id. A tower config also loads from its composite model's config.json."""
        options = HubOptions.from_kwargs(kwargs)
        path = resolve_file(name_or_path, CONFIG_NAME, options)
        with config_file(path):
            return cls.from_dict(cls.select_from(read_config_dict(path), source=str(name_or_path)), **kwargs)

    @classmethod
    def select_from(cls, config_dict: dict[str, Any], source: str = "config.json") -> dict[str, Any]:
        """Return the part of `config_dict` that describes `cls` (itself, or a composite's sub-config)."""
        model_type = config_dict.get("model_type")
        if model_type in (None, cls.model_type):
            return config_dict
        for key in ("text_config", "vision_config"):
            sub = config_dict.get(key)
            if isinstance(sub, dict) and sub.get("model_type", _sub_model_type(model_type, key)) == cls.model_type:
                return sub
        raise ConfigError(f"{source} describes model_type {model_type!r}, which is not a {cls.__name__}.")

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.to_dict() == other.to_dict()  # type: ignore[union-attr]


def _sub_model_type(model_type: str, key: str) -> str:
    return f"{model_type}_{key.split('_')[0]}_model"


def read_config_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a config.json, raising `ConfigError` (not a JSON traceback) when it is unreadable: not a regular
    file, over 16 MiB, not UTF-8 JSON, nested deeper than `files.MAX_JSON_DEPTH`."""
    config_dict = read_json(path, "the config file", ConfigError, max_bytes=16 * 1024 * 1024)
    if not isinstance(config_dict, dict):
        raise ConfigError(f"{path} must hold a JSON object, got {type(config_dict).__name__}.")
    return config_dict


@config_class
class SiglipTextConfig(PretrainedConfig):
    """Text tower of SigLIP. Defaults reproduce google/siglip-base-patch16-224."""

    model_type: ClassVar[str] = "siglip_text_model"
    vocab_size: int = 32000  # SentencePiece vocabulary size
    hidden_size: int = 768  # width of the residual stream
    intermediate_size: int = 3072  # width of the MLP's hidden layer
    num_hidden_layers: int = 12  # transformer blocks
    num_attention_heads: int = 12  # heads per attention layer; must divide hidden_size
    max_position_embeddings: int = 64  # learned positions, i.e. the longest token sequence
    hidden_act: str = "gelu_pytorch_tanh"  # MLP activation (see modeling/layers.py ACTIVATIONS)
    layer_norm_eps: float = 1e-6  # LayerNorm epsilon
    attention_dropout: float = 0.0  # dropout on attention probabilities (training only)
    pad_token_id: int | None = 1  # kept for compatibility; SigLIP pads with </s> in practice
    bos_token_id: int | None = 49406  # unused by the model, kept for compatibility
    eos_token_id: int | list[int] | None = 49407  # unused by the model, kept for compatibility
    projection_size: int | None = None  # output size of the text head; None means hidden_size

    def __post_init_config__(self) -> None:
        super().__post_init_config__()
        if self.projection_size is None:
            self.projection_size = self.hidden_size


@config_class
class SiglipVisionConfig(PretrainedConfig):
    """Vision tower of SigLIP. Defaults reproduce google/siglip-base-patch16-224."""

    model_type: ClassVar[str] = "siglip_vision_model"
    hidden_size: int = 768  # width of the residual stream
    intermediate_size: int = 3072  # width of the MLP's hidden layer
    num_hidden_layers: int = 12  # transformer blocks
    num_attention_heads: int = 12  # heads per attention layer; must divide hidden_size
    num_channels: int = 3  # input image channels
    image_size: int = 224  # training resolution (square); sets the number of position embeddings
    patch_size: int = 16  # side of a square patch
    hidden_act: str = "gelu_pytorch_tanh"  # MLP activation
    layer_norm_eps: float = 1e-6  # LayerNorm epsilon
    attention_dropout: float = 0.0  # dropout on attention probabilities (training only)
    vision_use_head: bool = True  # attention-pooling (MAP) head; False gives no pooler_output

    # The field checks (types, ranges, heads dividing hidden_size) run in PretrainedConfig.__post_init_config__.


@config_class
class SiglipConfig(PretrainedConfig):
    """Two-tower SigLIP: a text config, a vision config and the initialisation factor."""

    model_type: ClassVar[str] = "siglip"
    text_config_class: ClassVar[type] = SiglipTextConfig
    vision_config_class: ClassVar[type] = SiglipVisionConfig
    text_config: Any = None  # SiglipTextConfig, or a dict of its fields, or None for defaults
    vision_config: Any = None  # SiglipVisionConfig, or a dict of its fields, or None for defaults
    initializer_factor: float = 1.0  # scales the classifier's initial weights

    def __post_init_config__(self) -> None:
        super().__post_init_config__()
        with config_field("text_config"):
            self.text_config = _as_config(self.text_config, self.text_config_class)
        with config_field("vision_config"):
            self.vision_config = _as_config(self.vision_config, self.vision_config_class)

    @classmethod
    def from_text_vision_configs(cls, text_config: Any, vision_config: Any, **kwargs: Any) -> SiglipConfig:
        """Combine a text and a vision config (objects or dicts) into a model config."""
        return cls(text_config=text_config, vision_config=vision_config, **kwargs)


def _as_config(value: Any, config_cls: type[ConfigT]) -> ConfigT:
    if value is None:
        return config_cls()
    if isinstance(value, config_cls):
        return value
    if isinstance(value, PretrainedConfig):
        return config_cls.from_dict(value.to_dict())
    if isinstance(value, dict):
        return config_cls.from_dict(value)
    raise ConfigError(f"expected a {config_cls.__name__} or a dict, got {type(value).__name__}.")


# model_type -> config class: config.json says what it is; nothing is guessed from weights.
CONFIG_CLASSES: dict[str, type[PretrainedConfig]] = {
    cls.model_type: cls for cls in (SiglipConfig, SiglipTextConfig, SiglipVisionConfig)
}


def config_from_dict(config_dict: dict[str, Any], source: str = "config.json") -> PretrainedConfig:
    """Build the config class that `config_dict['model_type']` names."""
    model_type = config_dict.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_CLASSES:
        raise ConfigError(f"{source} has model_type {model_type!r}; siglip supports {sorted(CONFIG_CLASSES)}.")
    return CONFIG_CLASSES[model_type].from_dict(config_dict)


# ---- SigLIP2 ---------------------------------------------------------------------------------------
# SigLIP2 keeps SigLIP's text tower and config fields; its NaFlex vision tower swaps the fixed image_size
# for a budget of `num_patches` learned positions (a square grid resized to each image's patch grid).


@config_class
class Siglip2TextConfig(SiglipTextConfig):
    """Text tower of SigLIP2: the fields and defaults of `SiglipTextConfig`."""

    model_type: ClassVar[str] = "siglip2_text_model"


@config_class
class Siglip2VisionConfig(SiglipVisionConfig):
    """NaFlex vision tower of SigLIP2. Defaults reproduce google/siglip2-base-patch16-naflex."""

    model_type: ClassVar[str] = "siglip2_vision_model"
    image_size: int | None = None  # unused: NaFlex images come as patch sequences (not written when None)
    patch_size: int = 16  # side of a square patch; pixel_values rows hold num_channels * patch_size**2 values
    num_patches: int = 256  # learned positions, a sqrt(num_patches)-sided square grid resized per image

    def __post_init_config__(self) -> None:
        super().__post_init_config__()
        side = math.isqrt(self.num_patches)
        if side * side != self.num_patches:
            raise ConfigError(f"num_patches ({self.num_patches}) must be a perfect square (e.g. 256 = 16 x 16).")

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        if output.get("image_size") is None:
            output.pop("image_size", None)
        return output


@config_class
class Siglip2Config(SiglipConfig):
    """Two-tower SigLIP2: a `Siglip2TextConfig`, a `Siglip2VisionConfig` and the initialisation factor."""

    model_type: ClassVar[str] = "siglip2"
    text_config_class: ClassVar[type] = Siglip2TextConfig
    vision_config_class: ClassVar[type] = Siglip2VisionConfig


CONFIG_CLASSES.update({cls.model_type: cls for cls in (Siglip2Config, Siglip2TextConfig, Siglip2VisionConfig)})
