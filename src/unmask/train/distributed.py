"""One process or many: the process group, model wrapping (DDP or FSDP2) and state-dict gathering.

Under `torchrun --nproc_per_node N unmask train ...` the environment carries RANK, WORLD_SIZE and
LOCAL_RANK; the trainer then joins a process group (NCCL on GPUs, gloo on CPUs) and wraps the model:

- "ddp": torch DistributedDataParallel, every rank holds the whole model and optimizer state;
- "fsdp": FSDP2 `fully_shard` on every transformer layer and on the root, so parameters, gradients
  and optimizer state are sharded across ranks; its checkpoints are written with
  torch.distributed.checkpoint (each rank writes its shards), beside a gathered full copy of the
  weights in the usual checkpoint format.

With no such environment everything here is a no-op on one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..errors import UnmaskError


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(preference: str, local_rank: int) -> torch.device:
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    if preference.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UnmaskError("system.device is 'cuda' but no CUDA device is available")
        device = torch.device("cuda", local_rank) if preference == "cuda" else torch.device(preference)
        torch.cuda.set_device(device)
        return device
    return torch.device(preference)


def init_distributed(device_preference: str) -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1; pick this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_preference, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
    return DistInfo(rank, world_size, local_rank, device)


def shutdown(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, parallel: str, info: DistInfo) -> nn.Module:
    """The module the training step calls: the model itself, DDP(model), or the model fully_shard-ed."""
    if not info.distributed:
        return model
    if parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[info.device] if info.device.type == "cuda" else None)
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:  # torch < 2.6 keeps FSDP2 under its original name
        from torch.distributed._composable.fsdp import fully_shard

    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    return model


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In place across ranks (sum or max); unchanged on one process."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    if dist.is_initialized() and dist.get_world_size() > 1:
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]
    return obj


def full_model_state(model: nn.Module, parallel: str, info: DistInfo) -> dict[str, torch.Tensor]:
    """Every weight as a full CPU tensor on rank 0 (collective under FSDP; {} on other ranks)."""
    if info.distributed and parallel == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not info.is_main:
        return {}
    raw = model.module if hasattr(model, "module") else model
    return {k: v.detach().cpu() for k, v in raw.state_dict().items()}


def sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """{"model", "optim"} sharded state dicts for torch.distributed.checkpoint (FSDP)."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    return {"model": model_sd, "optim": optim_sd}


def load_sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer, path: str) -> None:
    """Load model and optimizer shards written by `save_sharded_state` (resharding if the world changed)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    state = sharded_state(model, optimizer)
    dcp.load(state, checkpoint_id=path)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


def save_sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer, path: str) -> None:
    import torch.distributed.checkpoint as dcp

    dcp.save(sharded_state(model, optimizer), checkpoint_id=path)
