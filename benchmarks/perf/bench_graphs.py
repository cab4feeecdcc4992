"""Graph building: B = 128 neighbourhoods of k = 10 into one PyG batch, against one training step.

Compares the vectorised builder (``build_neighbourhood_batch``, index
arithmetic on one edge template) with the generic path that builds one
``Data`` object per neighbourhood and joins them with ``Batch.from_data_list``,
for each topology. The in2r training step of ``bench_step.py`` (default
encoders, ``auto`` search) is timed in the same process; a step builds two
batches, one per rectified modality.

Target: the graph building of one step <= 5 % of that step.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch_geometric.data import Batch, Data

import common
import workloads
from in2r_graph.graphs import build_neighbourhood_batch

BATCH = 128
K = 10
DIM = 256


def local_edges(template: Batch) -> list[torch.Tensor]:
    """Return each graph's edges in local node ids (prepared once, outside the timing)."""
    owner = template.batch[template.edge_index[0]]
    return [
        template.edge_index[:, owner == index] - index * template.nodes_per_graph for index in range(template.num_graphs)
    ]


def generic_batch(
    partners: torch.Tensor, queries: torch.Tensor, scores: torch.Tensor, edges: list[torch.Tensor], query_node: bool
) -> Batch:
    """Build the same graphs one ``Data`` object at a time and join them with ``Batch.from_data_list``."""
    graphs = []
    for index in range(partners.size(0)):
        x = torch.cat([queries[index : index + 1], partners[index]]) if query_node else partners[index]
        score = torch.cat([scores.new_zeros(1), scores[index]]) if query_node else scores[index]
        graphs.append(Data(x=x, edge_index=edges[index], score=score))
    return Batch.from_data_list(graphs)


def in2r_step_seconds(args, mode: str) -> tuple[float, str]:
    """Time the in2r step of the default setup with ``auto`` search; return (seconds, data description)."""
    dataset = workloads.pick_dataset(args.flickr8k, common.pick(mode, 250, 6000, 6000))
    steps = common.pick(mode, 2, 8, 12)
    overrides = workloads.SETUPS["global+minilm"] + ["rectify.search_backend=auto"]
    if mode == "tiny":
        overrides.append("data.max_train_pairs=1000")
    try:
        with tempfile.TemporaryDirectory(prefix="in2r-perf-runs-") as run_dir:
            trainer = workloads.build_trainer(workloads.make_config(dataset, "in2r", overrides), Path(run_dir))
            workloads.fill_bank(trainer)
            labeled, prob = workloads.fixed_split(trainer.train_data.num_pairs, steps * trainer.config.train.batch_size)
            seconds = common.time_once(lambda: trainer._train_split(1, 0, labeled, prob)) / steps
            seconds = min(seconds, common.time_once(lambda: trainer._train_split(1, 0, labeled, prob)) / steps)
    finally:
        dataset.cleanup()
    return seconds, dataset.description


def main(argv: list[str] | None = None) -> dict:
    args = common.parse_args(__doc__.splitlines()[0], argv)
    common.set_threads()
    repeats = common.pick(args.mode, 2, 5, 10)
    generator = torch.Generator().manual_seed(0)
    partners = F.normalize(torch.randn(BATCH, K, DIM, generator=generator), dim=-1)
    keys = F.normalize(torch.randn(BATCH, K, DIM, generator=generator), dim=-1)
    queries = F.normalize(torch.randn(BATCH, DIM, generator=generator), dim=-1)
    scores = torch.rand(BATCH, K, generator=generator)

    step_seconds, data = in2r_step_seconds(args, args.mode)
    rows = []
    for topology, query_node in (("complete", False), ("knn", False), ("star", True)):
        options = dict(keys=keys, query=queries, scores=scores, query_node=query_node, topology=topology)
        edges = local_edges(build_neighbourhood_batch(partners, **options))
        times = common.time_side_by_side(
            {
                "vectorised": lambda: build_neighbourhood_batch(partners, **options),
                "from_data_list": lambda: generic_batch(partners, queries, scores, edges, query_node),
            },
            repeats=repeats,
        )
        vectorised_ms = times["vectorised"]["ms"]
        rows.append(
            {
                "topology": topology,
                "query_node": query_node,
                "vectorised_ms": vectorised_ms,
                "from_data_list_ms": times["from_data_list"]["ms"],
                "speedup": times["from_data_list"]["ms"] / vectorised_ms,
                "in2r_step_ms": 1e3 * step_seconds,
                "two_builds_share_of_step": 2 * vectorised_ms / (1e3 * step_seconds),
            }
        )
    print(common.format_table(rows))
    default = rows[0]
    targets = [
        common.target(
            "graph building (2 complete-graph batches) / in2r step",
            default["two_builds_share_of_step"],
            0.05,
            at_least=False,
            unit="",
        )
    ]
    print()
    common.print_targets(targets)
    path = common.write_result(args.out, "graphs", args.mode, rows, targets, data=data, batch=BATCH, k=K, dim=DIM)
    print(f"wrote {path}")
    return {"path": str(path), "targets": targets}


if __name__ == "__main__":
    main()
