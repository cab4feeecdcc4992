"""Evaluation: vectorised ``retrieval_metrics`` against a per-query Python loop, and its peak memory.

The loop is the style of the reference evaluation code: for every query it
computes one row of similarities with ``np.dot``, sorts the row with
``np.argsort`` and looks up the position of the ground truth. Both sides get
the same embeddings (5 captions per image, dim 256, captions correlated with
their image so that the recalls are neither 0 nor 100) and must give
identical metrics. The time of the bare similarity product
``images @ texts.T`` is listed too: no implementation that computes all
similarities can be faster than it.

Peak memory is the growth of the process's peak resident set during one
call (Linux ``VmHWM``, reset before the call through ``/proc/self/clear_refs``),
for several ``shard_size`` values on the largest size.

Targets: vectorised >= 20x faster than the loop, identical results; peak
memory bounded by the shard size: growth <= 3 x ``shard_size`` x captions x 4
bytes + 32 MB at every shard size.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import common
from in2r_graph.evaluation.retrieval import METRIC_KEYS, RECALL_KS, retrieval_metrics

CAPTIONS_PER_IMAGE = 5
DIM = 256
STATUS = Path("/proc/self/status")


def make_embeddings(num_images: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return images (M, D), captions (5M, D) near their image, and the caption-to-image map (5M,)."""
    generator = torch.Generator().manual_seed(seed)
    images = F.normalize(torch.randn(num_images, DIM, generator=generator), dim=1)
    owner = torch.arange(num_images).repeat_interleave(CAPTIONS_PER_IMAGE)
    noise = torch.randn(len(owner), DIM, generator=generator) * 4.0 / DIM**0.5  # cosine to the image about 0.24
    texts = F.normalize(images[owner] + noise, dim=1)
    return images, texts, owner


def loop_metrics(images: np.ndarray, texts: np.ndarray, owner: np.ndarray) -> dict[str, float]:
    """Score every query in a Python loop that sorts its whole similarity row."""
    captions_of: list[list[int]] = [[] for _ in range(len(images))]
    for caption, image in enumerate(owner):
        captions_of[image].append(caption)

    i2t = np.zeros(len(images))
    for image in range(len(images)):
        similarity = np.dot(images[image], texts.T)
        order = np.argsort(similarity)[::-1]
        i2t[image] = 1 + min(np.where(order == caption)[0][0] for caption in captions_of[image])

    t2i = np.zeros(len(texts))
    for caption in range(len(texts)):
        similarity = np.dot(texts[caption], images.T)
        order = np.argsort(similarity)[::-1]
        t2i[caption] = 1 + np.where(order == owner[caption])[0][0]

    metrics = {}
    for direction, ranks in (("i2t", i2t), ("t2i", t2i)):
        for k in RECALL_KS:
            metrics[f"{direction}_r{k}"] = 100.0 * np.mean(ranks <= k)
    metrics["rsum"] = sum(metrics[f"{direction}_r{k}"] for direction in ("i2t", "t2i") for k in RECALL_KS)
    for direction, ranks in (("i2t", i2t), ("t2i", t2i)):
        metrics[f"{direction}_medr"] = float(np.floor(np.median(ranks)))
        metrics[f"{direction}_meanr"] = float(ranks.mean())
    return metrics


def read_status_kb(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", STATUS.read_text()).group(1))


def peak_growth_mb(fn) -> float | None:
    """Return how far one call of ``fn`` raises the peak resident set above the current one, in MB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None  # not Linux, or the peak cannot be reset here
    before = read_status_kb("VmRSS")
    fn()
    return (read_status_kb("VmHWM") - before) / 1024


def main(argv: list[str] | None = None) -> dict:
    args = common.parse_args(__doc__.splitlines()[0], argv)
    common.set_threads()
    sizes = common.pick(args.mode, [100, 400], [1000, 5000], [1000, 5000])
    repeats = common.pick(args.mode, 1, 3, 5)
    rows, targets, memory = [], [], []
    for num_images in sizes:
        images, texts, owner = make_embeddings(num_images)
        arrays = (images.numpy(), texts.numpy(), owner.numpy())
        vectorised = common.time_side_by_side(
            {"vectorised": lambda: retrieval_metrics(images, texts, owner), "mm": lambda: images @ texts.T}, repeats
        )
        slow: dict[str, float] = {}
        loop_seconds = common.time_once(lambda: slow.update(loop_metrics(*arrays)))
        fast = retrieval_metrics(images, texts, owner)
        mismatched = [key for key in METRIC_KEYS if fast[key] != slow[key]]
        speedup = 1e3 * loop_seconds / vectorised["vectorised"]["ms"]
        rows.append(
            {
                "images": num_images,
                "captions": len(owner),
                "vectorised_ms": vectorised["vectorised"]["ms"],
                "bare_mm_ms": vectorised["mm"]["ms"],
                "vectorised_vs_mm": vectorised["vectorised"]["ms"] / vectorised["mm"]["ms"],
                "loop_ms": 1e3 * loop_seconds,
                "speedup": speedup,
                "identical": not mismatched,
                "rsum": fast["rsum"],
            }
        )
        print(common.format_table(rows[-1:]), flush=True)
        targets.append(common.target(f"vectorised speed-up over the loop, {num_images} images", speedup, 20.0, at_least=True))
        targets.append(
            {
                "target": f"identical metrics, {num_images} images",
                "value": "identical" if not mismatched else f"differ: {', '.join(mismatched)}",
                "limit": "identical",
                "met": not mismatched,
            }
        )

    num_images = sizes[-1]
    images, texts, owner = make_embeddings(num_images)
    captions = len(owner)
    for shard_size in sorted({min(size, num_images) for size in (256, 1024, num_images)}):
        growth = peak_growth_mb(lambda: retrieval_metrics(images, texts, owner, shard_size=shard_size))
        shard_mb = shard_size * captions * 4 / 2**20
        memory.append(
            {
                "images": num_images,
                "captions": captions,
                "shard_size": shard_size,
                "similarity_shard_mb": shard_mb,
                "peak_growth_mb": growth,
                "bound_mb": 3 * shard_mb + 32,
            }
        )
    print()
    print(common.format_table(memory))
    measured = [row for row in memory if row["peak_growth_mb"] is not None]
    if measured:
        worst = max(row["peak_growth_mb"] / row["bound_mb"] for row in measured)
        targets.append(common.target("peak memory growth / (3 x shard + 32 MB), worst shard size", worst, 1.0, at_least=False))
    print()
    common.print_targets(targets)
    path = common.write_result(args.out, "eval", args.mode, rows, targets, memory=memory, dim=DIM)
    print(f"wrote {path}")
    return {"path": str(path), "targets": targets}


if __name__ == "__main__":
    main()
