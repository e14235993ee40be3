"""The two-tower model and the image classifier built on the vision tower."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import SiglipConfig
from ..errors import ConfigError, InputError
from ..kernels import linear as kernels
from ..loss import sigmoid_loss_from_logits
from .outputs import BaseModelOutputWithPooling, ImageClassifierOutput, SiglipOutput
from .pretrained import SiglipPreTrainedModel
from .text import SiglipTextModel
from .vision import SiglipVisionModel


def l2_normalize(embeds: torch.Tensor) -> torch.Tensor:
    """x / ||x||, written as the reference writes it (no epsilon), so outputs match to the last bit."""
    return embeds / embeds.norm(p=2, dim=-1, keepdim=True)


class SiglipModel(SiglipPreTrainedModel):
    """Text tower + vision tower + a learned logit scale (log-space) and bias."""

    config_class = SiglipConfig
    text_model_class = SiglipTextModel
    vision_model_class = SiglipVisionModel

    def __init__(self, config: SiglipConfig) -> None:
        super().__init__(config)
        self.text_model = self.text_model_class(config.text_config)
        self.vision_model = self.vision_model_class(config.vision_config)
        self.logit_scale = nn.Parameter(torch.zeros(1))
        self.logit_bias = nn.Parameter(torch.zeros(1))
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.text_model.embeddings.token_embedding

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.text_model.embeddings.token_embedding = value

    def get_text_features(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> torch.Tensor:
        """Text embeddings (batch, projection_size), before L2 normalisation."""
        output_attentions, output_hidden_states, _ = self.text_model.resolve_output_flags(
            output_attentions, output_hidden_states, return_dict
        )
        if not output_attentions and not output_hidden_states and not _call_adds_behaviour(self.text_model):
            return self.text_model.pooled_output(input_ids, attention_mask, position_ids)  # the embedding alone
        return self.text_model(
            input_ids, attention_mask, position_ids, output_attentions, output_hidden_states, return_dict=True
        ).pooler_output

    def get_image_features(
        self,
        pixel_values: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        interpolate_pos_encoding: bool = False,
        **vision_inputs: torch.Tensor,
    ) -> torch.Tensor:
        """Image embeddings (batch, hidden_size), before L2 normalisation."""
        self._require_vision_head()
        return self.vision_model(
            pixel_values,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            interpolate_pos_encoding=interpolate_pos_encoding,
            **vision_inputs,
        ).pooler_output

    def init_own_weights(self) -> None:
        """Initialisation from scratch (modeling/init.py): zero logit scale and bias (training sets its own)."""
        nn.init.zeros_(self.logit_scale)
        nn.init.zeros_(self.logit_bias)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        return_loss: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        interpolate_pos_encoding: bool = False,
        **vision_inputs: torch.Tensor,
    ) -> SiglipOutput | tuple:
        """Score every text against every image: logits = cos(text, image) * exp(logit_scale) + logit_bias.

        `vision_inputs` carries the extra vision arguments of subclasses (SigLIP2's pixel_attention_mask and
        spatial_shapes). With `return_loss=True` the pairwise sigmoid loss of the (square) batch is added.
        """
        output_attentions, output_hidden_states, return_dict = self.resolve_output_flags(
            output_attentions, output_hidden_states, return_dict
        )
        if input_ids is None or pixel_values is None:
            raise InputError(
                "SiglipModel needs both input_ids and pixel_values; use get_text_features or get_image_features "
                "to embed one modality."
            )
        self._require_vision_head()
        vision_output: BaseModelOutputWithPooling = self.vision_model(
            pixel_values,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            interpolate_pos_encoding=interpolate_pos_encoding,
            **vision_inputs,
        )
        text_output: BaseModelOutputWithPooling = self.text_model(
            input_ids, attention_mask, position_ids, output_attentions, output_hidden_states, return_dict=True
        )
        image_embeds = l2_normalize(vision_output.pooler_output)
        text_embeds = l2_normalize(text_output.pooler_output)
        logits_per_text = text_embeds @ image_embeds.t() * self.logit_scale.exp() + self.logit_bias
        loss = None
        if return_loss:
            if logits_per_text.shape[0] != logits_per_text.shape[1]:
                raise InputError("return_loss=True needs as many texts as images (pair i is text i, image i).")
            loss = sigmoid_loss_from_logits(logits_per_text)
        output = SiglipOutput(
            loss, logits_per_text.t(), logits_per_text, text_embeds, image_embeds, text_output, vision_output
        )
        return output if return_dict else output.to_tuple()

    def _require_vision_head(self) -> None:
        if self.vision_model.head is None:
            raise ConfigError("this model's vision tower has vision_use_head=False, so it has no image embedding.")


class SiglipForImageClassification(SiglipPreTrainedModel):
    """Vision tower + mean over patch tokens + a linear classifier (Identity when num_labels == 0)."""

    config_class = SiglipConfig
    vision_model_class = SiglipVisionModel
    optional_parts = ("classifier.",)

    def __init__(self, config: SiglipConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vision_model = self.vision_model_class(config.vision_config)
        hidden = config.vision_config.hidden_size
        self.classifier = nn.Linear(hidden, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.vision_model.embeddings.patch_embedding

    def init_own_weights(self) -> None:
        """Initialisation from scratch (modeling/init.py): a normal classifier of std initializer_factor /
        sqrt(width)."""
        if isinstance(self.classifier, nn.Linear):
            std = self.config.vision_config.hidden_size**-0.5 * self.config.initializer_factor
            nn.init.normal_(self.classifier.weight, std=std)
            nn.init.zeros_(self.classifier.bias)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        interpolate_pos_encoding: bool = False,
        **vision_inputs: torch.Tensor,
    ) -> ImageClassifierOutput | tuple:
        """Classify images; with `labels` the loss follows config.problem_type (inferred when None)."""
        output_attentions, output_hidden_states, return_dict = self.resolve_output_flags(
            output_attentions, output_hidden_states, return_dict
        )
        outputs: BaseModelOutputWithPooling = self.vision_model(
            pixel_values,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            interpolate_pos_encoding=interpolate_pos_encoding,
            **vision_inputs,
        )
        logits = kernels.linear(self.classifier, self.pool_tokens(outputs.last_hidden_state, **vision_inputs))
        loss = self.classification_loss(logits, labels) if labels is not None else None
        output = ImageClassifierOutput(loss, logits, outputs.hidden_states, outputs.attentions)
        return output if return_dict else output.to_tuple()

    def pool_tokens(self, last_hidden_state: torch.Tensor, **vision_inputs: torch.Tensor) -> torch.Tensor:
        """Average of the patch tokens (SigLIP2 overrides this with a mask-aware mean)."""
        return last_hidden_state.mean(dim=1)

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """MSE for regression, cross-entropy for single-label, BCE-with-logits for multi-label, as the reference."""
        problem_type = self.config.problem_type
        if problem_type is None:
            if self.num_labels == 1:
                problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                problem_type = "single_label_classification"
            else:
                problem_type = "multi_label_classification"
        labels = labels.to(logits.device)
        if problem_type == "regression":
            if self.num_labels == 1:
                return F.mse_loss(logits.squeeze(), labels.squeeze())
            return F.mse_loss(logits, labels)
        if problem_type == "single_label_classification":
            return F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1), ignore_index=-100)
        return F.binary_cross_entropy_with_logits(logits, labels)


def _call_adds_behaviour(module: nn.Module) -> bool:
    """Calling `module` does more than its forward: it was compiled (`module.compile()` / `torch.compile`) or
    carries hooks. get_text_features then calls it, so that the compiled graph and the hooks apply."""
    compiled = hasattr(module, "_orig_mod") or getattr(module, "_compiled_call_impl", None) is not None
    return compiled or bool(module._forward_hooks) or bool(module._forward_pre_hooks)
