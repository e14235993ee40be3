"""Moved to siglip.kernels.int8 (kept for old imports)."""

from ..kernels.int8 import *  # noqa: F401,F403
from ..kernels.int8 import activation_qparams, quantize_activation, quantize_weight  # noqa: F401
