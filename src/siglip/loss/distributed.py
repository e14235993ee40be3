"""The sigmoid loss over a data-parallel group: every rank's texts serve as negatives for every rank's images.

Rank r holds b pairs (x_r, t_r) of a global batch of B = W * b. Per rank we return
    L_r = 1/b * sum_{j in r} sum_{i in all ranks} softplus(-l_ij z_ij)
i.e. rank r's images (columns of logits_per_text) against all B texts, its own positives included. Since every
column belongs to exactly one rank, the B x B sum splits across ranks with no overlap:
    sum_r L_r = 1/b * sum_ij softplus(-l_ij z_ij) = W * L        (L: the single-process loss of the global batch)
    mean_r L_r = L                                               (what DDP, which averages, needs)
Gradients (what `backward` leaves on rank r):
  - images x_r appear only in L_r, so dL_r/dx_r = W * dL/dx_r;
  - texts t_r appear in every L_q; their gradient pieces are sent back to rank r (ring: by the same point-to-point
    exchange that brought the texts, reversed; gather: by the all-gather's adjoint, a reduce-scatter), so rank r ends
    with sum_q dL_q/dt_r = W * dL/dt_r;
  - logit_scale and logit_bias are replicated parameters: rank r gets only its own dL_r/d(scale, bias), nothing is
    exchanged for them, and the mean over ranks is sum_r dL_r/dscale / W = dL/dscale (likewise for the bias).
So after DDP averages parameter gradients, every parameter - tower weights through W * dL/d(features), and the two
scalars directly - carries exactly the gradient of the global loss L.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.autograd.function import once_differentiable

from ..errors import InputError
from .sigmoid import _check_pairs, pair_loss_sum


def distributed_sigmoid_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    group: dist.ProcessGroup | None = None,
    method: str = "ring",
    block_size: int | None = None,
) -> torch.Tensor:
    """This rank's share L_r of the global-batch sigmoid loss (see the module docstring for the identities).

    Args:
        image_embeds, text_embeds: this rank's (b, D) L2-normalised pairs; b and D must be equal on every rank.
        logit_scale, logit_bias: the model's (replicated) one-element parameters; exp is applied to the scale.
        group: the process group (default: the world).
        method: "ring" - texts travel around the ring, to both neighbours at once (ceil((W-1)/2) exchange steps,
            the paper's bidirectional collective permutes), each chunk's loss added as it arrives; "gather" - one
            all-gather of the texts, then the loss of the local images against all of them.
        block_size: as in `sigmoid_loss`: None for dense b x b (ring) or B x b (gather) logits, N for N x N tiles.

    Every rank must call this with the same method/block_size and must run backward if any rank does (the backward
    pass communicates too).
    """
    _check_pairs(image_embeds, text_embeds, logit_scale, logit_bias, block_size)
    if method not in ("ring", "gather"):
        raise InputError(f'method must be "ring" or "gather", got {method!r}.')
    if not dist.is_available() or not dist.is_initialized():
        raise InputError("distributed_sigmoid_loss needs torch.distributed.init_process_group() to have been called.")
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    batch = image_embeds.shape[0]
    if world == 1:
        return pair_loss_sum(text_embeds, image_embeds, logit_scale, logit_bias, 0, block_size) / batch
    if method == "gather":
        all_text = _AllGather.apply(text_embeds, group)
        return pair_loss_sum(all_text, image_embeds, logit_scale, logit_bias, rank * batch, block_size) / batch

    def loss_against(text: torch.Tensor, positive_offset: int | None) -> torch.Tensor:
        return pair_loss_sum(text, image_embeds, logit_scale, logit_bias, positive_offset, block_size)

    left, right = (_global_rank(group, (rank + step) % world) for step in (-1, 1))
    total = loss_against(text_embeds, 0)  # own texts: the only chunk with positives
    # After k bidirectional steps we hold the texts of ranks r-k (came from the left) and r+k (from the right);
    # (W-1)//2 steps cover all but, for even W, rank r+W/2, which one last one-way step brings from the left.
    going_left = going_right = text_embeds
    for _ in range((world - 1) // 2):
        going_left, going_right = _Exchange.apply(group, (left, right), (right, left), going_left, going_right)
        total = total + loss_against(going_left, None) + loss_against(going_right, None)
    if (world - 1) % 2:
        (going_right,) = _Exchange.apply(group, (right,), (left,), going_right)
        total = total + loss_against(going_right, None)
    return total / batch


class _Exchange(torch.autograd.Function):
    """Send tensor k to peer `send_to[k]` and receive output k from `receive_from[k]`, all at once.

    The adjoint of a permutation is its inverse: backward sends the gradient of output k back to `receive_from[k]`
    and receives the gradient of input k from `send_to[k]`, with the same peer-to-peer machinery.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        group: dist.ProcessGroup | None,
        send_to: tuple[int, ...],
        receive_from: tuple[int, ...],
        *tensors: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        ctx.group, ctx.send_to, ctx.receive_from = group, send_to, receive_from
        received = _permute(group, send_to, receive_from, tensors)
        ctx.meta = [(t.shape, t.dtype, t.device) for t in received]
        return received

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, *grads: torch.Tensor | None) -> tuple:
        # An output nobody used has no gradient; send zeros anyway so that the peer's matching receive completes.
        grads = tuple(
            torch.zeros(shape, dtype=dtype, device=device) if g is None else g
            for g, (shape, dtype, device) in zip(grads, ctx.meta)
        )
        return (None, None, None, *_permute(ctx.group, ctx.receive_from, ctx.send_to, grads))


def _permute(
    group: dist.ProcessGroup | None, send_to: tuple[int, ...], receive_from: tuple[int, ...], tensors: tuple
) -> tuple[torch.Tensor, ...]:
    """One batched round of isend/irecv; every received tensor has the shape and dtype of the one sent in its slot."""
    received = [torch.empty_like(t, memory_format=torch.contiguous_format) for t in tensors]
    ops = [dist.P2POp(dist.isend, t.contiguous(), peer, group) for t, peer in zip(tensors, send_to)]
    ops += [dist.P2POp(dist.irecv, buf, peer, group) for buf, peer in zip(received, receive_from)]
    for request in dist.batch_isend_irecv(ops):
        request.wait()
    return tuple(received)


class _AllGather(torch.autograd.Function):
    """Concatenate every rank's (b, D) tensor in rank order; backward hands rank r the sum over ranks of the
    gradients of its rows (a reduce-scatter, the all-gather's adjoint)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, tensor: torch.Tensor, group: dist.ProcessGroup | None):
        ctx.group = group
        parts = [
            torch.empty_like(tensor, memory_format=torch.contiguous_format) for _ in range(dist.get_world_size(group))
        ]
        dist.all_gather(parts, tensor.contiguous(), group=group)
        return torch.cat(parts)

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple:
        world, rank = dist.get_world_size(ctx.group), dist.get_rank(ctx.group)
        grad = grad.contiguous()
        if dist.get_backend(ctx.group) == "nccl":
            mine = torch.empty_like(grad[: grad.shape[0] // world])
            dist.reduce_scatter_tensor(mine, grad, group=ctx.group)
            return mine, None
        grad = grad.clone()  # not ours to reduce in place
        dist.all_reduce(grad, group=ctx.group)  # gloo has no reduce-scatter: reduce everything, keep our rows
        return grad.chunk(world)[rank].clone(), None


def _global_rank(group: dist.ProcessGroup | None, group_rank: int) -> int:
    """P2P ops address peers by global rank, whatever the group."""
    return group_rank if group is None else dist.get_global_rank(group, group_rank)
