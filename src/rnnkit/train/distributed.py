"""Training on several processes with no change to the user's program.

`setup()` looks for a process group: one already initialised by the caller, or the environment
variables that `torchrun` sets (WORLD_SIZE > 1, RANK, LOCAL_RANK, MASTER_ADDR/PORT), in which case
it initialises one itself (gloo on CPU, NCCL on GPU). That group then serves every later `fit` and
`evaluate` of the program and is destroyed when the program exits: initialising a second group on
the same torchrun store after destroying the first can deadlock, so it is done once. Under a
process group `wrap()` puts the model's objective in DistributedDataParallel, so gradients are
averaged across processes at every backward. Data sharding lives in `rnnkit.train.batches`;
metric reduction in `rnnkit.train.metrics` (torchmetrics syncs on compute); here are the scalar
reductions the loop needs. Only the process with rank 0 writes files.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from rnnkit.data.batch import Batch
from rnnkit.train.tbptt import State, Stream, map_state, stream_loss


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank among `world` processes and its device."""

    rank: int  # 0 .. world - 1
    world: int  # number of processes (1 without torch.distributed)
    device: torch.device  # where the model and batches live

    @property
    def is_main(self) -> bool:
        """The process that writes files and shows the progress bar."""
        return self.rank == 0


def setup(device: str | None) -> Context:
    """Join (or start, under torchrun) the process group and pick this process's device."""
    wanted_cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if wanted_cuda and local_rank >= torch.cuda.device_count():
        raise ValueError(
            f"this machine has {torch.cuda.device_count()} CUDA device(s) for "
            f"{os.environ.get('LOCAL_WORLD_SIZE', local_rank + 1)} processes (local rank "
            f"{local_rank} has none); start one process per device "
            f"(torchrun --nproc_per_node={torch.cuda.device_count()}) or train on the CPU "
            "(device='cpu', --device cpu)"
        )
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group(backend="nccl" if wanted_cuda else "gloo")
        atexit.register(_destroy_group)  # kept for later fit/evaluate calls
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if wanted_cuda and world > 1:
        torch.cuda.set_device(local_rank)
        chosen = torch.device("cuda", local_rank)
    else:
        chosen = torch.device(device or ("cuda" if wanted_cuda else "cpu"))
    try:
        torch.empty(0, device=chosen)
    except (RuntimeError, AssertionError) as error:  # torch says "not compiled with CUDA"
        raise ValueError(
            f"device {str(chosen)!r} is not available here ({error}); choose one this machine "
            "has (--device cpu, or leave --device out for CUDA where torch finds it)"
        ) from None
    return Context(rank=rank, world=world, device=chosen)


def _destroy_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class Objective(nn.Module):
    """The model's training loss as a forward(): one forward per backward, as DDP requires.

    forward(batch) -> (model.loss(batch), None); forward(stream_piece, state) -> (loss, state)
    through `rnnkit.train.tbptt.stream_loss`.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, data: Batch | Stream, state: State = None) -> tuple[torch.Tensor, State]:
        if isinstance(data, Stream):
            return stream_loss(self.model, data, state)
        return self.model.loss(data), None


def wrap(model: nn.Module, context: Context) -> nn.Module:
    """The objective of `model`, inside DistributedDataParallel when there are several processes.

    DDP broadcasts rank 0's weights at construction, so every process starts equal.
    """
    objective = Objective(model)
    if context.world == 1:
        return objective
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return DistributedDataParallel(objective, device_ids=device_ids)


def mean_over_ranks(value: float, context: Context) -> float:
    """The mean of a Python number over all processes (the number itself on one process)."""
    if context.world == 1:
        return value
    total = torch.tensor([value], dtype=torch.float64, device=context.device)
    dist.all_reduce(total)
    return float(total.item()) / context.world


def any_over_ranks(flag: bool, context: Context) -> bool:
    """True when `flag` is True on any process."""
    if context.world == 1:
        return flag
    value = torch.tensor([int(flag)], device=context.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def gather_rows(state: State, context: Context) -> State:
    """Every process's rows of a TBPTT state, concatenated in rank order (batch on dim -2)."""
    if context.world == 1:
        return state

    def gather(tensor: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(tensor) for _ in range(context.world)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=-2)

    return map_state(gather, state)
