"""Use IN2R's rectification step inside your own training loop.

Fills a memory bank with trusted (image, caption) embedding pairs, then turns
a batch of suspected-noisy image embeddings into soft caption prototypes with
a registered refiner, and takes one InfoNCE step towards them.

    python examples/rectify_only.py --refiner gat --k 8
"""

import argparse

import torch
import torch.nn.functional as F

from in2r_graph import GraphOptions, MemoryBank, build_refiner, synthesize_prototypes
from in2r_graph.losses import info_nce


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refiner", default="attention", help="registered refiner name (default: attention)")
    parser.add_argument("--k", type=int, default=10, help="neighbours per query (default: 10)")
    parser.add_argument("--dim", type=int, default=64, help="embedding size (default: 64)")
    parser.add_argument("--topology", default="complete", help="complete, knn or star (star needs --query-node)")
    parser.add_argument("--query-node", action="store_true", help="add the query itself as a graph node")
    args = parser.parse_args()

    torch.manual_seed(0)
    bank = MemoryBank(capacity=1024, dim=args.dim)
    trusted_images = F.normalize(torch.randn(1024, args.dim), dim=-1)
    trusted_texts = F.normalize(trusted_images + 0.3 * torch.randn(1024, args.dim), dim=-1)
    bank.push(trusted_images, trusted_texts, torch.arange(1024))

    refiner = build_refiner(args.refiner, args.dim, heads=4)
    noisy_images = F.normalize(torch.randn(32, args.dim), dim=-1).requires_grad_(True)
    graph = GraphOptions(topology=args.topology, query_node=args.query_node)
    prototypes, found = synthesize_prototypes(
        noisy_images, bank.images, bank.texts, refiner, args.k, key_ids=bank.indices, graph=graph
    )
    loss = info_nce(noisy_images, prototypes, temperature=0.05)
    loss.backward()
    print(f"refiner {args.refiner}: prototypes {tuple(prototypes.shape)}, neighbours {tuple(found.positions.shape)}, "
          f"InfoNCE {loss.item():.3f}, query gradient norm {noisy_images.grad.norm():.3f}")


if __name__ == "__main__":
    main()
