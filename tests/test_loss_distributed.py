"""distributed_sigmoid_loss on gloo, spawned processes, against the single-process loss of the concatenated batch.

Identities checked (see siglip/loss_distributed.py), with L the global loss and L_r what rank r returns:
  mean_r L_r == L;
  rank r's image and text gradients == W * dL/d(its rows);
  rank r's logit_scale / logit_bias gradients == dL_r/d(scale, bias) (its own share, nothing exchanged), hence
  their mean over ranks (what DDP's gradient averaging computes) == dL/d(scale, bias).
"""

from __future__ import annotations

import datetime
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from siglip.errors import InputError
from siglip.loss import distributed_sigmoid_loss, sigmoid_loss

PER_RANK, DIM = 5, 8
CASES = [(method, block) for method in ("ring", "gather") for block in (None, 3)]
TOLERANCE = 1e-5


def global_batch(world: int):
    """The same global batch on every process: W * b normalised pairs, scale and bias."""
    generator = torch.Generator().manual_seed(world)
    image = F.normalize(torch.randn(world * PER_RANK, DIM, generator=generator), dim=-1)
    text = F.normalize(image + 0.7 * torch.randn(world * PER_RANK, DIM, generator=generator), dim=-1)
    return image, text, torch.tensor([1.7]), torch.tensor([-2.5])


def rank_loss_reference(image, text, scale, bias, rank: int) -> torch.Tensor:
    """L_r written out densely: rank r's images (columns) against all texts, divided by b."""
    columns = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    logits = text @ image[columns].t() * scale.exp() + bias
    labels = -torch.ones_like(logits)
    labels[columns] = 2 * torch.eye(PER_RANK) - 1
    return -F.logsigmoid(labels * logits).sum() / PER_RANK


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# One spawn of 4 processes serves all three world sizes (spawning costs seconds per process): W = 4 is the default
# group, W = 2 and W = 3 are subgroups whose members are not 0..W-1, so peers' global ranks are exercised too.
GROUPS = {2: [1, 3], 3: [0, 2, 3], 4: None}


def worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=4, timeout=datetime.timedelta(60)
    )
    try:
        groups = {world: None if members is None else dist.new_group(members) for world, members in GROUPS.items()}
        results = {}
        for world, group in groups.items():
            if GROUPS[world] is not None and rank not in GROUPS[world]:
                continue
            group_rank = dist.get_rank(group)
            image, text, scale, bias = global_batch(world)
            rows = slice(group_rank * PER_RANK, (group_rank + 1) * PER_RANK)
            for method, block in CASES:
                leaves = [x.clone().requires_grad_() for x in (image[rows], text[rows], scale, bias)]
                loss = distributed_sigmoid_loss(*leaves, group=group, method=method, block_size=block)
                loss.backward()
                results[world, group_rank, method, block] = (loss.detach(), *(x.grad for x in leaves))
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    """(world, group rank, method, block_size) -> that rank's (loss, image grad, text grad, scale grad, bias grad)."""
    out = tmp_path_factory.mktemp("distributed")
    mp.spawn(worker, args=(free_port(), str(out)), nprocs=4, join=True)
    merged = {}
    for rank in range(4):
        merged.update(torch.load(out / f"rank{rank}.pt"))
    return merged


def single_process(image, text, scale, bias):
    leaves = [x.clone().requires_grad_() for x in (image, text, scale, bias)]
    loss = sigmoid_loss(*leaves)
    return (loss, *torch.autograd.grad(loss, leaves))


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a - b).abs().max().item() <= TOLERANCE


@pytest.mark.parametrize("world", [2, 3, 4])
@pytest.mark.parametrize("method, block", CASES)
def test_matches_single_process_global_batch(results, world, method, block):
    image, text, scale, bias = global_batch(world)
    loss, grad_image, grad_text, grad_scale, grad_bias = single_process(image, text, scale, bias)
    per_rank = [results[world, rank, method, block] for rank in range(world)]
    # mean over ranks of the returned losses == the global loss
    assert close(torch.stack([r[0] for r in per_rank]).mean(), loss)
    for rank, (rank_loss, rank_image, rank_text, rank_scale, rank_bias) in enumerate(per_rank):
        rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        assert close(rank_image, world * grad_image[rows]), f"image grad, rank {rank}"
        assert close(rank_text, world * grad_text[rows]), f"text grad, rank {rank}"
        # each rank's scalar grads are those of its own L_r, computed here densely from the global batch
        scalars = [x.clone().requires_grad_() for x in (scale, bias)]
        reference = rank_loss_reference(image, text, *scalars, rank)
        assert close(rank_loss, reference)
        reference_grads = torch.autograd.grad(reference, scalars)
        assert close(rank_scale, reference_grads[0]) and close(rank_bias, reference_grads[1])
    # DDP averages parameter gradients: the average of the scalars' grads is the global loss's
    assert close(torch.stack([r[3] for r in per_rank]).mean(0), grad_scale)
    assert close(torch.stack([r[4] for r in per_rank]).mean(0), grad_bias)


def test_errors_without_process_group_or_with_bad_method():
    image = text = F.normalize(torch.randn(4, 8), dim=-1)
    scale, bias = torch.zeros(1), torch.zeros(1)
    with pytest.raises(InputError, match="method"):
        distributed_sigmoid_loss(image, text, scale, bias, method="allreduce")
    if not dist.is_initialized():
        with pytest.raises(InputError, match="init_process_group"):
            distributed_sigmoid_loss(image, text, scale, bias)
