"""Check the distributed top-k over a sharded bank against a search of the whole bank.

Run by tests/test_distributed.py under torchrun; each rank writes
``rank<N>.ok`` into the folder given as the first argument when its
neighbours equal the single-bank search.
"""

import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from in2r_graph.search import torch_search
from in2r_graph.training import distributed as dist_utils


def main() -> None:
    out = Path(sys.argv[1])
    dist_utils.init_distributed("cpu")
    rank, world = dist_utils.rank(), dist_utils.world_size()
    generator = torch.Generator().manual_seed(0)
    dim, bank_size, k = 16, 300, 6
    keys = F.normalize(torch.randn(bank_size, dim, generator=generator), dim=-1)
    partners = F.normalize(torch.randn(bank_size, dim, generator=generator), dim=-1)
    ids = torch.arange(bank_size) % 250  # some pairs appear twice, as after a wrap-around
    queries = F.normalize(torch.randn(10 * world, dim, generator=generator), dim=-1)
    query_ids = torch.arange(10 * world) * 7 % 250

    mine = slice(rank * 10, rank * 10 + 10 - rank)  # ranks hold different numbers of queries
    shard = torch.arange(rank, bank_size, world)
    found = dist_utils.sharded_neighbourhood(queries[mine], query_ids[mine], keys[shard], partners[shard], ids[shard], k)

    sims, positions = torch_search(queries[mine], keys, k, query_ids=query_ids[mine], key_ids=ids)
    assert torch.allclose(found.sims, sims, atol=1e-6), (found.sims, sims)
    assert torch.equal(found.partners, partners[positions])
    assert torch.equal(found.keys, keys[positions])
    (out / f"rank{rank}.ok").write_text("ok")
    dist_utils.shutdown()
    # NOTE: about one run in ten (torch 2.13, CPU) aborted at interpreter exit after both files were
    # written. The cause is not known, so the script skips the teardown, which this check does not cover.
    os._exit(0)


if __name__ == "__main__":
    main()
