"""The processes of one training run, as the loop sees them: one (the ordinary run) or a torch.distributed group
(a DDP run launched by torchrun, trainer/distributed.py).

Sharding follows the single-process run exactly: every rank draws the same epoch batches (trainer/data.py seeds
them with the run's seed and the epoch, length buckets included) at the global batch size, and each rank takes
its contiguous slice of every global batch, as DistributedSampler would of a dataset. Each slice's loss is
weighted by its share of the global batch (`weight`), so that DDP's gradient average equals the gradient of the
global batch's mean loss even when the last batch does not divide evenly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Group:
    rank: int = 0
    world: int = 1
    device: str = "cpu"  # where collectives' tensors live (NCCL reduces GPU tensors only)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def shard(self, batch: list[int]) -> tuple[list[int], bool]:
        """This rank's slice of a global batch, and whether it is one. A rank left without a text (a batch
        smaller than the world) still runs one, counted for nothing: DDP needs every rank's backward pass to
        reduce the gradients."""
        size, extra = divmod(len(batch), self.world)
        start = self.rank * size + min(self.rank, extra)
        part = batch[start : start + size + (self.rank < extra)]
        if not part:
            return batch[:1], False
        return part, True

    def flags(self, *flags: bool) -> list[bool]:
        """Each flag: whether any rank raised it (a stop request, a deadline), so every rank acts alike."""
        if not self.distributed:
            return list(flags)
        value = torch.tensor([1.0 if f else 0.0 for f in flags], device=self.device)
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
        return [bool(v > 0) for v in value.cpu().tolist()]

    def sum(self, values: list[float]) -> list[float]:
        if not self.distributed:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(tensor)
        return tensor.cpu().tolist()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (rank 0 decides: validation, the budget's re-plan)."""
        if not self.distributed:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out


SINGLE = Group()


def wrap_ddp(model: nn.Module, device: torch.device) -> Any:
    from torch.nn.parallel import DistributedDataParallel

    # find_unused_parameters: the encoder's pooler (and a task head whose slice has no label) get no gradient
    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
    )
