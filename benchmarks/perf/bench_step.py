"""Whole training step: ``in2r`` against co-training without rectification and plain contrastive training.

Each step is run by the trainer's own loops on the same data, batch size and
encoder weights. ``Trainer._train_split`` runs ``in2r`` and ``co-divide``:
one network's pass over a fixed set of trusted pairs, with a full memory
bank for ``in2r``. ``Trainer._warmup_epoch`` runs ``contrastive`` on a
training set cut to the first captions, so that it has as many batches. The methods are timed in turn, round
after round, and the table reports the fastest round's time per step
(other load on the machine only adds time).

A second table splits the extra work of an ``in2r`` step into its parts
(encoding the suspected-noisy batch with its backward pass, the two bank
searches, the two graph builds, the two refiner passes with their backward
pass). Encoding the noisy batch is part of the method. So
``1 + encode / co-divide step`` is a floor for the ratio, which no search or
refiner speed-up can go below, and the table reports it.

Target: an ``in2r`` step <= 1.15x a co-training step without rectification.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

import common
import workloads
from in2r_graph.graphs import build_neighbourhood_batch
from in2r_graph.losses import info_nce
from in2r_graph.rectify import retrieve_neighbourhood
from in2r_graph.training.trainer import Trainer

BACKENDS = ("torch", "auto")


def time_methods(
    trainers: dict[str, Trainer], labeled: np.ndarray, prob: np.ndarray, steps: int, rounds: int
) -> dict[str, float]:
    """Return the seconds per step of each method in its fastest of ``rounds`` interleaved rounds."""
    samples: dict[str, list[float]] = {}
    runs = {f"in2r ({backend} search)": backend for backend in BACKENDS}
    runs.update({"co-divide": None, "contrastive": None})
    for round_index in range(rounds + 1):  # the first round warms up and is not counted
        for name, backend in runs.items():
            if name == "contrastive":
                trainer = trainers["contrastive"]
                seconds = common.time_once(lambda: trainer._warmup_epoch(0))
            else:
                trainer = trainers["in2r" if backend else "co-divide"]
                if backend:
                    trainer.config.rectify.search_backend = backend
                seconds = common.time_once(lambda: trainer._train_split(1, 0, labeled, prob))
            if round_index:
                samples.setdefault(name, []).append(seconds / steps)
    return {name: min(values) for name, values in samples.items()}


def rectify_breakdown(trainer: Trainer, unlabeled: np.ndarray, repeats: int) -> list[dict]:
    """Time the parts of the rectification terms of one step, as ``Trainer._rectify_terms`` runs them."""
    net = trainer.networks[0]
    net.train()
    rectify = trainer.config.rectify
    bank_images, bank_texts, bank_ids = net.bank.valid()
    query_ids = torch.from_numpy(unlabeled)
    graph = trainer.graph
    images, texts = trainer._inputs(trainer.train_data, unlabeled)

    def encode() -> None:
        loss = info_nce(net.encode_images(images), net.encode_texts(texts), trainer.config.train.temperature)
        loss.backward()
        net.zero_grad(set_to_none=True)

    with torch.no_grad():
        image_queries, text_queries = net.encode_images(images), net.encode_texts(texts)
    sides = (
        (image_queries, bank_images, bank_texts, net.text_refiner),
        (text_queries, bank_texts, bank_images, net.image_refiner),
    )

    def search(backend: str) -> list:
        return [
            retrieve_neighbourhood(queries, keys, partners, rectify.k, query_ids=query_ids, key_ids=bank_ids, backend=backend)
            for queries, keys, partners, _ in sides
        ]

    found = search("auto")

    def build() -> list:
        return [
            build_neighbourhood_batch(
                neighbourhood.partners,
                keys=neighbourhood.keys,
                query=queries.detach(),
                scores=neighbourhood.sims,
                query_node=graph.query_node,
                topology=graph.topology,
                knn_edges=graph.knn_edges,
                edge_weights=graph.edge_weights,
            )
            for neighbourhood, (queries, *_rest) in zip(found, sides)
        ]

    batches = build()

    def refine() -> None:
        leaf_queries = [queries.detach().requires_grad_() for queries, *_rest in sides]
        loss = sum(
            info_nce(queries, refiner(batch), trainer.config.train.temperature)
            for queries, batch, (_, _, _, refiner) in zip(leaf_queries, batches, sides)
        )
        loss.backward()
        for _, _, _, refiner in sides:
            refiner.zero_grad(set_to_none=True)

    parts = {
        "encode noisy batch (forward + backward)": encode,
        "2 searches (torch)": lambda: search("torch"),
        "2 searches (auto)": lambda: search("auto"),
        "2 graph builds": build,
        "2 refiner passes + backward": refine,
    }
    times = common.time_side_by_side(parts, repeats=repeats)
    return [{"part": name, "ms": value["ms"]} for name, value in times.items()]


def measure_setup(setup: str, dataset: workloads.Dataset, mode: str, run_dir: Path) -> tuple[dict, list[dict]]:
    """Build the three trainers of one encoder setup and time their steps."""
    steps = common.pick(mode, 2, 8, 12)
    rounds = common.pick(mode, 1, 3, 5)
    batch = 128
    overrides = workloads.SETUPS[setup] + [f"train.batch_size={batch}"]
    if mode == "tiny":
        overrides += ["data.max_train_pairs=1000"]

    in2r = workloads.build_trainer(workloads.make_config(dataset, "in2r", overrides), run_dir / "in2r")
    co_divide = workloads.build_trainer(workloads.make_config(dataset, "co-divide", overrides), run_dir / "co-divide")
    contrastive = workloads.build_trainer(workloads.make_config(dataset, "contrastive", overrides), run_dir / "contrastive")
    workloads.limit_pairs(contrastive, steps * batch)  # one warm-up epoch is then `steps` batches
    workloads.copy_encoders(in2r, co_divide)
    workloads.copy_encoders(in2r, contrastive)
    workloads.fill_bank(in2r)

    num_pairs = in2r.train_data.num_pairs
    labeled, prob = workloads.fixed_split(num_pairs, steps * batch)
    per_step = time_methods(
        {"in2r": in2r, "co-divide": co_divide, "contrastive": contrastive}, labeled, prob, steps, rounds
    )
    base = per_step["co-divide"]
    row = {
        "setup": setup,
        "pairs": num_pairs,
        "bank": in2r.networks[0].bank.size,
        **{f"{name}_ms": 1e3 * seconds for name, seconds in per_step.items()},
        **{f"{name} / co-divide": seconds / base for name, seconds in per_step.items() if name != "co-divide"},
    }
    unlabeled = np.flatnonzero(~labeled)[:batch]
    breakdown = [{"setup": setup, **part} for part in rectify_breakdown(in2r, unlabeled, common.pick(mode, 2, 5, 10))]
    encode_ms = breakdown[0]["ms"]
    row["floor (noisy-batch encoding) / co-divide"] = 1 + encode_ms / (1e3 * base)
    return row, breakdown


def main(argv: list[str] | None = None) -> dict:
    args = common.parse_args(__doc__.splitlines()[0], argv)
    common.set_threads()
    setups = common.pick(args.mode, ["global+minilm"], list(workloads.SETUPS), list(workloads.SETUPS))
    dataset = workloads.pick_dataset(args.flickr8k, common.pick(args.mode, 250, 6000, 6000))
    rows, breakdown = [], []
    try:
        with tempfile.TemporaryDirectory(prefix="in2r-perf-runs-") as run_dir:
            for setup in setups:
                row, parts = measure_setup(setup, dataset, args.mode, Path(run_dir) / setup)
                rows.append(row)
                breakdown += parts
                print(common.format_table([row]), flush=True)
    finally:
        dataset.cleanup()
    print()
    print(common.format_table(breakdown))
    targets = []
    for row in rows:
        for backend in BACKENDS:
            name = f"in2r ({backend} search) / co-divide"
            targets.append(common.target(f"{row['setup']}: {name} step", row[name], 1.15, at_least=False))
    print()
    common.print_targets(targets)
    path = common.write_result(args.out, "step", args.mode, rows, targets, breakdown=breakdown, data=dataset.description)
    print(f"wrote {path}")
    return {"path": str(path), "targets": targets}


if __name__ == "__main__":
    main()
