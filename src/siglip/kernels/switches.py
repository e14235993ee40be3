"""The model methods that choose how its layers run on this machine: weight packing, and torch.compile.

`SiglipPreTrainedModel` inherits them from `KernelSwitches`, so that modeling/ holds the math and names no
kernel: which GEMM runs (int8, oneDNN-packed, plain) is decided here, below it.
"""

from __future__ import annotations

import warnings
from typing import Any, TypeVar

from torch import nn

from . import packed
from .int8 import Int8Linear

ModelT = TypeVar("ModelT", bound=nn.Module)


class KernelSwitches(nn.Module):
    """Mixin of the model classes: `set_weight_packing` and `compile`."""

    def set_weight_packing(self, enabled: bool) -> None:
        """Turn the packed-oneDNN CPU inference path (see packed.py) on (default) or off; off frees the copies."""
        for module in packed.cache_owners(self):
            cache = packed.module_cache(module)
            cache.enabled = enabled
            cache.clear()

    def compile(self: ModelT, dynamic: bool | None = True, **compile_kwargs: Any) -> ModelT:
        """Opt-in: compile `forward` with torch.compile (inductor) in place, and return the model.

        On CPU inference the packed oneDNN linears (packed.py) stay eager and inductor fuses what lies between
        them (LayerNorms, reshapes, the MAP head's small ops); elsewhere (GPU, training) it compiles everything.
        `dynamic=True` (default) makes one graph serve every batch size. Other arguments go to torch.compile
        (e.g. mode="max-autotune", options={"freezing": True}). The first call pays the compilation (tens of
        seconds, kept in inductor's on-disk cache for later processes). Accuracy: tests/test_speed_modes.py.
        """
        if not packed.EAGER_KERNELS_UNDER_COMPILE and any(isinstance(m, Int8Linear) for m in self.modules()):
            warnings.warn(
                "compile() left this int8 model eager: with inductor's AVX2 code (this CPU has no AVX-512) the int8 "
                "GEMMs between compiled kernels gave wrong results; it runs eager, which is right",
                stacklevel=2,
            )
            return self
        for module in packed.cache_owners(self):  # a cache first made inside the traced forward is made anew per call
            packed.module_cache(module)
        super().compile(dynamic=dynamic, **compile_kwargs)
        return self
