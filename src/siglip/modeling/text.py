"""SigLIP text tower: token + learned position embeddings, bidirectional encoder, final LayerNorm, and a
linear head on the last position."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ..config import SiglipTextConfig
from ..errors import InputError
from ..kernels import linear as kernels
from .layers import SiglipEncoder, key_padding_bias
from .outputs import BaseModelOutputWithPooling
from .pretrained import SiglipPreTrainedModel


class SiglipTextEmbeddings(nn.Module):
    """token_embedding(ids) + position_embedding(positions)."""

    def __init__(self, config: SiglipTextConfig) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = nn.Embedding(config.max_position_embeddings, config.hidden_size)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[-1], device=input_ids.device)[None]
        return self.token_embedding(input_ids) + self.position_embedding(position_ids)


class SiglipTextModel(SiglipPreTrainedModel):
    """The text encoder. `pooler_output` is head(LN(h)[:, -1]): the last position, which with the
    processor's default `padding="max_length"` is a pad token, exactly as the model was trained."""

    config_class = SiglipTextConfig
    checkpoint_prefix = "text_model."
    main_input_name = "input_ids"

    def __init__(self, config: SiglipTextConfig) -> None:
        super().__init__(config)
        self.embeddings = SiglipTextEmbeddings(config)
        self.encoder = SiglipEncoder(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.head = nn.Linear(config.hidden_size, config.projection_size)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.token_embedding

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embeddings.token_embedding = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPooling | tuple:
        """Encode token ids (batch, tokens); `attention_mask` (1 keep, 0 pad) masks keys only."""
        output_attentions, output_hidden_states, return_dict = self.resolve_output_flags(
            output_attentions, output_hidden_states, return_dict
        )
        hidden_states, bias = self._embed(input_ids, attention_mask, position_ids)
        last_hidden_state, all_hidden, all_attentions = self.encoder(
            hidden_states, bias, output_attentions, output_hidden_states
        )
        last_hidden_state = self.final_layer_norm(last_hidden_state)
        pooled = kernels.linear(self.head, last_hidden_state[:, -1, :])
        output = BaseModelOutputWithPooling(last_hidden_state, pooled, all_hidden, all_attentions)
        return output if return_dict else output.to_tuple()

    def pooled_output(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`forward(...).pooler_output` alone (what `get_text_features` returns), computed with the last layer
        at the last position only: the head reads nothing else, and no other position of that layer feeds it.
        The same function, with most of one layer's work left out (18 % of a 4-layer tower's FLOPs, 6 % of the
        12-layer base model's)."""
        hidden_states, bias = self._embed(input_ids, attention_mask, position_ids)
        last, _, _ = self.encoder(hidden_states, bias, last_position_only=True)
        return kernels.linear(self.head, self.final_layer_norm(last[:, -1, :]))

    def _embed(
        self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, position_ids: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(input embeddings, the attention bias of `attention_mask`), the inputs checked."""
        input_ids = self._check_input_ids(input_ids)
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise InputError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has {tuple(input_ids.shape)}."
            )
        hidden_states = self.embeddings(input_ids, position_ids)
        return hidden_states, key_padding_bias(attention_mask, hidden_states.dtype)

    def _check_input_ids(self, input_ids: torch.Tensor | None) -> torch.Tensor:
        if input_ids is None:
            raise InputError("input_ids is required: tokenize the text first (SiglipTokenizer or SiglipProcessor).")
        if not isinstance(input_ids, torch.Tensor) or input_ids.is_floating_point():
            raise InputError("input_ids must be an integer torch tensor of shape (batch, tokens).")
        input_ids = input_ids.reshape(-1, input_ids.shape[-1])
        limit = self.config.max_position_embeddings
        if input_ids.shape[-1] > limit:
            raise InputError(
                f"{input_ids.shape[-1]} tokens exceed max_position_embeddings={limit}; tokenize with "
                f"truncation=True, max_length={limit}."
            )
        _check_id_range(input_ids, self.config.vocab_size)
        if input_ids.shape[-1] < limit and not _warned_short_ids and not torch.compiler.is_compiling():
            _warn_short_ids(input_ids.shape[-1], limit)
        return input_ids


_warned_short_ids = False  # the warning below is given once per process


def _warn_short_ids(length: int, trained: int) -> None:
    """Warn (once) that ids shorter than the trained length give other embeddings: SigLIP's text tower was trained
    on text padded to `max_position_embeddings` and pools the last position, so unpadded text is embedded off its
    training distribution (zero-shot accuracy can drop far). The numbers are left as computed."""
    global _warned_short_ids
    _warned_short_ids = True
    warnings.warn(
        f"the text tower got {length} tokens per text, fewer than the {trained} it was trained with: SigLIP pools "
        f"the last position, so unpadded text is embedded differently (often much less accurately). Tokenize with "
        f"padding='max_length', max_length={trained}, as the zero-shot pipeline does.",
        UserWarning,
        stacklevel=4,
    )


@torch.compiler.disable  # reads values back (.min/.max): eager under torch.compile, without a graph-break warning
def _check_id_range(input_ids: torch.Tensor, vocab_size: int) -> None:
    if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab_size):
        raise InputError(
            f"input_ids must lie in [0, {vocab_size}); got values in "
            f"[{int(input_ids.min())}, {int(input_ids.max())}]. Is the tokenizer the model's own?"
        )
