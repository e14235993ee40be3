"""siglip: SigLIP and SigLIP2 image/text encoders, Hub-compatible with transformers, written from scratch."""

from .config import (
    PretrainedConfig,
    Siglip2Config,
    Siglip2TextConfig,
    Siglip2VisionConfig,
    SiglipConfig,
    SiglipTextConfig,
    SiglipVisionConfig,
)
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
from .modeling import (
    BaseModelOutputWithPooling,
    ImageClassifierOutput,
    ModelOutput,
    SiglipForImageClassification,
    SiglipModel,
    SiglipOutput,
    SiglipPreTrainedModel,
    SiglipTextModel,
    SiglipVisionModel,
)

__version__ = "0.1.0"

# Preprocessing, Auto classes and the pipeline are imported on first use, so `import siglip` stays light.
_LAZY = {
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
    "Index": "index",
    "ZeroShotImageClassificationPipeline": "zero_shot",
    "load_image": "image.loading",
    "pipeline": "zero_shot",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'siglip' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    *_LAZY,
    "BaseModelOutputWithPooling",
    "CheckpointError",
    "CheckpointNotFoundError",
    "ConfigError",
    "DependencyError",
    "ImageClassifierOutput",
    "ImageError",
    "InputError",
    "ModelOutput",
    "PretrainedConfig",
    "Siglip2Config",
    "Siglip2TextConfig",
    "Siglip2VisionConfig",
    "SiglipConfig",
    "SiglipError",
    "SiglipForImageClassification",
    "SiglipModel",
    "SiglipOutput",
    "SiglipPreTrainedModel",
    "SiglipTextConfig",
    "SiglipTextModel",
    "SiglipVisionConfig",
    "SiglipVisionModel",
    "UnsafeCheckpointError",
]
