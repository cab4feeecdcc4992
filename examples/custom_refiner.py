"""Register a refiner of your own and train IN2R with it.

The refiner below is defined outside the package: a subclass of ``Refiner``
that only builds its message-passing operator (PyG's ``GraphConv``), under a
name the configuration can refer to. The base class supplies the layer loop,
residual, LayerNorm, dropout, readout and L2 normalisation. The script then
trains IN2R on the bundled dataset with ``rectify.refiner`` set to that name
and prints the test metrics.

    python examples/custom_refiner.py --epochs 3 --max-train-pairs 400
"""

import argparse
import logging
import random

import numpy as np
import torch
from torch import nn
from torch_geometric.nn import GraphConv

from in2r_graph import Refiner, register_refiner
from in2r_graph.config import load_config
from in2r_graph.evaluation.retrieval import format_metrics_table
from in2r_graph.training.session import run_training


@register_refiner("graphconv-example")
class GraphConvRefiner(Refiner):
    """Weisfeiler-Leman graph convolution (GraphConv) with mean aggregation."""

    # GraphConv scales each incoming message by the edge weight when one is given.
    supports_edge_weight = True

    def build_layer(self) -> nn.Module:
        return GraphConv(self.hidden_dim, self.hidden_dim, aggr="mean")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="training epochs, one of them warm-up (default: 3)")
    parser.add_argument("--max-train-pairs", type=int, default=400, help="training pairs kept (default: 400)")
    parser.add_argument("--embed-dim", type=int, default=64, help="joint embedding size (default: 64)")
    parser.add_argument("--k", type=int, default=5, help="neighbours per suspected-noisy query (default: 5)")
    parser.add_argument(
        "--edge-weights", default="none", choices=("none", "partner", "query"), help="edge weights of the graphs"
    )
    parser.add_argument("--out-dir", default="runs", help="folder that receives the run directory (default: runs)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")

    config = load_config(
        overrides=[
            "rectify.refiner=graphconv-example",
            f"rectify.k={args.k}",
            f"rectify.edge_weights={args.edge_weights}",
            f"train.epochs={args.epochs}",
            "train.warmup_epochs=1",
            "train.batch_size=32",
            f"train.seed={args.seed}",
            f"train.out_dir={args.out_dir}",
            "train.progress=false",
            f"data.max_train_pairs={args.max_train_pairs}",
            f"model.embed_dim={args.embed_dim}",
        ]
    )
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    summary = run_training(config)
    print(format_metrics_table(summary["test"]))
    print(f"refiner {config.rectify.refiner}: best dev rSum {summary['best_dev_rsum']:.1f}, run directory {summary['run_dir']}")


if __name__ == "__main__":
    main()
