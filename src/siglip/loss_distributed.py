"""Moved to `siglip.loss.distributed`; import the loss from `siglip.loss`. This name stays as a re-export."""

from .loss.distributed import distributed_sigmoid_loss  # noqa: F401
