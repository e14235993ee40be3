"""PyTorch modules of SigLIP and SigLIP2."""

from .model import SiglipForImageClassification, SiglipModel
from .outputs import BaseModelOutputWithPooling, ImageClassifierOutput, ModelOutput, SiglipOutput
from .pretrained import SiglipPreTrainedModel
from .text import SiglipTextModel
from .vision import SiglipVisionModel

__all__ = [
    "BaseModelOutputWithPooling",
    "ImageClassifierOutput",
    "ModelOutput",
    "SiglipForImageClassification",
    "SiglipModel",
    "SiglipOutput",
    "SiglipPreTrainedModel",
    "SiglipTextModel",
    "SiglipVisionModel",
]
