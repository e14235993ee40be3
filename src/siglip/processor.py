"""SiglipProcessor: one object that tokenizes text and preprocesses images for a SigLIP model."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

from .errors import InputError

PROCESSOR_CONFIG_NAME = "processor_config.json"


class SiglipProcessor:
    """Wraps an image processor and a tokenizer; `__call__(text=, images=)` returns one `BatchFeature`.

    Text arguments (padding, truncation, max_length) go to the tokenizer, everything else about images to
    the image processor. The seeds recommend `padding="max_length"`, which is how SigLIP was trained.
    """

    attributes: ClassVar[tuple[str, ...]] = ("image_processor", "tokenizer")
    text_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, image_processor: Any, tokenizer: Any) -> None:
        self.image_processor = image_processor
        self.tokenizer = tokenizer

    def __call__(
        self,
        text: str | list[str] | None = None,
        images: Any = None,
        padding: bool | str | None = None,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        return_tensors: str | None = None,
        **image_kwargs: Any,
    ):
        """Tokenize `text` and/or preprocess `images`; at least one of them is required."""
        from .batch import BatchFeature

        if text is None and images is None:
            raise InputError("SiglipProcessor needs text=, images= or both.")
        batch = BatchFeature()
        if text is not None:
            text_kwargs = {**self.text_defaults}
            for key, value in (("padding", padding), ("truncation", truncation), ("max_length", max_length)):
                if value is not None:
                    text_kwargs[key] = value
            batch.update(self.tokenizer(text, return_tensors=return_tensors, **text_kwargs))
        if images is not None:
            batch.update(self.image_processor(images, return_tensors=return_tensors, **image_kwargs))
        return batch

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        """The tokenizer's batch_decode."""
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args: Any, **kwargs: Any) -> str:
        """The tokenizer's decode."""
        return self.tokenizer.decode(*args, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        names = list(getattr(self.tokenizer, "model_input_names", ["input_ids"]))
        return names + [
            n for n in getattr(self.image_processor, "model_input_names", ["pixel_values"]) if n not in names
        ]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> SiglipProcessor:
        """Load the image processor and the tokenizer from one folder or Hub id."""
        from .auto import AutoImageProcessor, AutoTokenizer

        image_processor = AutoImageProcessor.from_pretrained(pretrained_model_name_or_path, **dict(kwargs))
        tokenizer = AutoTokenizer.from_pretrained(pretrained_model_name_or_path, **dict(kwargs))
        return cls(image_processor=image_processor, tokenizer=tokenizer)

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write the image processor's and the tokenizer's files, plus processor_config.json."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.image_processor.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        config = {"processor_class": type(self).__name__}
        (directory / PROCESSOR_CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(image_processor={self.image_processor!r}, tokenizer={self.tokenizer!r})"


class Siglip2Processor(SiglipProcessor):
    """SigLIP2's processor: a NaFlex (or FixRes) image processor + the Gemma tokenizer.

    Text defaults to how SigLIP2 was trained: `padding="max_length"`, `truncation=True`, `max_length=64`.
    Images come back as pixel_values (B, N, C*P*P), pixel_attention_mask and spatial_shapes.
    """

    text_defaults: ClassVar[dict[str, Any]] = {"padding": "max_length", "truncation": True, "max_length": 64}
