"""SigLIP2 models: SigLIP's towers and heads with NaFlex vision inputs.

What differs from SigLIP, and nothing else, lives here: patch sequences with `pixel_attention_mask` and
`spatial_shapes` instead of image tensors, padding keys masked in every encoder layer and in the MAP head, and a
mask-aware mean for classification. Parameter names are the reference's, so checkpoints load both ways.

`packed=True` (vision inputs) runs a mixed batch without computing padding: the valid patches of all images
form one packed sequence, so every linear layer runs once over exactly the valid rows, and attention runs
per image (SDPA on each image's rows; no block-diagonal mask over the whole pack). That is exactly the masked
computation restricted to the valid rows. Outputs keep the padded layout, with zeros at padding rows.
"""

from __future__ import annotations

import torch

from ..config import Siglip2Config, Siglip2TextConfig, Siglip2VisionConfig
from ..errors import InputError
from ..kernels.attention import Segments
from .layers import key_padding_bias
from .model import SiglipForImageClassification, SiglipModel
from .naflex import Siglip2VisionEmbeddings
from .outputs import BaseModelOutputWithPooling, ImageClassifierOutput, SiglipOutput
from .text import SiglipTextModel
from .vision import SiglipVisionModel


class Siglip2TextModel(SiglipTextModel):
    """The SigLIP2 text encoder: SigLIP's, read from a `Siglip2TextConfig`."""

    config_class = Siglip2TextConfig


class Siglip2VisionModel(SiglipVisionModel):
    """The NaFlex vision encoder; `pooler_output` is the masked MAP head's output."""

    config_class = Siglip2VisionConfig
    embeddings_class = Siglip2VisionEmbeddings

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        interpolate_pos_encoding: bool = False,
        packed: bool = False,
    ) -> BaseModelOutputWithPooling | tuple:
        """Encode patch sequences (batch, patches, c*p*p) as Siglip2ImageProcessor makes them.

        `pixel_attention_mask` (batch, patches): 1 for image patches, 0 for padding (None: all valid).
        `spatial_shapes` (batch, 2): each image's patch grid (rows, cols). `interpolate_pos_encoding` is
        accepted for symmetry with SigLIP and ignored: NaFlex always resizes the positions. `packed=True` skips
        the padding rows (see the module docstring); it cannot return attention maps.
        """
        output_attentions, output_hidden_states, return_dict = self.resolve_output_flags(
            output_attentions, output_hidden_states, return_dict
        )
        pixel_attention_mask = self._check_naflex_inputs(pixel_values, pixel_attention_mask, spatial_shapes)
        if packed:
            if output_attentions:
                raise InputError("packed=True cannot return attention maps; pass packed=False for them.")
            output = self._forward_packed(pixel_values, pixel_attention_mask, spatial_shapes, output_hidden_states)
        else:
            hidden_states = self.embeddings(pixel_values, spatial_shapes)
            bias = key_padding_bias(pixel_attention_mask, hidden_states.dtype)
            output = self.encode_embeddings(hidden_states, bias, output_attentions, output_hidden_states)
        return output if return_dict else output.to_tuple()

    @torch.compiler.disable  # data-dependent lengths and gathers: eager under torch.compile
    def _forward_packed(
        self,
        pixel_values: torch.Tensor,
        pixel_attention_mask: torch.Tensor,
        spatial_shapes: torch.Tensor,
        output_hidden_states: bool,
    ) -> BaseModelOutputWithPooling:
        """Encode the valid rows of every image as one packed sequence, then scatter them to the padded layout."""
        _require_prefix_mask(pixel_attention_mask)
        valid = pixel_attention_mask.bool()
        segments = Segments.from_lengths(pixel_attention_mask.sum(dim=-1).tolist())
        embedded = self.embeddings(pixel_values, spatial_shapes, valid)
        packed = self.encode_embeddings(embedded, segments, False, output_hidden_states)

        def unpack(rows: torch.Tensor) -> torch.Tensor:
            padded = rows.new_zeros((*valid.shape, rows.shape[-1]))
            padded[valid] = rows[0]
            return padded

        hidden_states = tuple(unpack(h) for h in packed.hidden_states) if packed.hidden_states else None
        return BaseModelOutputWithPooling(unpack(packed.last_hidden_state), packed.pooler_output, hidden_states, None)

    def _check_naflex_inputs(
        self,
        pixel_values: torch.Tensor | None,
        pixel_attention_mask: torch.Tensor | None,
        spatial_shapes: torch.Tensor | None,
    ) -> torch.Tensor:
        """Raise InputError for malformed NaFlex inputs; returns the mask (all ones when None).

        Only shapes are checked here, so that torch.compile traces this without a graph break; the values of
        `spatial_shapes` are checked where they are read, in the (eager) position-grid step of the embeddings.
        """
        row = self.config.num_channels * self.config.patch_size**2
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 3 or pixel_values.shape[-1] != row:
            raise InputError(
                f"pixel_values must be a float tensor of shape (batch, patches, {row}) (num_channels * "
                "patch_size**2 values per patch); use Siglip2ImageProcessor to make one."
            )
        batch, length = pixel_values.shape[:2]
        if not isinstance(spatial_shapes, torch.Tensor) or tuple(spatial_shapes.shape) != (batch, 2):
            raise InputError(f"spatial_shapes must be an integer tensor of shape ({batch}, 2): (rows, cols) per image.")
        if pixel_attention_mask is None:
            return torch.ones((batch, length), dtype=torch.long, device=pixel_values.device)
        if tuple(pixel_attention_mask.shape) != (batch, length):
            raise InputError(
                f"pixel_attention_mask has shape {tuple(pixel_attention_mask.shape)}; expected ({batch}, {length})."
            )
        return pixel_attention_mask


def _require_prefix_mask(pixel_attention_mask: torch.Tensor) -> None:
    """Packing needs each image's valid patches first, then padding (the image processor's layout)."""
    lengths = pixel_attention_mask.sum(dim=-1, keepdim=True)
    steps = torch.arange(pixel_attention_mask.shape[1], device=lengths.device)[None]
    if bool((lengths < 1).any()) or not torch.equal(pixel_attention_mask.bool(), steps < lengths):
        raise InputError(
            "packed=True needs every pixel_attention_mask row to be ones then zeros, with at least one patch."
        )


class Siglip2Model(SiglipModel):
    """Two-tower SigLIP2. Same scoring and loss as SiglipModel; vision inputs are NaFlex patch sequences."""

    config_class = Siglip2Config
    text_model_class = Siglip2TextModel
    vision_model_class = Siglip2VisionModel

    def get_image_features(
        self,
        pixel_values: torch.Tensor | None = None,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        packed: bool = False,
    ) -> torch.Tensor:
        """Image embeddings (batch, hidden_size), before L2 normalisation."""
        return super().get_image_features(
            pixel_values,
            output_attentions,
            output_hidden_states,
            return_dict,
            pixel_attention_mask=pixel_attention_mask,
            spatial_shapes=spatial_shapes,
            packed=packed,
        )

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        return_loss: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        packed: bool = False,
    ) -> SiglipOutput | tuple:
        """Score every text against every image (arguments in the reference's order)."""
        return super().forward(
            input_ids,
            pixel_values,
            attention_mask,
            position_ids,
            return_loss,
            output_attentions,
            output_hidden_states,
            return_dict,
            pixel_attention_mask=pixel_attention_mask,
            spatial_shapes=spatial_shapes,
            packed=packed,
        )


class Siglip2ForImageClassification(SiglipForImageClassification):
    """NaFlex vision tower + mean over the valid patch tokens + a linear classifier."""

    config_class = Siglip2Config
    vision_model_class = Siglip2VisionModel

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        packed: bool = False,
    ) -> ImageClassifierOutput | tuple:
        """Classify NaFlex images; with `labels` the loss follows config.problem_type (inferred when None)."""
        return super().forward(
            pixel_values,
            labels,
            output_attentions,
            output_hidden_states,
            return_dict,
            pixel_attention_mask=pixel_attention_mask,
            spatial_shapes=spatial_shapes,
            packed=packed,
        )

    def pool_tokens(
        self, last_hidden_state: torch.Tensor, pixel_attention_mask: torch.Tensor | None = None, **_: object
    ) -> torch.Tensor:
        """Mean of the tokens the mask keeps (all tokens when there is no mask), as the reference pools."""
        if pixel_attention_mask is None:
            return last_hidden_state.mean(dim=1)
        weights = pixel_attention_mask[..., None].to(last_hidden_state.dtype)
        return (last_hidden_state * weights).sum(dim=1) / weights.sum(dim=1)
