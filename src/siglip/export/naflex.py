"""SigLIP2 NaFlex position embeddings as an ONNX-exportable computation.

The model resizes its square grid of learned positions to each image's patch grid (rows, cols) with bilinear +
antialias interpolation (`modeling/naflex.py`, as the reference). That resize has a per-image output size, which
ONNX's Resize cannot express for a batch, and `torch.unique` over the shapes does not trace. But a separable
antialiased resize is linear: output row r of an image with `rows` rows is a fixed weighting of the grid's rows,
and likewise for columns. So the position of patch i of image b is

    position[b, i] = sum_{y, x} w_rows(rows_b)[r_i, y] * w_cols(cols_b)[c_i, x] * table[y * grid + x]

with (r_i, c_i) = divmod(i, cols_b). This module builds those weights from `spatial_shapes` with plain tensor ops
(arange, floor, abs, relu, a normalising division), one (batch, patches, grid * grid) weight matrix, and does a
single MatMul with the position table: everything inside the graph, dynamic in batch and patch count, no extra
input. Padding rows (i >= rows * cols) take position 0, as the model's do. The weights follow PyTorch's
antialiased bilinear kernel (`_compute_weights_aa` in ATen's UpSampleKernel.cpp): scale = in / out, support =
max(scale, 1), triangle filter (1 - |t|)+ at t = (j + 0.5 - scale * (o + 0.5)) / max(scale, 1), weights
normalised to sum 1 over the grid. The result equals `F.interpolate(..., antialias=True)` to fp32 rounding.
Compute runs in fp32 whatever the table's dtype, as the model does.
"""

from __future__ import annotations

import torch
from torch import nn


def antialias_bilinear_weights(out_index: torch.Tensor, out_size: torch.Tensor, in_size: int) -> torch.Tensor:
    """Weights (..., in_size) that map an axis of `in_size` samples to sample `out_index` of `out_size` samples.

    `out_index` and `out_size` are integer tensors of the same shape; the weights of each output sum to 1.
    """
    scale = in_size / out_size.to(torch.float32)
    support = torch.clamp(scale, min=1.0)  # the triangle widens when shrinking (antialias), stays 1 when growing
    center = scale * (out_index.to(torch.float32) + 0.5)
    source = torch.arange(in_size, dtype=torch.float32, device=out_index.device) + 0.5
    distance = (source - center[..., None]) / support[..., None]
    weights = torch.relu(1.0 - distance.abs())
    return weights / weights.sum(dim=-1, keepdim=True)


class NaflexPositions(nn.Module):
    """(batch, 2) `spatial_shapes` and a patch count -> (batch, patches, hidden) resized positions, traceable."""

    def __init__(self, embeddings: nn.Module) -> None:
        super().__init__()
        self.embeddings = embeddings  # the model's Siglip2VisionEmbeddings: its table is used, not copied

    def forward(self, spatial_shapes: torch.Tensor, length: torch.Tensor | int) -> torch.Tensor:
        rows, cols = spatial_shapes[:, 0:1].long(), spatial_shapes[:, 1:2].long()
        steps = torch.arange(length, device=spatial_shapes.device)[None]  # (1, patches)
        index = torch.where(steps < rows * cols, steps, torch.zeros_like(steps))  # padding -> position 0
        row_index = torch.div(index, cols, rounding_mode="floor")
        col_index = index - row_index * cols
        # PyTorch's CPU antialiased kernel (torch 2.13, so the model and transformers on CPU) gives every output
        # row the first row's value when the output is one column wide and the rows are resized; reproduced here
        # so that the graph equals the model (tests/test_onnx_export.py pins both).
        one_column = (cols == 1) & (rows != self.embeddings.grid_size)
        row_index = torch.where(one_column, torch.zeros_like(row_index), row_index)
        grid = self.embeddings.grid_size
        row_weights = antialias_bilinear_weights(row_index, rows.expand_as(row_index), grid)
        col_weights = antialias_bilinear_weights(col_index, cols.expand_as(col_index), grid)
        weights = (row_weights[..., :, None] * col_weights[..., None, :]).flatten(-2)  # (batch, patches, grid^2)
        table = self.embeddings.position_embedding.weight
        return torch.matmul(weights, table.to(torch.float32)).to(table.dtype)
