"""Process-group setup and model wrapping: plain, DDP or FSDP2, chosen by `torchrun` and `--parallel`.

Under `torchrun` (WORLD_SIZE > 1) the process group is initialised from the environment: NCCL on CUDA, gloo on
CPU. `--parallel ddp` replicates the model and averages gradients; `--parallel fsdp` shards parameters,
gradients and optimizer state with `torch.distributed.fsdp.fully_shard` (one unit per encoder layer, one per
tower, one at the root), for models that do not fit one device. Checkpoints always hold full tensors, gathered
through `torch.distributed.checkpoint.state_dict`, so any world size can resume any checkpoint.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Runtime:
    """Where this process runs: rank, world size, device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str = "auto") -> Runtime:
    """Initialise torch.distributed when launched by torchrun; pick the device (cuda:LOCAL_RANK or cpu)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda:
        resolved = torch.device("cuda", local_rank) if device in ("auto", "cuda") else torch.device(device)
        torch.cuda.set_device(resolved)
    else:
        resolved = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return Runtime(rank, world_size, local_rank, resolved)


def teardown(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(runtime: Runtime) -> None:
    if runtime.distributed:
        dist.barrier()


def all_gather_objects(value: Any, runtime: Runtime) -> list[Any]:
    """Every rank's `value`, in rank order (just `[value]` outside torchrun)."""
    if not runtime.distributed:
        return [value]
    gathered: list[Any] = [None] * runtime.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def mean_across_ranks(value: float, runtime: Runtime) -> float:
    if not runtime.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=runtime.device)
    dist.all_reduce(tensor)
    return tensor.item() / runtime.world_size


def wrap(module: nn.Module, runtime: Runtime, parallel: str, mixed_bf16: bool = False) -> nn.Module:
    """Wrap `module` (the training forward, holding the SiglipModel as `.model`) for data parallelism."""
    if not runtime.distributed:
        return module
    if parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids)
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from ..modeling.layers import SiglipEncoderLayer

    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if mixed_bf16 else None
    options = {"mp_policy": policy} if policy is not None else {}
    model = module.model
    for tower in (model.text_model, model.vision_model):
        for layer in tower.modules():
            if isinstance(layer, SiglipEncoderLayer):
                fully_shard(layer, **options)
        fully_shard(tower, **options)
    fully_shard(module, **options)
    return module


def full_state_dicts(
    wrapped: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer, parallel: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Full (unsharded, CPU) model and optimizer state dicts, keyed by the SiglipModel's parameter names."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = get_model_state_dict(model, options=options)
    optimizer_state = get_optimizer_state_dict(wrapped, optimizer, options=options)
    return model_state, optimizer_state


def load_full_state_dicts(
    wrapped: nn.Module,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
) -> None:
    """Inverse of `full_state_dicts`: scatter full tensors into the (possibly sharded) model and optimizer."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, model_state, options=options)
    set_optimizer_state_dict(wrapped, optimizer, optimizer_state, options=options)
