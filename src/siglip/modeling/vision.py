"""SigLIP vision tower: conv patchify + learned positions (no CLS token), encoder, post LayerNorm, and the
multihead attention pooling (MAP) head."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import SiglipVisionConfig
from ..errors import InputError
from ..kernels import linear as kernels
from ..kernels.attention import Segments, folded_one_query_attention, folding_applies, scaled_dot_product
from .init import variance_scaling_
from .layers import SiglipEncoder, SiglipMLP
from .outputs import BaseModelOutputWithPooling
from .pretrained import SiglipPreTrainedModel


class SiglipVisionEmbeddings(nn.Module):
    """Non-overlapping patches through a conv, plus a learned position embedding per patch."""

    def __init__(self, config: SiglipVisionConfig) -> None:
        super().__init__()
        self.patch_size = config.patch_size
        self.grid_size = config.image_size // config.patch_size
        self.patch_embedding = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.position_embedding = nn.Embedding(self.grid_size**2, config.hidden_size)

    def init_own_weights(self) -> None:
        """Initialisation from scratch (modeling/init.py): 1/sqrt(width) positions, lecun-normal patches."""
        nn.init.normal_(self.position_embedding.weight, std=1 / math.sqrt(self.position_embedding.weight.shape[1]))
        variance_scaling_(self.patch_embedding.weight)
        nn.init.zeros_(self.patch_embedding.bias)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        height, width = pixel_values.shape[-2:]
        weight = self.patch_embedding.weight
        patches = kernels.convolution(self.patch_embedding, pixel_values.to(weight.dtype)).flatten(2).transpose(1, 2)
        grid = (height // self.patch_size, width // self.patch_size)
        if interpolate_pos_encoding and grid != (self.grid_size, self.grid_size):
            return patches + self.resized_positions(grid)
        return patches + self.position_embedding.weight[None]

    def resized_positions(self, grid: tuple[int, int]) -> torch.Tensor:
        """Position table resized to `grid` (rows, cols): bicubic, align_corners=False, as the reference."""
        table = self.position_embedding.weight
        square = table.reshape(1, self.grid_size, self.grid_size, -1).permute(0, 3, 1, 2)
        resized = F.interpolate(square, size=grid, mode="bicubic", align_corners=False)
        return resized.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1)


class MultiheadCrossAttention(nn.Module):
    """Cross-attention with one q/k/v input projection: the `nn.MultiheadAttention` parameter layout
    (`in_proj_weight`, `in_proj_bias`, `out_proj`) that SigLIP checkpoints store for the MAP head."""

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * hidden_size, hidden_size))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * hidden_size))
        self.out_proj = nn.Linear(hidden_size, hidden_size)

    def forward(
        self, query: torch.Tensor, key_value: torch.Tensor, bias: torch.Tensor | Segments | None = None
    ) -> torch.Tensor:
        w_q, w_kv = self.in_proj_weight.split([query.shape[-1], 2 * query.shape[-1]])
        b_q, b_kv = self.in_proj_bias.split([query.shape[-1], 2 * query.shape[-1]])
        q = kernels.plain_linear(query, w_q, b_q)
        if query.shape[1] == 1 and not isinstance(bias, Segments) and folding_applies(key_value):
            # one query per image: keys and values folded into it (kernels/attention.py), ~1.4 % of a base tower
            w_k, w_v = w_kv.chunk(2)
            q = q.view(q.shape[0], self.num_heads, q.shape[-1] // self.num_heads)
            output = folded_one_query_attention(q, key_value, w_k, w_v, b_kv.chunk(2)[1], bias)
            return kernels.linear(self.out_proj, output)
        k, v = kernels.weight_linear(self, key_value, w_kv, b_kv).chunk(2, dim=-1)
        heads = lambda t: t.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # noqa: E731
        output, _ = scaled_dot_product(heads(q), heads(k), heads(v), bias, "sdpa")
        return kernels.linear(self.out_proj, output.transpose(1, 2).flatten(2))


class MultiheadAttentionPoolingHead(nn.Module):
    """MAP head: a learned probe attends over the tokens (no residual), then x + MLP(LN(x))."""

    def __init__(self, config: SiglipVisionConfig) -> None:
        super().__init__()
        self.probe = nn.Parameter(torch.empty(1, 1, config.hidden_size))
        self.attention = MultiheadCrossAttention(config.hidden_size, config.num_attention_heads)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SiglipMLP(config.hidden_size, config.intermediate_size, config.hidden_act)

    def init_own_weights(self) -> None:
        """Initialisation from scratch (modeling/init.py): xavier-uniform probe and in-projection."""
        nn.init.xavier_uniform_(self.probe)
        nn.init.xavier_uniform_(self.attention.in_proj_weight)
        nn.init.zeros_(self.attention.in_proj_bias)

    def forward(self, hidden_states: torch.Tensor, bias: torch.Tensor | Segments | None = None) -> torch.Tensor:
        """Pooled (batch, hidden); with `Segments`, one probe per packed sequence of `hidden_states`."""
        batch = len(bias) if isinstance(bias, Segments) else hidden_states.shape[0]
        probe = self.probe.expand(batch, -1, -1)
        pooled = self.attention(probe, hidden_states, bias)
        pooled = self.mlp(self.layernorm(pooled), pooled)
        return pooled[:, 0]


class SiglipVisionModel(SiglipPreTrainedModel):
    """The vision encoder; `pooler_output` is the MAP head's output (None when vision_use_head=False)."""

    config_class = SiglipVisionConfig
    checkpoint_prefix = "vision_model."

    def __init__(self, config: SiglipVisionConfig) -> None:
        super().__init__(config)
        self.embeddings = self.embeddings_class(config)
        self.encoder = SiglipEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.head = MultiheadAttentionPoolingHead(config) if config.vision_use_head else None
        self.post_init()

    embeddings_class = SiglipVisionEmbeddings

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embedding

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        interpolate_pos_encoding: bool = False,
    ) -> BaseModelOutputWithPooling | tuple:
        """Encode images (batch, channels, height, width), normalised as the image processor does."""
        output_attentions, output_hidden_states, return_dict = self.resolve_output_flags(
            output_attentions, output_hidden_states, return_dict
        )
        self._check_pixel_values(pixel_values, interpolate_pos_encoding)
        hidden_states = self.embeddings(pixel_values, interpolate_pos_encoding)
        output = self.encode_embeddings(hidden_states, None, output_attentions, output_hidden_states)
        return output if return_dict else output.to_tuple()

    def encode_embeddings(
        self,
        hidden_states: torch.Tensor,
        bias: torch.Tensor | Segments | None,
        output_attentions: bool,
        output_hidden_states: bool,
    ) -> BaseModelOutputWithPooling:
        """Encoder, post LayerNorm and MAP head over embedded patches; `bias` masks keys (SigLIP2 padding)."""
        last_hidden_state, all_hidden, all_attentions = self.encoder(
            hidden_states, bias, output_attentions, output_hidden_states
        )
        last_hidden_state = self.post_layernorm(last_hidden_state)
        pooled = self.head(last_hidden_state, bias) if self.head is not None else None
        return BaseModelOutputWithPooling(last_hidden_state, pooled, all_hidden, all_attentions)

    def _check_pixel_values(self, pixel_values: torch.Tensor | None, interpolate_pos_encoding: bool) -> None:
        config = self.config
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 4:
            raise InputError(
                "pixel_values must be a float tensor of shape (batch, channels, height, width); "
                "use SiglipImageProcessor to make one."
            )
        _, channels, height, width = pixel_values.shape
        if channels != config.num_channels:
            raise InputError(f"pixel_values has {channels} channels; the model expects {config.num_channels}.")
        if height < config.patch_size or width < config.patch_size:
            raise InputError(f"images of {height}x{width} are smaller than one {config.patch_size}px patch.")
        grid = config.image_size // config.patch_size
        if not interpolate_pos_encoding and (height // config.patch_size, width // config.patch_size) != (
            grid,
            grid,
        ):
            raise InputError(
                f"pixel_values are {height}x{width} but the model was built for {config.image_size}x"
                f"{config.image_size}; resize them, or pass interpolate_pos_encoding=True."
            )
