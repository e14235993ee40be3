"""Training: `siglip train` / `python -m siglip.train`, plainly or under torchrun (DDP, FSDP2).

`train(TrainConfig(...))` is the Python API; `TrainConfig` fields are the command-line flags. The training loop
(and torch with it) is imported on first use of `train`, so `siglip --help` does not pay for it.
"""

from typing import Any

from .config import TrainConfig


def __getattr__(name: str) -> Any:
    if name == "train":
        from .loop import train

        globals()["train"] = train
        return train
    raise AttributeError(f"module 'siglip.train' has no attribute {name!r}")


__all__ = ["TrainConfig", "train"]
