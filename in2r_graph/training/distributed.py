"""torch.distributed helpers for runs launched with ``torchrun``.

Every function works without a process group too (a single process is a
world of size 1), so the trainer calls them unconditionally.
"""

from __future__ import annotations

import datetime
import logging
import os

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

logger = logging.getLogger(__name__)


def launched_by_torchrun() -> bool:
    """Return whether the environment carries torchrun's rendezvous variables."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init_distributed(device_name: str = "auto", timeout_minutes: int = 30) -> torch.device:
    """Join the process group that torchrun set up and return this rank's device.

    The backend is NCCL when CUDA is available and gloo otherwise. Without
    torchrun's variables nothing is initialised and the device follows
    ``device_name`` (``auto``: CUDA when available).
    """
    if not launched_by_torchrun() or dist.is_initialized():
        return _single_device(device_name)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda") or device_name.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    backend = "nccl" if use_cuda else "gloo"
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    logger.info("rank %d of %d joined the process group (backend %s, device %s)", rank(), world_size(), backend, device)
    return device


def _single_device(device_name: str) -> torch.device:
    if device_name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device_name)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shard(indices: np.ndarray) -> np.ndarray:
    """Return this rank's contiguous slice of a global batch (the whole batch on one process)."""
    if not is_distributed():
        return indices
    return np.array_split(indices, world_size())[rank()]


def all_gather_rows(tensor: Tensor) -> Tensor:
    """Concatenate a (B_r, ...) tensor from every rank in rank order; ranks may differ in B_r.

    Shapes:
        tensor: (B_r, ...) -> (sum of B_r, ...).
    """
    if not is_distributed():
        return tensor
    count = torch.tensor([tensor.size(0)], device=tensor.device)
    counts = [torch.zeros_like(count) for _ in range(world_size())]
    dist.all_gather(counts, count)
    largest = int(max(int(c) for c in counts))
    padded = torch.zeros((largest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.size(0)] = tensor
    gathered = [torch.zeros_like(padded) for _ in range(world_size())]
    dist.all_gather(gathered, padded)
    return torch.cat([part[: int(c)] for part, c in zip(gathered, counts)])


def broadcast_array(array: np.ndarray | None, device: torch.device) -> np.ndarray:
    """Send rank 0's float64 array to every rank (other ranks may pass ``None``)."""
    if not is_distributed():
        return array
    size = torch.tensor([0 if array is None else array.size], device=device)
    dist.broadcast(size, src=0)
    buffer = torch.zeros(int(size), dtype=torch.float64, device=device)
    if is_main_process():
        buffer.copy_(torch.from_numpy(np.asarray(array, dtype=np.float64)))
    dist.broadcast(buffer, src=0)
    return buffer.cpu().numpy()


def all_reduce_sum(array: np.ndarray, device: torch.device) -> np.ndarray:
    """Sum a float64 array over ranks (used to assemble per-sample losses computed in shards)."""
    if not is_distributed():
        return array
    buffer = torch.from_numpy(np.asarray(array, dtype=np.float64)).to(device)
    dist.all_reduce(buffer)
    return buffer.cpu().numpy()


def all_reduce_sum_tensor(tensor: Tensor, device: torch.device) -> Tensor:
    """Sum a tensor over ranks; the reduction runs on ``device`` and the result keeps the input's device and dtype."""
    if not is_distributed():
        return tensor
    buffer = tensor.to(device=device, dtype=torch.float32)
    dist.all_reduce(buffer)
    return buffer.to(device=tensor.device, dtype=tensor.dtype)


def all_ranks_true(flag: bool, device: torch.device) -> bool:
    """Return whether ``flag`` holds on every rank, so that all ranks take the same branch."""
    if not is_distributed():
        return flag
    value = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def shutdown() -> None:
    """Leave the process group."""
    if is_distributed():
        dist.destroy_process_group()


@torch.no_grad()
def sharded_neighbourhood(
    queries: Tensor,
    query_ids: Tensor,
    bank_keys: Tensor,
    bank_partners: Tensor,
    bank_ids: Tensor,
    k: int,
    backend: str = "torch",
):
    """Search a bank whose entries are spread over the ranks (distributed top-k).

    Every rank sends its queries to all ranks, searches its own shard for all
    of them, and the per-shard candidates are gathered and merged. Returns
    this rank's :class:`~in2r_graph.rectify.Neighbourhood`, or ``None`` on
    every rank when some query of any rank has fewer than ``k`` usable
    neighbours in the whole bank (the caller skips rectification then).

    Shapes:
        queries (b, D), query_ids (b,); bank_* (Q_r, D) and (Q_r,) -> sims (b, k),
        partners and keys (b, k, D).
    """
    from ..rectify import Neighbourhood
    from ..search.knn import knn_search

    counts = all_gather_rows(torch.tensor([queries.size(0)], device=queries.device))
    all_queries = all_gather_rows(queries)  # (B, D), the queries of every rank
    all_ids = all_gather_rows(query_ids)
    total, dim = all_queries.shape

    sims = torch.full((total, k), float("-inf"), device=queries.device, dtype=queries.dtype)
    partners = torch.zeros(total, k, dim, device=queries.device, dtype=queries.dtype)
    keys = torch.zeros_like(partners)
    # A shard may hold copies of a query's own pair: ask for extra candidates and mask them.
    copies = int(torch.bincount(bank_ids.clamp(min=0)).max()) if bank_ids.numel() else 0
    wanted = min(k + copies, bank_keys.size(0))
    if wanted > 0:
        local_sims, positions = knn_search(all_queries, bank_keys, wanted, backend=backend)
        own = bank_ids[positions] == all_ids.view(-1, 1)
        local_sims = local_sims.masked_fill(own, float("-inf"))
        local_sims, order = local_sims.topk(min(k, wanted), dim=1)
        positions = positions.gather(1, order)
        found = local_sims.size(1)
        sims[:, :found] = local_sims
        partners[:, :found] = bank_partners[positions]
        keys[:, :found] = bank_keys[positions]

    # (world * B, k, ...) -> (B, world * k, ...) candidates per query, then the global top-k.
    world = world_size()
    gathered_sims = all_gather_rows(sims).view(world, total, k).permute(1, 0, 2).reshape(total, world * k)
    gathered_partners = all_gather_rows(partners).view(world, total, k, dim).permute(1, 0, 2, 3).reshape(total, world * k, dim)
    gathered_keys = all_gather_rows(keys).view(world, total, k, dim).permute(1, 0, 2, 3).reshape(total, world * k, dim)
    best_sims, best = gathered_sims.topk(k, dim=1)
    if not bool(torch.isfinite(best_sims).all()):
        return None
    start = int(counts[: rank()].sum())
    rows = slice(start, start + queries.size(0))
    index = best[rows].unsqueeze(-1).expand(-1, -1, dim)
    return Neighbourhood(
        sims=best_sims[rows],
        positions=best[rows],
        partners=gathered_partners[rows].gather(1, index),
        keys=gathered_keys[rows].gather(1, index),
    )
