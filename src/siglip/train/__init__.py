"""Training: `siglip train` / `python -m siglip.train`, plainly or under torchrun (DDP, FSDP2).

`train(TrainConfig(...))` is the Python API; `TrainConfig` fields are the command-line flags.
"""

from .config import TrainConfig
from .loop import train

__all__ = ["TrainConfig", "train"]
