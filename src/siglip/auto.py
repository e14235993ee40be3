"""Auto classes: pick the right class from what a checkpoint's files say (model_type, *_class fields).

`AutoModel.from_pretrained("google/siglip-base-patch16-224")` reads config.json's `model_type`; the
tokenizer, image processor and processor are chosen from their own config files' class fields, falling back
to the files present (spiece.model -> SentencePiece tokenizer, tokenizer.json -> the Gemma tokenizer).
Nothing is guessed from weight names.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from .config import CONFIG_NAME, PretrainedConfig, config_from_dict, read_config_dict
from .errors import ConfigError
from .files import read_json
from .hub import HubOptions, resolve_file

# model_type -> "module:Class" (imported on first use, so that importing siglip stays light).
MODEL_CLASSES = {
    "siglip": "siglip.modeling.model:SiglipModel",
    "siglip_text_model": "siglip.modeling.text:SiglipTextModel",
    "siglip_vision_model": "siglip.modeling.vision:SiglipVisionModel",
    "siglip2": "siglip.modeling.siglip2:Siglip2Model",
    "siglip2_text_model": "siglip.modeling.siglip2:Siglip2TextModel",
    "siglip2_vision_model": "siglip.modeling.siglip2:Siglip2VisionModel",
}
IMAGE_CLASSIFICATION_CLASSES = {
    "siglip": "siglip.modeling.model:SiglipForImageClassification",
    "siglip2": "siglip.modeling.siglip2:Siglip2ForImageClassification",
}
# Class names written in tokenizer_config.json / preprocessor_config.json / processor_config.json.
TOKENIZER_CLASSES = {
    "SiglipTokenizer": "siglip.text.tokenizer:SiglipTokenizer",
    "GemmaTokenizer": "siglip.text.gemma:GemmaTokenizer",
    "GemmaTokenizerFast": "siglip.text.gemma:GemmaTokenizer",
    "Siglip2Tokenizer": "siglip.text.gemma:Siglip2Tokenizer",
    "Siglip2TokenizerFast": "siglip.text.gemma:Siglip2Tokenizer",
}
IMAGE_PROCESSOR_CLASSES = {
    "SiglipImageProcessor": "siglip.image.processing:SiglipImageProcessor",
    "SiglipImageProcessorPil": "siglip.image.processing:SiglipImageProcessor",
    "SiglipImageProcessorFast": "siglip.image.processing_fast:SiglipImageProcessorFast",
    "Siglip2ImageProcessor": "siglip.image.processing_siglip2:Siglip2ImageProcessor",
    "Siglip2ImageProcessorPil": "siglip.image.processing_siglip2:Siglip2ImageProcessor",
    "Siglip2ImageProcessorFast": "siglip.image.processing_siglip2:Siglip2ImageProcessorFast",
}
PROCESSOR_CLASSES = {
    "siglip": "siglip.processor:SiglipProcessor",
    "siglip2": "siglip.processor:Siglip2Processor",
}
# model_type -> tokenizer class that wins over the files' own tokenizer_class (transformers does the same).
MODEL_TYPE_TOKENIZERS = {"siglip2": "Siglip2Tokenizer"}
# Files whose presence identifies a tokenizer when tokenizer_config.json does not name its class.
TOKENIZER_FILES = {"spiece.model": "SiglipTokenizer", "tokenizer.json": "GemmaTokenizer"}


def import_class(target: str) -> type:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def _read_json(name_or_path: str | os.PathLike, filename: str, options: HubOptions) -> dict[str, Any] | None:
    path = resolve_file(name_or_path, filename, options, required=False)
    if path is None:
        return None
    value = read_json(path, f"{filename} of {name_or_path}", ConfigError, max_bytes=16 * 1024 * 1024)
    if not isinstance(value, dict):
        raise ConfigError(f"{filename} of {name_or_path} must hold a JSON object, got {type(value).__name__}.")
    return value


def _model_type(name_or_path: str | os.PathLike, options: HubOptions) -> str:
    config = read_config_dict(resolve_file(name_or_path, CONFIG_NAME, options))
    return str(config.get("model_type"))


def _lookup(table: dict[str, str], key: str, what: str, source: Any) -> type:
    if key not in table:
        raise ConfigError(f"{source}: {what} {key!r} is not supported by siglip (known: {sorted(table)}).")
    return import_class(table[key])


class AutoConfig:
    """`AutoConfig.from_pretrained(name)` -> the config class config.json's model_type names."""

    @staticmethod
    def from_pretrained(name_or_path: str | os.PathLike, **kwargs: Any) -> PretrainedConfig:
        options = HubOptions.from_kwargs(kwargs)
        config_dict = read_config_dict(resolve_file(name_or_path, CONFIG_NAME, options))
        config = config_from_dict(config_dict, source=str(name_or_path))
        for key, value in kwargs.items():
            setattr(config, key, value)
        return config

    @staticmethod
    def for_model(model_type: str, **kwargs: Any) -> PretrainedConfig:
        return config_from_dict({"model_type": model_type, **kwargs})


class _AutoModelBase:
    table: dict[str, str] = {}

    @classmethod
    def model_class(cls, model_type: str, source: Any = "config") -> type:
        return _lookup(cls.table, model_type, "model_type", source)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs: Any):
        """Load the model class config.json's model_type names (all from_pretrained options apply)."""
        hub = {key: kwargs[key] for key in ("revision", "cache_dir", "local_files_only", "token") if key in kwargs}
        model_type = _model_type(name_or_path, HubOptions(**hub))
        return cls.model_class(model_type, name_or_path).from_pretrained(name_or_path, **kwargs)

    @classmethod
    def from_config(cls, config: PretrainedConfig):
        """A randomly initialised model for `config`."""
        return cls.model_class(config.model_type)(config)


class AutoModel(_AutoModelBase):
    """SiglipModel, SiglipTextModel, SiglipVisionModel (and SigLIP2 variants) by model_type."""

    table = MODEL_CLASSES


class AutoModelForImageClassification(_AutoModelBase):
    """SiglipForImageClassification (and the SigLIP2 variant) by model_type."""

    table = IMAGE_CLASSIFICATION_CLASSES


class AutoTokenizer:
    """The tokenizer tokenizer_config.json names, or the one whose files are present.

    As in transformers, a "siglip2" checkpoint always gets the lowercasing `Siglip2Tokenizer`, even though
    the published files name `GemmaTokenizer` (FixRes SigLIP2 checkpoints, model_type "siglip", keep Gemma's).
    """

    @staticmethod
    def from_pretrained(name_or_path: str | os.PathLike, **kwargs: Any):
        options = HubOptions.from_kwargs(dict(kwargs))
        model_config = _read_json(name_or_path, CONFIG_NAME, options) or {}
        config = _read_json(name_or_path, "tokenizer_config.json", options) or {}
        name = MODEL_TYPE_TOKENIZERS.get(str(model_config.get("model_type")), config.get("tokenizer_class"))
        if name is None:
            present = [f for f in TOKENIZER_FILES if resolve_file(name_or_path, f, options, required=False)]
            if not present:
                raise ConfigError(
                    f"{name_or_path} holds no tokenizer (no tokenizer_config.json, {sorted(TOKENIZER_FILES)})."
                )
            name = TOKENIZER_FILES[present[0]]
        return _lookup(TOKENIZER_CLASSES, name, "tokenizer_class", name_or_path).from_pretrained(name_or_path, **kwargs)


class AutoImageProcessor:
    """The image processor preprocessor_config.json names; `use_fast=True` picks the batched torch variant.

    Folders written by transformers 5 may hold the settings nested in processor_config.json instead.
    """

    @staticmethod
    def from_pretrained(name_or_path: str | os.PathLike, use_fast: bool | None = None, **kwargs: Any):
        kwargs = dict(kwargs)
        options = HubOptions.from_kwargs(kwargs)
        config = _read_json(name_or_path, "preprocessor_config.json", options)
        if config is None:
            config = (_read_json(name_or_path, "processor_config.json", options) or {}).get("image_processor")
        if not isinstance(config, dict):
            raise ConfigError(f"{name_or_path} has no preprocessor_config.json (nor image processor settings).")
        name = str(config.get("image_processor_type", "SiglipImageProcessor"))
        base = name.removesuffix("Fast").removesuffix("Pil")
        if use_fast is True or (use_fast is None and name.endswith("Fast")):
            name = base + "Fast"
        elif use_fast is False:
            name = base
        return _lookup(IMAGE_PROCESSOR_CLASSES, name, "image_processor_type", name_or_path).from_dict(config, **kwargs)


class AutoProcessor:
    """SiglipProcessor or Siglip2Processor, chosen by config.json's model_type (processor_config.json if any)."""

    @staticmethod
    def from_pretrained(name_or_path: str | os.PathLike, **kwargs: Any):
        options = HubOptions.from_kwargs(dict(kwargs))
        config = _read_json(name_or_path, "processor_config.json", options) or {}
        by_class = {target.split(":")[1]: target for target in PROCESSOR_CLASSES.values()}
        if config.get("processor_class") in by_class:
            processor_cls = import_class(by_class[config["processor_class"]])
        else:
            model_type = _model_type(name_or_path, options).removesuffix("_text_model").removesuffix("_vision_model")
            processor_cls = _lookup(PROCESSOR_CLASSES, model_type, "model_type", name_or_path)
        return processor_cls.from_pretrained(name_or_path, **kwargs)
