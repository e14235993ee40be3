"""The SigLIP pairwise sigmoid loss: `sigmoid.py` plain and blockwise (memory-bounded), `distributed.py` across
the ranks of a data-parallel group. Import it from here: `from siglip.loss import sigmoid_loss`."""

from .distributed import distributed_sigmoid_loss
from .sigmoid import sigmoid_loss, sigmoid_loss_from_logits

__all__ = ["sigmoid_loss", "sigmoid_loss_from_logits", "distributed_sigmoid_loss"]
