"""Image-text retrieval recall@k on images with several captions each.

text -> image ("image retrieval"): a caption's query is a hit at k when its own image ranks in the top k images.
image -> text ("text retrieval"): an image's query is a hit at k when any of its captions ranks in the top k texts.
A rank is the number of candidates scoring strictly higher than the best correct one (ties count for the query),
computed in blocks so that 25k captions x 5k images never need the whole score matrix at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..errors import InputError

DEFAULT_KS = (1, 5, 10)


@dataclass
class RetrievalMetrics:
    """recall@k both ways, with each query's rank (what the bootstrap reads)."""

    image_to_text: dict[int, float]
    text_to_image: dict[int, float]
    image_ranks: torch.Tensor  # (N images,) rank of each image's best caption
    text_ranks: torch.Tensor  # (M captions,) rank of each caption's image
    ks: tuple[int, ...] = field(default=DEFAULT_KS)


def retrieval_ranks(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, text_image: torch.Tensor, block: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rank of each image's best caption among all texts, rank of each caption's image among all images);
    `text_image[j]` is the index of caption j's image. Scores are cosines of the normalised embeddings."""
    images, texts = image_embeds.float(), text_embeds.float()
    text_image = torch.as_tensor(text_image, dtype=torch.long)
    if texts.shape[0] != text_image.shape[0]:
        raise InputError(f"{texts.shape[0]} captions but {text_image.shape[0]} caption -> image indices")
    text_ranks = torch.empty(texts.shape[0], dtype=torch.long)
    for start in range(0, texts.shape[0], block):
        scores = texts[start : start + block] @ images.t()  # (b, N)
        own = scores.gather(1, text_image[start : start + block, None])
        text_ranks[start : start + block] = (scores > own).sum(dim=1)
    image_ranks = torch.empty(images.shape[0], dtype=torch.long)
    for start in range(0, images.shape[0], block):
        stop = min(start + block, images.shape[0])
        scores = images[start:stop] @ texts.t()  # (b, M)
        owned = text_image[None, :] == torch.arange(start, stop)[:, None]
        best = scores.masked_fill(~owned, float("-inf")).max(dim=1, keepdim=True).values
        image_ranks[start:stop] = (scores > best).sum(dim=1)
    return image_ranks, text_ranks


def retrieval_metrics(
    image_embeds: torch.Tensor,
    captions: Sequence[Sequence[str]],
    text_embeds: torch.Tensor,
    ks: Sequence[int] = DEFAULT_KS,
) -> RetrievalMetrics:
    """recall@k (fractions) both ways; `text_embeds` holds the captions' embeddings in image order, flattened."""
    text_image = torch.tensor([i for i, texts in enumerate(captions) for _ in texts], dtype=torch.long)
    if not len(text_image):
        raise InputError("retrieval needs captions: the dataset has none")
    if any(not texts for texts in captions):
        raise InputError("every image needs at least one caption for image -> text retrieval")
    image_ranks, text_ranks = retrieval_ranks(image_embeds, text_embeds, text_image)
    ks = tuple(sorted(set(ks)))
    return RetrievalMetrics(
        image_to_text={k: float((image_ranks < k).double().mean()) for k in ks},
        text_to_image={k: float((text_ranks < k).double().mean()) for k in ks},
        image_ranks=image_ranks,
        text_ranks=text_ranks,
        ks=ks,
    )
