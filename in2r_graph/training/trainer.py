"""Warm-up, co-training with clean/noisy split, rectification, evaluation and checkpoints."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ..config import Config
from ..data.pairs import PairData, to_device
from ..evaluation.retrieval import retrieval_metrics
from ..losses import hinge_hardest, info_nce, per_sample_hinge
from ..memory import MemoryBank
from ..rectify import GraphOptions, refine_neighbourhood, synthesize_prototypes
from ..search import choose_exact_backend
from ..selection import clean_probability, split_clean
from . import distributed as dist_utils
from .checkpoint import (
    capture_rng_state,
    deferred_keyboard_interrupt,
    pause_after_epoch_for_tests,
    restore_rng_state,
    save_atomic,
)
from .errors import NonFiniteLossError
from .network import Network
from .progress import Progress

logger = logging.getLogger(__name__)

NET_NAMES = ("A", "B")

# Called after each split with (net name, labeled mask, clean probabilities);
# returns diagnostics to log. The caller owns any ground truth it compares with.
SplitHook = Callable[[str, np.ndarray, np.ndarray], dict[str, float]]
# Called after each co-training epoch with (trainer, epoch); returns diagnostics to log.
EpochHook = Callable[["Trainer", int], dict[str, float]]


class _StepModule(nn.Module):
    """Run one network's whole per-step loss computation as a single forward call.

    DistributedDataParallel synchronises the gradients of the parameters that
    a forward call used, and it expects one forward per backward. A training
    step encodes several views and runs the refiners, so the whole step is
    this module's forward. In a single process it is a plain call.
    """

    def __init__(self, network: Network, compute: Callable[..., dict[str, Tensor]]) -> None:
        super().__init__()
        self.network = network
        self.compute = compute

    def forward(self, *args: Any) -> dict[str, Tensor]:
        return self.compute(self.network, *args)


class Trainer:
    """Train IN2R (or a baseline) and keep everything needed to resume.

    Args:
        config: the resolved run configuration.
        networks: one network (``contrastive``) or two (co-trained methods).
        train: training pairs with the noisy caption-to-image mapping.
        dev: validation pairs with the clean mapping, for model selection.
        run_dir: folder of checkpoints and ``metrics.csv``.
        split_hook: optional diagnostics after each clean/noisy split.
        epoch_hook: optional diagnostics after each co-training epoch.
        extra_state: plain values stored in every checkpoint (vocabulary,
            data fingerprint) so that evaluation and resume can rebuild the run.
    """

    def __init__(
        self,
        config: Config,
        networks: list[Network],
        train: PairData,
        dev: PairData,
        *,
        run_dir: str | Path,
        device: torch.device,
        split_hook: SplitHook | None = None,
        epoch_hook: EpochHook | None = None,
        extra_state: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.device = device
        self.networks = [net.to(device) for net in networks]
        self.train_data = train
        self.dev_data = dev
        self.run_dir = Path(run_dir)
        self.split_hook = split_hook
        self.epoch_hook = epoch_hook
        self.extra_state = extra_state or {}
        self.method = config.train.method
        self.rectifying = self.method == "in2r"
        self.graph = GraphOptions(
            topology=config.rectify.topology,
            knn_edges=config.rectify.knn_edges,
            edge_weights=config.rectify.edge_weights,
            query_node=config.rectify.query_node,
        )
        cfg = config.train
        self.optimizers = [
            torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay) for net in self.networks
        ]
        self.schedulers = [
            torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.lr_decay_epochs), gamma=cfg.lr_decay)
            for optimizer in self.optimizers
        ]
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.distributed = dist_utils.is_distributed()
        self.is_main = dist_utils.is_main_process()
        self.step_modules: list[nn.Module] = []
        for net in self.networks:
            module: nn.Module = _StepModule(net, self._compute_terms)
            if self.distributed:
                # Refiners sit idle in warm-up and in skipped rectification steps, and the
                # banks are kept equal by gathering pushes, so they are not broadcast.
                module = DistributedDataParallel(
                    module,
                    device_ids=[device.index] if device.type == "cuda" else None,
                    find_unused_parameters=True,
                    broadcast_buffers=False,
                )
            self.step_modules.append(module)
        self.sharded_banks = self.distributed and config.rectify.bank_sharding
        self.rank_state: list[dict[str, Any]] = []
        self._skipped_step = False
        if self.rectifying:
            backend = config.rectify.search_backend
            if backend == "auto":
                probe = torch.zeros(1, 1, device=device)
                backend = f"auto ({choose_exact_backend(probe, probe)} on this device for small banks)"
            logger.info("neighbour search: backend %s on %s", backend, device)
        self.epoch = 0
        # Epochs contained in checkpoints/last.pt (0 before the first save).
        self.saved_epoch = 0
        self.best_rsum = -math.inf
        self.best_epoch = -1
        self.history: list[dict[str, Any]] = []
        self.last_clean_prob: list[Tensor] = []

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Return the full training state as plain tensors and dicts."""
        return {
            "format": 1,
            "epoch": self.epoch,
            "best_rsum": self.best_rsum,
            "best_epoch": self.best_epoch,
            "config": self.config.to_dict(),
            "networks": [net.state_dict() for net in self.networks],
            "optimizers": [optimizer.state_dict() for optimizer in self.optimizers],
            "schedulers": [scheduler.state_dict() for scheduler in self.schedulers],
            "generator": self.generator.get_state(),
            "rng": capture_rng_state(),
            "history": self.history,
            "clean_prob": self.last_clean_prob,
            **self.extra_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state written by :meth:`state_dict` (the networks must match the config)."""
        for net, net_state in zip(self.networks, state["networks"]):
            net.load_state_dict(net_state)
        for optimizer, optimizer_state in zip(self.optimizers, state["optimizers"]):
            optimizer.load_state_dict(optimizer_state)
        for scheduler, scheduler_state in zip(self.schedulers, state["schedulers"]):
            scheduler.load_state_dict(scheduler_state)
        self.generator.set_state(state["generator"])
        restore_rng_state(state["rng"])
        self.epoch = int(state["epoch"])
        self.saved_epoch = self.epoch
        self.best_rsum = float(state["best_rsum"])
        self.best_epoch = int(state["best_epoch"])
        self.history = list(state["history"])
        self.last_clean_prob = list(state.get("clean_prob", []))

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    # ------------------------------------------------------------------ loop

    def fit(self) -> dict[str, Any]:
        """Train until ``train.epochs``; return the best dev epoch and its rSum."""
        cfg = self.config.train
        if self.epoch >= cfg.epochs:
            logger.info("run already finished %d epochs; nothing to train", self.epoch)
        while self.epoch < cfg.epochs:
            epoch = self.epoch
            started = time.monotonic()
            if self.method == "contrastive" or epoch < cfg.warmup_epochs:
                phase = "contrastive" if self.method == "contrastive" else "warmup"
                record = self._warmup_epoch(epoch)
            else:
                phase = "cotrain"
                record = self._cotrain_epoch(epoch)
            self._check_finite_weights(epoch)
            record["lr"] = self.optimizers[0].param_groups[0]["lr"]
            for scheduler in self.schedulers:
                scheduler.step()
            dev_metrics = self.evaluate(self.dev_data)
            record.update({f"dev_{key}": value for key, value in dev_metrics.items()})
            record.update(epoch=epoch, phase=phase, seconds=round(time.monotonic() - started, 2))
            # Ctrl-C waits until the epoch is counted, saved and logged, so the
            # saved checkpoint always matches the epoch counter.
            with deferred_keyboard_interrupt():
                self.history.append(record)
                self.epoch = epoch + 1
                improved = dev_metrics["rsum"] > self.best_rsum
                if improved:
                    self.best_rsum, self.best_epoch = dev_metrics["rsum"], epoch
                if self.is_main:
                    self._save(improved)
                    self._write_metrics()
                self.saved_epoch = self.epoch
                dist_utils.barrier()
            pause_after_epoch_for_tests()
            logger.info(
                "epoch %d/%d (%s) dev rSum %.1f%s, %.0fs",
                epoch + 1,
                cfg.epochs,
                phase,
                dev_metrics["rsum"],
                " (best)" if improved else "",
                record["seconds"],
            )
        if self.distributed:
            path = self.run_dir / f"rank{dist_utils.rank()}_state.json"
            path.write_text(json.dumps(self.rank_state, indent=1), encoding="utf-8")
        return {"best_epoch": self.best_epoch, "best_dev_rsum": self.best_rsum, "epochs": self.epoch}

    def _save(self, improved: bool) -> None:
        state = self.state_dict()
        save_atomic(state, self.checkpoint_dir / "last.pt")
        self.saved_epoch = self.epoch
        if improved:
            save_atomic(state, self.checkpoint_dir / "best.pt")

    def _last_good_checkpoint(self) -> str:
        """Describe the checkpoint a run can resume from, for error messages."""
        if self.saved_epoch == 0:
            return "no checkpoint was saved yet (the run failed in its first epoch)"
        return f"last good checkpoint: {self.checkpoint_dir / 'last.pt'} (epoch {self.saved_epoch})"

    def _check_finite_weights(self, epoch: int) -> None:
        """Raise NonFiniteLossError when an optimiser step left a NaN or infinite weight."""
        for name, net in zip(NET_NAMES, self.networks):
            for parameter_name, parameter in net.named_parameters():
                if not bool(torch.isfinite(parameter).all()):
                    raise NonFiniteLossError(
                        f"non-finite weights in net {name} ({parameter_name}) after epoch {epoch + 1}; "
                        f"{self._last_good_checkpoint()}. Lower train.lr or check the input features for "
                        "extreme values."
                    )

    def _write_metrics(self) -> None:
        frame = pd.DataFrame(self.history)
        leading = [column for column in ("epoch", "phase", "seconds", "lr") if column in frame.columns]
        frame = frame[leading + [column for column in frame.columns if column not in leading]]
        temporary = self.run_dir / ".metrics.csv.tmp"
        frame.to_csv(temporary, index=False)
        temporary.replace(self.run_dir / "metrics.csv")

    # ------------------------------------------------------------------ batching

    def _permutation(self, items: np.ndarray) -> np.ndarray:
        order = torch.randperm(len(items), generator=self.generator).numpy()
        return items[order]

    def _batches(self, items: np.ndarray) -> list[np.ndarray]:
        """Shuffle ``items`` and cut them into batches; a last batch of one item is dropped."""
        size = self.config.train.batch_size
        shuffled = self._permutation(items)
        batches = [shuffled[start : start + size] for start in range(0, len(shuffled), size)]
        return [batch for batch in batches if len(batch) >= 2]

    def _cycle(self, items: np.ndarray) -> Iterator[np.ndarray]:
        """Yield shuffled batches of ``items`` forever (reshuffled each pass)."""
        while True:
            batches = self._batches(items)
            if not batches:
                return
            yield from batches

    def _inputs(self, data: PairData, indices: np.ndarray) -> tuple[Any, Any]:
        return to_device(data.images(indices), self.device), to_device(data.texts(indices), self.device)

    def _compute_terms(self, net: Network, kind: str, *args: Any) -> dict[str, Tensor]:
        """Compute the loss terms of one step; called through the network's step module."""
        autocast = self.config.train.amp and self.device.type == "cuda"
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=autocast):
            if kind == "contrastive":
                images, texts = args
                cfg = self.config.train
                return {"nce_loss": info_nce(net.encode_images(images), net.encode_texts(texts), cfg.temperature)}
            if kind == "warmup":
                return self._warmup_terms(net, *args)
            return self._cotrain_terms(net, *args)

    # ------------------------------------------------------------------ warm-up

    def _warmup_epoch(self, epoch: int) -> dict[str, Any]:
        cfg = self.config.train
        record: dict[str, Any] = {}
        pairs = np.arange(self.train_data.num_pairs)
        for name, net, optimizer in zip(NET_NAMES, self.networks, self.optimizers):
            net.train()
            sums: dict[str, float] = defaultdict(float)
            batches = self._batches(pairs)
            progress = Progress(len(batches), f"epoch {epoch + 1} warm-up net {name}", cfg.progress and self.is_main)
            step_module = self.step_modules[NET_NAMES.index(name)]
            for step, indices in enumerate(batches):
                images, texts = self._inputs(self.train_data, dist_utils.shard(indices))
                kind = "contrastive" if self.method == "contrastive" else "warmup"
                terms = step_module(kind, images, texts)
                total = self._step(net, optimizer, terms, epoch, step, name)
                for key, value in terms.items():
                    sums[key] += float(value.detach())
                progress.update(step + 1, f"loss {total:.3f}")
            progress.close()
            for key, value in sums.items():
                record[f"{name}/{key}"] = value / max(1, len(batches))
        return record

    def _warmup_terms(self, net: Network, images: Tensor, texts: Any) -> dict[str, Tensor]:
        cfg = self.config.train
        image_view1, image_view2 = net.encode_images(images), net.encode_images(images)
        text_view1, text_view2 = net.encode_texts(texts), net.encode_texts(texts)
        return {
            "nce_loss": info_nce(image_view1, text_view1, cfg.temperature, cfg.complementary_weight),
            "image_view_loss": cfg.intra_weight * info_nce(image_view1, image_view2, cfg.temperature),
            "text_view_loss": cfg.intra_weight * info_nce(text_view1, text_view2, cfg.temperature),
        }

    def _step(self, net: Network, optimizer, terms: dict[str, Tensor], epoch: int, step: int, name: str) -> float:
        total = sum(terms.values())
        if not dist_utils.all_ranks_true(bool(torch.isfinite(total)), self.device):
            values = ", ".join(f"{key}={float(value.detach()):.4g}" for key, value in terms.items())
            raise NonFiniteLossError(
                f"non-finite loss at epoch {epoch + 1}, step {step + 1}, net {name}: {values}; "
                f"{self._last_good_checkpoint()}. Lower train.lr or check the input features for extreme values."
            )
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.config.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), self.config.train.grad_clip)
        optimizer.step()
        return float(total.detach())

    # ------------------------------------------------------------------ co-training

    @torch.no_grad()
    def per_sample_losses(self, net: Network, epoch: int, keep_embeddings: bool) -> tuple[np.ndarray, Any]:
        """Return each training pair's hinge loss (eval mode) and, optionally, its embeddings.

        Batches follow a permutation seeded by the run seed and the epoch, so
        the split does not depend on the training order and resumes exactly.
        """
        net.eval()
        count = self.train_data.num_pairs
        generator = torch.Generator().manual_seed(self.config.train.seed * 1000 + epoch)
        order = torch.randperm(count, generator=generator).numpy()
        chunks = max(1, math.ceil(count / self.config.train.batch_size))
        losses = np.zeros(count, dtype=np.float64)
        embeddings = None
        if keep_embeddings:
            dim = self.config.model.embed_dim
            embeddings = (torch.zeros(count, dim, dtype=torch.float16), torch.zeros(count, dim, dtype=torch.float16))
        for chunk in np.array_split(order, chunks):
            indices = dist_utils.shard(chunk)
            if len(indices) == 0:
                continue
            images, texts = self._inputs(self.train_data, indices)
            image_embeddings, text_embeddings = net.encode_images(images), net.encode_texts(texts)
            losses[indices] = per_sample_hinge(image_embeddings, text_embeddings, self.config.train.margin).cpu().numpy()
            if embeddings is not None:
                rows = torch.from_numpy(indices)
                embeddings[0][rows] = image_embeddings.cpu().half()
                embeddings[1][rows] = text_embeddings.cpu().half()
        if self.distributed:
            # Each rank scored its shard of every chunk; the rows of the others are zero.
            losses = dist_utils.all_reduce_sum(losses, self.device)
            if embeddings is not None:
                embeddings = tuple(dist_utils.all_reduce_sum_tensor(part, self.device) for part in embeddings)
        if not np.isfinite(losses).all():
            raise NonFiniteLossError(
                f"{int((~np.isfinite(losses)).sum())} of {count} per-sample losses are NaN or infinite before "
                f"the clean/noisy split of epoch {epoch + 1}; {self._last_good_checkpoint()}. Lower train.lr or "
                "check the input features for extreme values."
            )
        return losses, embeddings

    def _search_bank(self, index: int) -> MemoryBank:
        owner = index if self.config.rectify.bank_owner == "own" or len(self.networks) == 1 else 1 - index
        return self.networks[owner].bank

    def _cotrain_epoch(self, epoch: int) -> dict[str, Any]:
        cfg, rectify = self.config.train, self.config.rectify
        record: dict[str, Any] = {}
        cold = [self.rectifying and net.bank.size <= rectify.k for net in self.networks]
        probabilities, embeddings = [], []
        for index, net in enumerate(self.networks):
            losses, kept = self.per_sample_losses(net, epoch, keep_embeddings=cold[index])
            # The mixture is fitted once, on rank 0, and every rank trains on that split.
            prob = clean_probability(losses, seed=cfg.seed + epoch) if self.is_main else None
            probabilities.append(dist_utils.broadcast_array(prob, self.device))
            embeddings.append(kept)
        self.last_clean_prob = [torch.from_numpy(prob).float() for prob in probabilities]

        for index, (name, net, optimizer) in enumerate(zip(NET_NAMES, self.networks, self.optimizers)):
            # Each net trains on the split its peer produced, so its own selection errors are filtered.
            peer_prob = probabilities[1 - index]
            labeled = split_clean(peer_prob, cfg.clean_threshold, cfg.min_noisy_fraction)
            record[f"{name}/labeled_fraction"] = float(labeled.mean())
            digest = {"epoch": epoch, "net": name, "split_sha1": hashlib.sha1(labeled.tobytes()).hexdigest()}
            if self.split_hook is not None:
                for key, value in self.split_hook(name, labeled, peer_prob).items():
                    record[f"{name}/{key}"] = value
            if cold[index]:
                self._prefill_bank(net, embeddings[index], labeled, peer_prob)
            record.update({f"{name}/{key}": value for key, value in self._train_split(epoch, index, labeled, peer_prob).items()})
            if net.bank is not None:
                record[f"{name}/bank_fill"] = net.bank.size / net.bank.capacity
                digest["bank_sha1"] = _bank_digest(net.bank)
            self.rank_state.append(digest)
        if self.epoch_hook is not None:
            record.update(self.epoch_hook(self, epoch))
        return record

    def _prefill_bank(self, net: Network, embeddings: tuple[Tensor, Tensor], labeled: np.ndarray, prob: np.ndarray) -> None:
        """Fill an empty bank with the confident labeled pairs, so rectification starts at once."""
        confident = np.flatnonzero(labeled & (prob > prob[labeled].mean()))
        if len(confident) == 0:
            return
        chosen = self._permutation(confident)[: net.bank.capacity * (dist_utils.world_size() if self.sharded_banks else 1)]
        if self.sharded_banks:
            chosen = chosen[dist_utils.rank() :: dist_utils.world_size()]
        rows = torch.from_numpy(chosen)
        device = net.bank.images.device
        net.bank.push(embeddings[0][rows].float().to(device), embeddings[1][rows].float().to(device), rows.to(device))
        logger.info("memory bank prefilled with %d confident pairs", len(chosen))

    def _train_split(self, epoch: int, index: int, labeled: np.ndarray, prob: np.ndarray) -> dict[str, float]:
        cfg, rectify = self.config.train, self.config.rectify
        net, optimizer, name = self.networks[index], self.optimizers[index], NET_NAMES[index]
        net.train()
        labeled_ids = np.flatnonzero(labeled)
        unlabeled_ids = np.flatnonzero(~labeled)
        push_threshold = float(prob[labeled_ids].mean()) if len(labeled_ids) else 1.0
        prob_tensor = torch.from_numpy(prob)
        unlabeled_batches = self._cycle(unlabeled_ids) if self.rectifying else iter(())
        batches = self._batches(labeled_ids)
        sums: dict[str, float] = defaultdict(float)
        skipped = 0
        progress = Progress(len(batches), f"epoch {epoch + 1} co-train net {name}", cfg.progress and self.is_main)
        for step, indices in enumerate(batches):
            unlabeled = next(unlabeled_batches, None) if self.rectifying else None
            local_unlabeled = None if unlabeled is None else dist_utils.shard(unlabeled)
            terms = self.step_modules[index]("cotrain", index, dist_utils.shard(indices), local_unlabeled, prob_tensor, push_threshold)
            skipped += int(self._skipped_step)
            total = self._step(net, optimizer, terms, epoch, step, name)
            for key, value in terms.items():
                sums[key] += float(value.detach())
            progress.update(step + 1, f"loss {total:.3f}")
        progress.close()
        if skipped:
            logger.info(
                "net %s: rectification skipped in %d of %d steps (bank smaller than k=%d plus the query's own pair)",
                name,
                skipped,
                len(batches),
                rectify.k,
            )
        result = {key: value / max(1, len(batches)) for key, value in sums.items()}
        result["rectify_skipped"] = skipped
        return result

    def _cotrain_terms(
        self,
        net: Network,
        index: int,
        indices: np.ndarray,
        unlabeled: np.ndarray | None,
        prob: Tensor,
        push_threshold: float,
    ) -> dict[str, Tensor]:
        """Labeled hinge terms, the bank push and (when possible) the rectification terms of one step."""
        cfg, rectify = self.config.train, self.config.rectify
        images, texts = self._inputs(self.train_data, indices)
        image_view1, image_view2 = net.encode_images(images), net.encode_images(images)
        text_view1, text_view2 = net.encode_texts(texts), net.encode_texts(texts)
        terms = {
            "hinge_loss": hinge_hardest(image_view1, text_view1, cfg.margin),
            "image_view_loss": cfg.intra_weight * hinge_hardest(image_view1, image_view2, cfg.view_margin),
            "text_view_loss": cfg.intra_weight * hinge_hardest(text_view1, text_view2, cfg.view_margin),
        }
        if net.bank is not None:
            confident = (prob[torch.from_numpy(indices)] > push_threshold).to(self.device)
            ids = torch.from_numpy(indices).to(self.device)
            pushed = (image_view1.detach()[confident], text_view1.detach()[confident], ids[confident])
            if not self.sharded_banks:
                # Every rank pushes every rank's confident pairs, so all banks stay equal.
                pushed = tuple(dist_utils.all_gather_rows(part) for part in pushed)
            net.bank.push(*pushed)
        self._skipped_step = False
        if self.rectifying:
            bank = self._search_bank(index)
            if self.sharded_banks and unlabeled is not None:
                # Every rank joins the distributed search, whatever its own shard holds.
                sharded_terms = self._sharded_rectify_terms(net, bank, unlabeled)
                terms.update(sharded_terms)
                self._skipped_step = not sharded_terms
            elif unlabeled is not None and len(unlabeled) >= 2 and bank_ready(bank, rectify.k):
                terms.update(self._rectify_terms(net, bank, unlabeled))
            else:
                self._skipped_step = True
        return terms

    def _rectify_terms(self, net: Network, bank: MemoryBank, indices: np.ndarray) -> dict[str, Tensor]:
        cfg, rectify = self.config.train, self.config.rectify
        images, texts = self._inputs(self.train_data, indices)
        query_ids = torch.from_numpy(indices).to(self.device)
        bank_images, bank_texts, bank_ids = bank.valid()
        terms = {}
        options = dict(query_ids=query_ids, key_ids=bank_ids, backend=rectify.search_backend, graph=self.graph)
        if rectify.rectify_images:
            image_queries = net.encode_images(images)
            text_prototypes, _ = synthesize_prototypes(
                image_queries, bank_images, bank_texts, net.text_refiner, rectify.k, **options
            )
            terms["image_rectify_loss"] = rectify.weight * info_nce(image_queries, text_prototypes, cfg.temperature)
        if rectify.rectify_texts:
            text_queries = net.encode_texts(texts)
            image_prototypes, _ = synthesize_prototypes(
                text_queries, bank_texts, bank_images, net.image_refiner, rectify.k, **options
            )
            terms["text_rectify_loss"] = rectify.weight * info_nce(text_queries, image_prototypes, cfg.temperature)
        return terms

    def _sharded_rectify_terms(self, net: Network, bank: MemoryBank, indices: np.ndarray) -> dict[str, Tensor]:
        """Rectification terms with the bank spread over the ranks; empty when it cannot give k neighbours."""
        cfg, rectify = self.config.train, self.config.rectify
        images, texts = self._inputs(self.train_data, indices)
        query_ids = torch.from_numpy(indices).to(self.device)
        bank_images, bank_texts, bank_ids = bank.valid()
        terms = {}
        directions = []
        if rectify.rectify_images:
            directions.append(("image_rectify_loss", net.encode_images(images), bank_images, bank_texts, net.text_refiner))
        if rectify.rectify_texts:
            directions.append(("text_rectify_loss", net.encode_texts(texts), bank_texts, bank_images, net.image_refiner))
        for name, queries, keys, partners, refiner in directions:
            found = dist_utils.sharded_neighbourhood(
                queries.detach(), query_ids, keys, partners, bank_ids, rectify.k, backend=rectify.search_backend
            )
            if found is None:
                return {}
            if queries.size(0) >= 2:
                prototypes = refine_neighbourhood(queries, found, refiner, self.graph)
                terms[name] = rectify.weight * info_nce(queries, prototypes, cfg.temperature)
        return terms

    # ------------------------------------------------------------------ evaluation

    def encode(self, net: Network, data: PairData) -> tuple[Tensor, Tensor]:
        """Return eval-mode embeddings of every image and every caption of ``data``."""
        return encode_split(net, data, self.device)

    def evaluate(self, data: PairData) -> dict[str, float]:
        """Return retrieval metrics of the ensemble of all networks on ``data``."""
        encoded = [self.encode(net, data) for net in self.networks]
        for name, (images, texts) in zip(NET_NAMES, encoded):
            if not (bool(torch.isfinite(images).all()) and bool(torch.isfinite(texts).all())):
                raise NonFiniteLossError(
                    f"net {name} gives NaN or infinite embeddings on split {data.split.split!r}; "
                    f"{self._last_good_checkpoint()}. Check the features of that split for extreme values, "
                    "or lower train.lr."
                )
        return retrieval_metrics(
            [images for images, _ in encoded],
            [texts for _, texts in encoded],
            torch.from_numpy(data.caption_to_image),
            shard_size=self.config.train.eval_shard_size,
        )


@torch.no_grad()
def _bank_digest(bank: MemoryBank) -> str:
    """Return a hash of a bank's valid entries (compared across ranks by the distributed test)."""
    images, texts, ids = bank.valid()
    digest = hashlib.sha1()
    for part in (images, texts, ids):
        digest.update(part.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def encode_split(net: Network, data: PairData, device: torch.device, batch_size: int = 512) -> tuple[Tensor, Tensor]:
    """Return eval-mode embeddings ``(M, D)`` of every image and ``(N, D)`` of every caption."""
    net.eval()
    image_parts, text_parts = [], []
    for start in range(0, data.num_images, batch_size):
        rows = np.arange(start, min(start + batch_size, data.num_images))
        image_parts.append(net.encode_images(to_device(data.image_inputs(rows), device)))
    for start in range(0, data.num_pairs, batch_size):
        rows = np.arange(start, min(start + batch_size, data.num_pairs))
        text_parts.append(net.encode_texts(to_device(data.texts(rows), device)))
    return torch.cat(image_parts), torch.cat(text_parts)


def bank_ready(bank: MemoryBank | None, k: int) -> bool:
    """Return whether every query can get ``k`` neighbours after its own pair is excluded."""
    if bank is None or bank.size <= k:
        return False
    copies = int(torch.bincount(bank.valid()[2].clamp(min=0)).max())
    return bank.size - copies >= k


def copy_network(network: Network) -> Network:
    """Return an independent copy (the peer starts as an exact copy when it searches the other bank)."""
    return copy.deepcopy(network)
