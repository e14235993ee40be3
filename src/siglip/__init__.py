"""siglip: SigLIP and SigLIP2 image/text encoders, Hub-compatible with transformers, written from scratch."""

from .errors import (
    CheckpointError,
    CheckpointNotFoundError,
    ConfigError,
    DependencyError,
    ImageError,
    InputError,
    SiglipError,
    UnsafeCheckpointError,
)

__version__ = "0.1.0"

# Everything but the errors is imported on first use, so `import siglip` (and `siglip --help`) stays light:
# torch is imported by the first model, processor or config name a program touches.
_LAZY = {
    "PretrainedConfig": "config",
    "Siglip2Config": "config",
    "Siglip2TextConfig": "config",
    "Siglip2VisionConfig": "config",
    "SiglipConfig": "config",
    "SiglipTextConfig": "config",
    "SiglipVisionConfig": "config",
    "BaseModelOutputWithPooling": "modeling",
    "ImageClassifierOutput": "modeling",
    "ModelOutput": "modeling",
    "SiglipForImageClassification": "modeling",
    "SiglipModel": "modeling",
    "SiglipOutput": "modeling",
    "SiglipPreTrainedModel": "modeling",
    "SiglipTextModel": "modeling",
    "SiglipVisionModel": "modeling",
    "AutoConfig": "auto",
    "AutoImageProcessor": "auto",
    "AutoModel": "auto",
    "AutoModelForImageClassification": "auto",
    "AutoProcessor": "auto",
    "AutoTokenizer": "auto",
    "BatchEncoding": "batch",
    "GemmaTokenizer": "text.gemma",
    "Siglip2ForImageClassification": "modeling.siglip2",
    "Siglip2ImageProcessor": "image.processing_siglip2",
    "Siglip2ImageProcessorFast": "image.processing_siglip2",
    "Siglip2Model": "modeling.siglip2",
    "Siglip2Processor": "processor",
    "Siglip2TextModel": "modeling.siglip2",
    "Siglip2Tokenizer": "text.gemma",
    "Siglip2VisionModel": "modeling.siglip2",
    "BatchFeature": "batch",
    "SiglipImageProcessor": "image.processing",
    "SiglipImageProcessorFast": "image.processing_fast",
    "SiglipProcessor": "processor",
    "SiglipTokenizer": "text.tokenizer",
    "Index": "bulk.index",
    "ZeroShotImageClassificationPipeline": "zero_shot",
    "load_image": "image.loading",
    "pipeline": "zero_shot",
    "set_cpu_streams": "kernels.streams",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    if not name.startswith("_"):  # `siglip.modeling`, `siglip.config`, ... after a bare `import siglip`
        import importlib
        import importlib.util

        if importlib.util.find_spec(f"{__name__}.{name}") is not None:
            return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'siglip' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    *_LAZY,
    "CheckpointError",
    "CheckpointNotFoundError",
    "ConfigError",
    "DependencyError",
    "ImageError",
    "InputError",
    "SiglipError",
    "UnsafeCheckpointError",
]
