"""siglip: SigLIP and SigLIP2 image/text encoders, Hub-compatible with transformers, written from scratch."""

__version__ = "0.1.0"
