"""torch.distributed in one place: rank, world size, sharding of work items, gathers and sums.

``torchrun --nproc-per-node K -m lsdd distill|bench|sample ...`` starts K processes; ``init_from_env`` joins
them (gloo on CPU, NCCL on CUDA). Work is split into items (batches of samples, of teacher trajectories,
chunks of a distillation batch) whose random streams are seeded per item, and item i runs on rank i mod K:
results do not depend on K. Without torchrun every function here is the single-process identity.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as tdist


def is_distributed() -> bool:
    return tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1


def rank() -> int:
    return tdist.get_rank() if is_distributed() else 0


def world() -> int:
    return tdist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def launched() -> bool:
    """True when started by torchrun (or another launcher) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str = "cpu") -> torch.device | None:
    """Join the process group torchrun describes in the environment; returns this rank's device for
    ``device`` (cuda -> cuda:LOCAL_RANK). No-op (returns None) without a multi-process launch."""
    if not launched():
        return None
    cuda = str(device).startswith("cuda")
    if not tdist.is_initialized():
        tdist.init_process_group(backend="nccl" if cuda else "gloo")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def shutdown() -> None:
    if tdist.is_available() and tdist.is_initialized():
        tdist.barrier()
        tdist.destroy_process_group()


def my_items(n: int) -> list[int]:
    """The work items 0..n-1 this rank runs: i with i mod world == rank."""
    return list(range(rank(), n, world()))


def _collective_device() -> torch.device:
    if is_distributed() and tdist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_items(parts: dict[int, object], n: int) -> dict[int, object]:
    """Every rank's {item: result} merged on every rank (results must be picklable; tensors go to CPU)."""
    if not is_distributed():
        return parts
    out: list[dict] = [None] * world()  # type: ignore[list-item]
    tdist.all_gather_object(out, parts)
    merged = {k: v for d in out for k, v in d.items()}
    missing = [i for i in range(n) if i not in merged]
    if missing:
        raise RuntimeError(f"distributed gather lost items {missing[:5]}")
    return merged


def _all_reduce(t: torch.Tensor, op) -> torch.Tensor:
    if not is_distributed():
        return t
    buf = t.detach().to(_collective_device(), copy=True)
    tdist.all_reduce(buf, op=op)
    return buf.to(t.device)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over ranks (a new tensor on t's device; ``t`` itself is unchanged)."""
    return _all_reduce(t, tdist.ReduceOp.SUM if tdist.is_available() else None)


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum of ``t`` over ranks."""
    return _all_reduce(t, tdist.ReduceOp.MAX if tdist.is_available() else None)


def sum_grads(params) -> None:
    """Sum the gradients of ``params`` over ranks, in place (a missing grad counts as zero)."""
    if not is_distributed():
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        p.grad.copy_(all_reduce_sum(p.grad))


def max_int(v: int) -> int:
    return int(all_reduce_max(torch.tensor([v], dtype=torch.long))[0])


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


__all__ = ["is_distributed", "rank", "world", "is_main", "launched", "init_from_env", "shutdown", "my_items",
           "gather_items", "all_reduce_sum", "sum_grads", "max_int", "all_reduce_max", "broadcast_object"]
