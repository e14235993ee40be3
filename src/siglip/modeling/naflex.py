"""NaFlex patch and position embeddings of the SigLIP2 vision tower.

Images arrive as patch sequences padded to a common length: `pixel_values` (batch, patches, channels * p * p),
with `spatial_shapes` (batch, 2) giving each image's patch grid (rows, cols). The learned positions form a square
grid that is resized to each image's grid with bilinear + antialias interpolation in fp32, as the reference does.

Unlike the reference, the resize runs once per distinct grid shape (not once per image), and in inference the
resized grids are cached per shape until the position table changes. Positions of padding rows repeat the
first position, which is what the reference computes for them.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Siglip2VisionConfig
from ..errors import InputError
from ..kernels import linear as kernels
from ..kernels.cache_key import tensor_key
from .init import variance_scaling_


class Siglip2VisionEmbeddings(nn.Module):
    """Linear patch embedding + a square grid of learned positions resized to each image's patch grid."""

    # Resized grids kept per (rows, cols) in inference; enough for every shape a patch budget produces in practice.
    cache_size = 128

    def __init__(self, config: Siglip2VisionConfig) -> None:
        super().__init__()
        self.patch_size = config.patch_size
        self.patch_embedding = nn.Linear(config.num_channels * config.patch_size**2, config.hidden_size)
        self.position_embedding = nn.Embedding(config.num_patches, config.hidden_size)
        self.grid_size = math.isqrt(config.num_patches)
        self._grid_cache: OrderedDict[tuple[int, int], torch.Tensor] = OrderedDict()
        self._cache_key: tuple | None = None

    def init_own_weights(self) -> None:
        """Initialisation from scratch (modeling/init.py): 1/sqrt(width) positions, lecun-normal patches."""
        nn.init.normal_(self.position_embedding.weight, std=1 / math.sqrt(self.position_embedding.weight.shape[1]))
        variance_scaling_(self.patch_embedding.weight)
        nn.init.zeros_(self.patch_embedding.bias)

    def forward(
        self, pixel_values: torch.Tensor, spatial_shapes: torch.Tensor, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(batch, patches, c*p*p) patches and (batch, 2) grids -> (batch, patches, hidden) embeddings.

        With a boolean `valid` (batch, patches) mask, only those rows are embedded, packed as (1, valid, hidden).
        """
        pixel_values = pixel_values.to(self.patch_embedding.weight.dtype)
        positions = self.positions(spatial_shapes, pixel_values.shape[1])
        if valid is not None:
            pixel_values, positions = pixel_values[valid][None], positions[valid][None]
        return kernels.linear(self.patch_embedding, pixel_values, residual=positions)

    @torch.compiler.disable
    def positions(self, spatial_shapes: torch.Tensor, length: int) -> torch.Tensor:
        """Per-image resized positions, (batch, length, hidden); rows past rows*cols repeat position 0.

        One resize per distinct shape, then a single gather: row i of image b reads
        `table[offset(shape_b) + (i if i < rows_b * cols_b else 0)]`. Raises InputError for a grid that does not
        fit the sequence. Eager under torch.compile (it reads the shapes' values, which would make dynamo break the
        graph and recompile per shape): the compiled graph receives the gathered positions as a tensor.
        """
        shapes, inverse = torch.unique(spatial_shapes.cpu().long(), dim=0, return_inverse=True)
        if bool((shapes < 1).any()) or bool((shapes.prod(dim=-1) > length).any()):
            raise InputError(
                f"each spatial_shapes row needs rows, cols >= 1 and rows * cols <= {length} (the patch count)."
            )
        table = torch.cat([self.resized_grid(rows, cols) for rows, cols in shapes.tolist()])
        sizes = shapes.prod(dim=-1)
        offsets = (sizes.cumsum(0) - sizes)[inverse]
        steps = torch.arange(length)[None]
        index = torch.where(steps < sizes[inverse][:, None], steps, 0) + offsets[:, None]
        return table[index.to(table.device)]

    def resized_grid(self, rows: int, cols: int) -> torch.Tensor:
        """The position grid resized to (rows, cols), flattened row-major: (rows * cols, hidden).

        Cached per shape when no gradient flows to the table; the cache empties itself when the table is
        replaced, moved or updated in place (its storage pointer or version counter changes).
        """
        weight = self.position_embedding.weight
        cacheable = not (torch.is_grad_enabled() and weight.requires_grad)
        if cacheable:
            key = tensor_key(weight)
            if key != self._cache_key:
                self._grid_cache.clear()
                self._cache_key = key
            cached = self._grid_cache.get((rows, cols))
            if cached is not None:
                self._grid_cache.move_to_end((rows, cols))
                return cached
        square = weight.reshape(self.grid_size, self.grid_size, -1).permute(2, 0, 1)[None].float()
        resized = F.interpolate(square, size=(rows, cols), mode="bilinear", align_corners=False, antialias=True)
        grid = resized[0].flatten(1).t().to(weight.dtype)
        if cacheable:
            self._grid_cache[(rows, cols)] = grid
            while len(self._grid_cache) > self.cache_size:
                self._grid_cache.popitem(last=False)
        return grid
