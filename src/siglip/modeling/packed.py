"""Moved to siglip.kernels.packed (kept for old imports)."""

from ..kernels.packed import *  # noqa: F401,F403
from ..kernels.packed import PackedWeights, module_cache, packed_linear, tensor_key, try_packed_linear  # noqa: F401
