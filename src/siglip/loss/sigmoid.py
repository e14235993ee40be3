"""The SigLIP pairwise sigmoid loss: plain and blockwise (memory-bounded); `distributed.py` runs it across ranks.

Notation (one batch of B pairs; text i belongs with image i):
    z_ij = s * <t_i, x_j> + b          s = exp(logit_scale), b = logit_bias, t/x L2-normalised text/image rows
    l_ij = +1 if i == j else -1        every pair is its own binary problem
    loss = -1/B * sum_ij logsigmoid(l_ij * z_ij) = 1/B * sum_ij softplus(-l_ij * z_ij)

The blockwise path rests on one identity, softplus(-z) = softplus(z) - z, which splits the loss into a part that
treats every pair as a negative and a correction that only touches the B positives:
    B * loss = sum_ij softplus(z_ij)  -  sum_i z_ii
The first term is computed tile by tile (N x N) by `_BlockwiseLossSum`, which keeps only its inputs for backward
and recomputes each tile there; the second term is O(B*D) and handled by the same Function. The gradients of the
first term, with p_ij = sigmoid(z_ij) (d softplus(z)/dz = sigmoid(z)):
    d/dt_i = s * sum_j p_ij x_j        d/dx_j = s * sum_i p_ij t_i
    d/db   = sum_ij p_ij               d/dlogit_scale = sum_ij p_ij * s<t_i,x_j> = sum_ij p_ij * (z_ij - b)
and those of the second are -s x_i (for t_i), -s t_i (for x_i), -sum_i s<t_i,x_i> and -B. No tile outlives its
loop iteration: peak extra memory is O(B*D + N^2), never B x B.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ..errors import InputError

__all__ = ["sigmoid_loss", "sigmoid_loss_from_logits"]


def sigmoid_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    block_size: int | None = None,
) -> torch.Tensor:
    """SigLIP's loss on B (image, text) pairs, equal to transformers' `SiglipModel(..., return_loss=True).loss`.

    Args:
        image_embeds, text_embeds: (B, D) L2-normalised embeddings; row i of each is a positive pair.
        logit_scale: the model's log-temperature (one element); `exp` is applied here.
        logit_bias: the model's logit bias (one element).
        block_size: None for the plain loss (materialises the B x B logits, as the reference does); an int N for
            the blockwise loss, whose forward and backward only ever hold N x N tiles.

    Returns:
        A 0-d tensor; fp32 for bf16/fp16 inputs (tiles are accumulated in fp32), else the inputs' dtype.
    """
    _check_pairs(image_embeds, text_embeds, logit_scale, logit_bias, block_size)
    return pair_loss_sum(text_embeds, image_embeds, logit_scale, logit_bias, 0, block_size) / image_embeds.shape[0]


def sigmoid_loss_from_logits(logits_per_text: torch.Tensor) -> torch.Tensor:
    """The plain loss on an already computed square (B, B) `logits_per_text`: what `SiglipModel` needs."""
    if logits_per_text.ndim != 2 or logits_per_text.shape[0] != logits_per_text.shape[1]:
        raise InputError(
            "the sigmoid loss needs square (B, B) logits (text i pairs with image i), "
            f"got {tuple(logits_per_text.shape)}."
        )
    return _dense_loss_sum(logits_per_text, 0) / logits_per_text.shape[0]


def pair_loss_sum(
    text: torch.Tensor,
    image: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    positive_offset: int | None,
    block_size: int | None,
) -> torch.Tensor:
    """sum_ij softplus(-l_ij z_ij) between M texts and n images, not yet divided by any batch size.

    Text `positive_offset + k` pairs with image k; `positive_offset=None` means every pair is a negative (texts
    that came from another rank). Shared by `sigmoid_loss` and both distributed methods.
    """
    if block_size is None:
        logits = text @ image.t() * logit_scale.exp() + logit_bias
        return _dense_loss_sum(logits, positive_offset)
    return _BlockwiseLossSum.apply(text, image, logit_scale, logit_bias, positive_offset, block_size)


def _dense_loss_sum(logits: torch.Tensor, positive_offset: int | None) -> torch.Tensor:
    """-sum(logsigmoid(labels * logits)) with labels +1 at (offset + k, k), -1 elsewhere; the reference's ops."""
    logits = logits.to(_accumulation_dtype(logits.dtype))
    labels = torch.full_like(logits, -1.0)
    if positive_offset is not None:
        labels.diagonal(-positive_offset).fill_(1.0)  # diagonal(-o) walks (o + k, k)
    return -F.logsigmoid(labels * logits).sum()


class _BlockwiseLossSum(torch.autograd.Function):
    """sum_ij softplus(-l_ij z_ij) over M x n pairs as sum_ij softplus(z_ij) - sum_k z_kk, in N x N tiles.

    Forward saves only its four inputs; backward recomputes every tile (one extra matmul per tile, the price of
    never storing the M x n logits) and accumulates the feature gradients, positives' correction included, in
    buffers of the inputs' shapes (fp32 for half inputs) that become the returned gradients: no other (B, D)
    temporaries.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        text: torch.Tensor,
        image: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor,
        positive_offset: int | None,
        block_size: int,
    ) -> torch.Tensor:
        ctx.save_for_backward(text, image, logit_scale, logit_bias)
        ctx.positive_offset, ctx.block_size = positive_offset, block_size
        total = torch.zeros((), dtype=_sum_dtype(text.device), device=text.device)
        for _, _, logits in _tiles(text, image, logit_scale, logit_bias, block_size):
            total += F.softplus(logits).sum()  # every pair as a negative: -logsigmoid(-z) = softplus(z)
        ctx.positive_dots = 0.0
        if positive_offset is not None:  # softplus(-z) = softplus(z) - z: subtract the positives' logits
            ctx.positive_dots = _positive_dots(text, image, positive_offset, block_size)
            scale, bias = logit_scale.double().exp().item(), logit_bias.double().item()
            total -= scale * ctx.positive_dots + image.shape[0] * bias
        return total.to(_accumulation_dtype(text.dtype))

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor) -> tuple:
        text, image, logit_scale, logit_bias = ctx.saved_tensors
        need_text, need_image, need_scale, need_bias = ctx.needs_input_grad[:4]
        dtype = _accumulation_dtype(text.dtype)
        grad = grad_output.item()
        scale = logit_scale.to(dtype).exp().item()
        grad_text = torch.zeros(text.shape, dtype=dtype, device=text.device) if need_text else None
        grad_image = torch.zeros(image.shape, dtype=dtype, device=image.device) if need_image else None
        sum_p = torch.zeros((), dtype=_sum_dtype(text.device), device=text.device)
        sum_pz = torch.zeros_like(sum_p)
        for rows, cols, logits in _tiles(text, image, logit_scale, logit_bias, ctx.block_size):
            probs = torch.sigmoid(logits)  # p_ij = d softplus(z_ij) / d z_ij
            if need_scale:
                sum_pz += torch.dot(probs.flatten(), logits.flatten())
            if need_bias or need_scale:
                sum_p += probs.sum()
            del logits
            probs = probs.to(text.dtype)
            # d/dt_i = s * sum_j p_ij x_j and d/dx_j = s * sum_i p_ij t_i, times the incoming gradient.
            if need_text:
                _accumulate_matmul(grad_text[rows], probs, image[cols], grad * scale)
            if need_image:
                _accumulate_matmul(grad_image[cols], probs.t(), text[rows], grad * scale)
        positives = 0
        if ctx.positive_offset is not None:  # -z_kk: d/dt_{o+k} = -s x_k, d/dx_k = -s t_{o+k}
            positives, offset = image.shape[0], ctx.positive_offset
            if need_text:
                grad_text[offset : offset + positives].add_(image, alpha=-grad * scale)
            if need_image:
                grad_image.add_(text[offset : offset + positives], alpha=-grad * scale)
        bias = logit_bias.to(dtype).item()
        # d/dlogit_scale = sum_ij p_ij (z_ij - b) - sum_k s<t,x>_kk: exp's derivative is exp, and s<t,x> = z - b.
        grad_scale = sum_pz - bias * sum_p - scale * ctx.positive_dots
        grad_scale = _like(logit_scale, grad * grad_scale) if need_scale else None
        grad_bias = _like(logit_bias, grad * (sum_p - positives)) if need_bias else None
        return _cast(grad_text, text), _cast(grad_image, image), grad_scale, grad_bias, None, None


def _positive_dots(text: torch.Tensor, image: torch.Tensor, offset: int, size: int) -> float:
    """sum_k <t_{offset+k}, x_k>, N rows at a time, in fp64."""
    total = torch.zeros((), dtype=_sum_dtype(text.device), device=text.device)
    for row in range(0, image.shape[0], size):
        end = min(row + size, image.shape[0])
        texts, images = text[offset + row : offset + end], image[row:end]
        total += torch.linalg.vecdot(texts.to(total.dtype), images.to(total.dtype)).sum()
    return total.item()


def _tiles(text: torch.Tensor, image: torch.Tensor, logit_scale: torch.Tensor, logit_bias: torch.Tensor, size: int):
    """Yield (row slice, column slice, fp32+ logits tile) for every N x N tile of text @ image.T."""
    dtype = _accumulation_dtype(text.dtype)
    scale = logit_scale.to(dtype).exp().item()
    bias = logit_bias.to(dtype).reshape(1)
    for row in range(0, text.shape[0], size):
        rows = slice(row, row + size)
        for col in range(0, image.shape[0], size):
            cols = slice(col, col + size)
            if text.dtype == dtype:  # one fused kernel: bias + scale * (t @ x.T)
                yield rows, cols, torch.addmm(bias, text[rows], image[cols].t(), alpha=scale)
            else:  # bf16/fp16 matmul (fp32 accumulation inside), then scale and bias in fp32
                yield rows, cols, (text[rows] @ image[cols].t()).to(dtype).mul_(scale).add_(bias)


def _accumulate_matmul(out: torch.Tensor, left: torch.Tensor, right: torch.Tensor, alpha: float) -> None:
    """out += alpha * left @ right, in place; `out` is an fp32 view, `left`/`right` may be bf16."""
    if out.dtype == left.dtype:
        out.addmm_(left, right, alpha=alpha)
    else:
        out.add_(left @ right, alpha=alpha)


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for half-precision inputs, else the inputs' own dtype (fp32 or fp64)."""
    return torch.promote_types(dtype, torch.float32)


def _sum_dtype(device: torch.device) -> torch.dtype:
    """Where tile sums are added up: fp64 (hundreds of tiles) except on MPS, which has none."""
    return torch.float32 if device.type == "mps" else torch.float64


def _like(param: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return value.to(param.dtype).expand(param.shape).clone()


def _cast(grad: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    return None if grad is None else grad.to(like.dtype)


def _check_pairs(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    block_size: int | None,
) -> None:
    """Raise `InputError` for inputs that would otherwise fail (or silently broadcast) deep inside torch."""
    for name, embeds in (("image_embeds", image_embeds), ("text_embeds", text_embeds)):
        if not isinstance(embeds, torch.Tensor) or embeds.ndim != 2 or not embeds.is_floating_point():
            got = tuple(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__
            raise InputError(f"{name} must be a 2-d floating-point (batch, dim) tensor, got {got}.")
    if image_embeds.shape != text_embeds.shape:
        raise InputError(
            f"image_embeds {tuple(image_embeds.shape)} and text_embeds {tuple(text_embeds.shape)} must have the same "
            "(batch, dim) shape: row i of each is a positive pair."
        )
    if image_embeds.shape[0] == 0:
        raise InputError("the sigmoid loss needs at least one (image, text) pair, got an empty batch.")
    if image_embeds.dtype != text_embeds.dtype or image_embeds.device != text_embeds.device:
        raise InputError(
            f"image_embeds ({image_embeds.dtype}, {image_embeds.device}) and text_embeds ({text_embeds.dtype}, "
            f"{text_embeds.device}) must share dtype and device."
        )
    for name, param in (("logit_scale", logit_scale), ("logit_bias", logit_bias)):
        if not isinstance(param, torch.Tensor) or param.numel() != 1:
            got = tuple(param.shape) if isinstance(param, torch.Tensor) else type(param).__name__
            raise InputError(f"{name} must be a one-element tensor (the model's parameter), got {got}.")
    if block_size is not None and (isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1):
        raise InputError(f"block_size must be a positive int or None, got {block_size!r}.")
