"""siglip: SigLIP and SigLIP2 image/text encoders, Hub-compatible with transformers, written from scratch."""

from .config import PretrainedConfig, SiglipConfig, SiglipTextConfig, SiglipVisionConfig
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

__all__ = [
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
