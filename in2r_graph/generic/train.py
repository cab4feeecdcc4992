"""Train IN2R (or a baseline) on any paired data with two user encoders.

:func:`train_paired` runs the same trainer, memory bank, neighbour search,
graph refiners, clean/noisy split and retrieval evaluation as the image-text
command line, on a paired dataset of any two modalities.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Config, dump_config, validate_config
from ..evaluation.retrieval import RECALL_KS
from ..training.checkpoint import load_checkpoint
from ..training.network import Network, build_rectification
from ..training.session import make_split_hook, resolve_device
from ..training.trainer import Trainer
from .dataset import Collate, PairedSplit, RowView, SideBatch, clean_labels

logger = logging.getLogger(__name__)

# An encoder, or a function that builds a new one. A function gives each
# co-trained network its own initialisation.
EncoderSpec = nn.Module | Callable[[], nn.Module]


class SideEncoder(nn.Module):
    """A user encoder of one side, made to return L2-normalised ``(B, D)`` embeddings.

    Args:
        module: Maps a collated batch of the side to ``(B, D)`` embeddings.
        side: ``"a"`` or ``"b"``, for error messages.

    Raises:
        TypeError: In ``forward``, if the module does not return a 2-D tensor.

    Shapes:
        - batch: a :class:`SideBatch` or the collated batch itself
        - output: (B, D), L2-normalised
    """

    def __init__(self, module: nn.Module, side: str) -> None:
        super().__init__()
        self.module = module
        self.side = side

    def forward(self, batch: Any) -> Tensor:
        value = batch.value if isinstance(batch, SideBatch) else batch
        output = self.module(value)
        if not isinstance(output, Tensor) or output.dim() != 2:
            found = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            raise TypeError(f"encoder_{self.side} returned {found}; expected a tensor of shape (batch, embed_dim)")
        return F.normalize(output, dim=-1)


@dataclass
class PairedResult:
    """Result of :func:`train_paired`: trained encoders, metrics and the run directory.

    Metric names are modality-neutral: ``a2b_r1`` is Recall@1 with side-a
    queries and side-b targets, ``b2a_r1`` the reverse, ``rsum`` the sum of
    the six recalls (in percent). ``history`` has one record per epoch with
    losses, dev metrics and, when clean labels were given, the split's
    precision and recall against them.

    Attributes:
        run_dir: Folder with ``config.yaml``, ``metrics.csv``,
            ``summary.json`` and ``checkpoints/{best,last}.pt``. The columns
            of ``metrics.csv`` keep the trainer's names, in which side a is
            "image" and side b is "text" (``dev_i2t_r1`` is ``dev_a2b_r1``).
        best_epoch: 0-based epoch with the best dev rSum.
        best_dev_rsum: Dev rSum of that epoch.
        epochs: Epochs trained.
        test: ``{"best": metrics, "last": metrics}`` on the test pairs, or
            empty when no test set was given.
        split: Mean precision and recall of the last clean/noisy split
            against the clean labels, or empty.
        history: Per-epoch records.
        encoders: One ``(encoder_a, encoder_b)`` tuple per network, with the
            weights of the best dev epoch and L2-normalised outputs.
    """

    run_dir: Path
    best_epoch: int
    best_dev_rsum: float
    epochs: int
    test: dict[str, dict[str, float]]
    split: dict[str, float]
    history: list[dict[str, Any]]
    encoders: list[tuple[nn.Module, nn.Module]]
    collates: dict[str, Collate | None] = field(default_factory=dict, repr=False)

    @torch.no_grad()
    def embed(self, items: Sequence[Any], side: str, batch_size: int = 256) -> list[Tensor]:
        """Embed items of one side with every trained network, in eval mode.

        Average the similarity matrices of the networks to score an ensemble.

        Shapes:
            - output: one (len(items), D) tensor per network
        """
        if side not in ("a", "b"):
            raise ValueError(f"side={side!r} is invalid; expected 'a' or 'b'")
        collate = self.collates.get(side) or torch.utils.data.default_collate
        position = 0 if side == "a" else 1
        outputs = []
        for pair in self.encoders:
            encoder = pair[position]
            encoder.eval()
            device = _module_device(encoder)
            parts = []
            for start in range(0, len(items), batch_size):
                batch = SideBatch(collate([items[i] for i in range(start, min(start + batch_size, len(items)))]))
                parts.append(encoder(batch.to(device)).cpu())
            outputs.append(torch.cat(parts))
        return outputs


def train_paired(
    encoder_a: EncoderSpec,
    encoder_b: EncoderSpec,
    dataset: Sequence[Any],
    *,
    dev: Sequence[Any] | None = None,
    test: Sequence[Any] | None = None,
    clean: Any = None,
    config: Config | Mapping[str, Any] | None = None,
    run_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    collate_a: Collate | None = None,
    collate_b: Collate | None = None,
    dev_fraction: float = 0.1,
) -> PairedResult:
    """Train on noisy pairs of any two modalities and return the trained encoders and metrics.

    Side a takes the place of the images and side b that of the captions:
    suspected-noisy side-a items get side-b prototypes from the memory bank,
    and the reverse. The method is ``config.train.method``: ``in2r`` (default),
    ``co-divide`` or ``contrastive``.

    Args:
        encoder_a: Module mapping a collated batch of side a to ``(B, D)``
            embeddings; outputs are L2-normalised here. Pass a function that
            returns a new module to give each co-trained network its own
            initialisation. A module is deep-copied for the second network,
            so both start equal.
        encoder_b: The same for side b, with the same output size ``D``.
        dataset: The training pairs: any indexable of ``(a, b)`` items, some
            of them wrong.
        dev: Validation pairs for model selection (best dev rSum), ideally
            clean. ``None`` holds out ``dev_fraction`` of ``dataset``, whose
            pairs carry the training noise.
        test: Optional test pairs, evaluated with the last and the best
            checkpoint.
        clean: Optional ground truth of ``dataset``, one flag per pair.
            Defaults to ``dataset.clean`` when the dataset has that
            attribute. Only the split diagnostics read it.
        config: A :class:`~in2r_graph.config.Config`, a mapping of
            ``"section.key"`` overrides (``{"train.epochs": 5}``), or
            ``None`` for the defaults. The ``data`` section is not used.
            ``model.embed_dim`` is set to the encoders' output size.
        run_dir: Folder for checkpoints and metrics; it must be empty or
            absent. ``None`` makes ``<train.out_dir>/<timestamp>-<method>``.
        device: ``None`` uses ``config.train.device``.
        collate_a: Function that turns a list of side-a items into a batch;
            ``torch.utils.data.default_collate`` when ``None``.
        collate_b: The same for side b.
        dev_fraction: Share of ``dataset`` held out as dev pairs when ``dev``
            is ``None``.

    Returns:
        A :class:`PairedResult` with the trained encoders and metrics.

    Raises:
        ValueError: If a dataset is too small, ``clean`` has the wrong
            length, the encoders disagree on the embedding size, or a
            configuration value is invalid.
        TypeError: If an encoder is neither a module nor a function that
            returns one.
        FileExistsError: If ``run_dir`` exists and is not empty.
    """
    config = resolve_config(config)
    if clean is None:
        clean = getattr(dataset, "clean", None)
    if len(dataset) < 2:
        raise ValueError(f"dataset has {len(dataset)} pairs; expected at least 2")
    labels = None if clean is None else clean_labels(clean, len(dataset))
    if dev is None:
        dataset, dev, labels = _hold_out(dataset, labels, dev_fraction, config.train.seed)
    if len(dev) < 2:
        raise ValueError(f"dev has {len(dev)} pairs; expected at least 2 to rank retrieval candidates")
    if test is not None and len(test) < 2:
        raise ValueError(f"test has {len(test)} pairs; expected at least 2 to rank retrieval candidates")

    train_split = PairedSplit(dataset, collate_a, collate_b, name="train")
    dev_split = PairedSplit(dev, collate_a, collate_b, name="dev")
    test_split = None if test is None else PairedSplit(test, collate_a, collate_b, name="test")
    device = resolve_device(config.train.device if device is None else str(device))
    run_dir = _resolve_run_dir(config, run_dir)

    first_a, first_b = _build_encoder(encoder_a, "a", copy_from=None), _build_encoder(encoder_b, "b", copy_from=None)
    dim = _embedding_dim(first_a, first_b, train_split)
    if config.model.embed_dim != dim:
        logger.info("model.embed_dim set to %d, the output size of the encoders", dim)
        config.model.embed_dim = dim
    networks = _build_networks(config, (encoder_a, encoder_b), (first_a, first_b), train_split.num_pairs)

    trainer = Trainer(
        config,
        networks,
        train_split,
        dev_split,
        run_dir=run_dir,
        device=device,
        split_hook=None if labels is None else make_split_hook(labels),
        extra_state={"paired": {"num_pairs": train_split.num_pairs, "embed_dim": dim}},
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(config, run_dir / "config.yaml")
    logger.info(
        "paired run %s: %d training pairs, %d dev pairs, method %s, device %s",
        run_dir,
        train_split.num_pairs,
        dev_split.num_pairs,
        config.train.method,
        device,
    )
    started = time.monotonic()
    trainer.fit()
    result = _finish(trainer, test_split)
    result.collates = {"a": collate_a, "b": collate_b}
    summary = {
        "method": config.train.method,
        "run_dir": str(run_dir),
        "best_epoch": result.best_epoch,
        "best_dev_rsum": result.best_dev_rsum,
        "test": result.test,
        "split": result.split,
        "seconds": time.monotonic() - started,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return result


def resolve_config(config: Config | Mapping[str, Any] | None) -> Config:
    """Return a validated copy of ``config``, built from ``"section.key"`` overrides when it is a mapping."""
    if config is None:
        resolved = Config()
    elif isinstance(config, Config):
        resolved = copy.deepcopy(config)
    elif isinstance(config, Mapping):
        resolved = Config()
        for key, value in config.items():
            resolved.set(key, value, source="config")
    else:
        raise TypeError(f"config must be a Config, a mapping of 'section.key' overrides or None, got {type(config).__name__}")
    validate_config(resolved)
    return resolved


def neutral_name(key: str) -> str:
    """Translate a trainer metric or loss name to side a / side b terms.

    ``dev_i2t_r1`` becomes ``dev_a2b_r1`` and ``A/image_rectify_loss``
    becomes ``A/a_rectify_loss``.
    """
    replacements = {"i2t": "a2b", "t2i": "b2a", "image": "a", "text": "b"}
    return re.sub(r"(?<![A-Za-z0-9])(i2t|t2i|image|text)(?![A-Za-z0-9])", lambda match: replacements[match.group(1)], key)


def format_paired_table(rows: Mapping[str, Mapping[str, float]]) -> str:
    """Format modality-neutral retrieval metrics as a plain-text table, one row per name.

    Columns are Recall@1/5/10 from side a to side b, the reverse, and rSum.
    """
    columns = [(f"a->b R@{k}", f"a2b_r{k}") for k in RECALL_KS] + [(f"b->a R@{k}", f"b2a_r{k}") for k in RECALL_KS]
    columns.append(("rSum", "rsum"))
    name_width = max([len("name"), *(len(str(name)) for name in rows)])
    lines = ["name".ljust(name_width) + "".join(f"  {title:>8}" for title, _ in columns)]
    for name, metrics in rows.items():
        missing = [key for _, key in columns if key not in metrics]
        if missing:
            raise ValueError(f"rows[{name!r}] is missing {', '.join(missing)}; expected metrics from train_paired")
        lines.append(str(name).ljust(name_width) + "".join(f"  {float(metrics[key]):>8.1f}" for _, key in columns))
    return "\n".join(lines)


def _hold_out(
    dataset: Sequence[Any], labels: np.ndarray | None, fraction: float, seed: int
) -> tuple[Sequence[Any], Sequence[Any], np.ndarray | None]:
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"dev_fraction={fraction} is invalid; expected a share in (0, 1)")
    count = len(dataset)
    dev_count = max(2, round(fraction * count))
    if count - dev_count < 2:
        raise ValueError(
            f"dataset has {count} pairs, too few to hold out {dev_count} dev pairs and keep 2 for training; "
            "pass dev= or more pairs"
        )
    order = np.random.default_rng(seed).permutation(count)
    dev_rows, train_rows = np.sort(order[:dev_count]), np.sort(order[dev_count:])
    logger.warning(
        "no dev set given: holding out %d of %d pairs for model selection; they carry the training noise",
        dev_count,
        count,
    )
    train_labels = None if labels is None else labels[train_rows]
    return RowView(dataset, train_rows), RowView(dataset, dev_rows), train_labels


def _resolve_run_dir(config: Config, run_dir: str | Path | None) -> Path:
    if run_dir is None:
        name = config.train.run_name or time.strftime(f"%Y%m%d-%H%M%S-{config.train.method}")
        run_dir = Path(config.train.out_dir) / name
    run_dir = Path(run_dir)
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise FileExistsError(f"run_dir {run_dir} already exists and is not empty; choose another folder")
    return run_dir


def _build_encoder(spec: EncoderSpec, side: str, copy_from: nn.Module | None) -> SideEncoder:
    """Wrap a new encoder: the module itself (first network), a deep copy of it, or a factory's output."""
    if isinstance(spec, nn.Module):
        module = spec if copy_from is None else copy.deepcopy(copy_from)
    elif callable(spec):
        module = spec()
        if not isinstance(module, nn.Module):
            raise TypeError(f"encoder_{side}() returned {type(module).__name__}; expected an nn.Module")
    else:
        raise TypeError(f"encoder_{side} must be an nn.Module or a function returning one, got {type(spec).__name__}")
    return SideEncoder(module, side)


def _module_device(module: nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def _embedding_dim(encoder_a: SideEncoder, encoder_b: SideEncoder, split: PairedSplit) -> int:
    """Run both encoders on two training pairs in eval mode and return their common output size."""
    rows = np.arange(min(2, split.num_pairs))
    sizes = {}
    for side, encoder in (("a", encoder_a), ("b", encoder_b)):
        was_training = encoder.training
        encoder.eval()
        output = encoder(split.gather(side, rows).to(_module_device(encoder)))
        encoder.train(was_training)
        if output.shape[0] != rows.size:
            raise ValueError(
                f"encoder_{side} returned {output.shape[0]} rows for a batch of {rows.size} items; expected one per item"
            )
        sizes[side] = int(output.shape[1])
    if sizes["a"] != sizes["b"]:
        raise ValueError(
            f"encoder_a returns {sizes['a']}-dimensional embeddings but encoder_b returns {sizes['b']}; both sides "
            "must map to one joint space of the same size"
        )
    return sizes["a"]


def _build_networks(
    config: Config, specs: tuple[EncoderSpec, EncoderSpec], first: tuple[SideEncoder, SideEncoder], num_pairs: int
) -> list[Network]:
    """Build one network for ``contrastive`` (two with ``train.ensemble``) and two for co-trained methods."""
    rectifying = config.train.method == "in2r"
    networks = [_assemble(config, first, num_pairs, rectifying)]
    if config.train.method == "contrastive" and not config.train.ensemble:
        return networks
    if rectifying and config.rectify.bank_owner == "peer":
        # Searching the peer's bank only finds sensible neighbours while the two
        # embedding spaces stay close, so the peer starts as an exact copy.
        networks.append(copy.deepcopy(networks[0]))
        return networks
    second = tuple(
        _build_encoder(spec, side, copy_from=encoder.module)
        for spec, side, encoder in zip(specs, ("a", "b"), first)
    )
    networks.append(_assemble(config, second, num_pairs, rectifying))
    return networks


def _assemble(config: Config, encoders: tuple[SideEncoder, SideEncoder], num_pairs: int, rectifying: bool) -> Network:
    """Add refiners and a bank to two encoders, with the settings ``build_network`` uses for image-text runs."""
    b_refiner = a_refiner = bank = None
    if rectifying:
        b_refiner, a_refiner, bank = build_rectification(config, num_pairs)
    return Network(encoders[0], encoders[1], text_refiner=b_refiner, image_refiner=a_refiner, bank=bank)


def _finish(trainer: Trainer, test_split: PairedSplit | None) -> PairedResult:
    """Evaluate the last and the best checkpoint on the test pairs and load the best weights."""
    last_metrics = None if test_split is None else _neutral_metrics(trainer.evaluate(test_split))
    best = load_checkpoint(trainer.checkpoint_dir / "best.pt", map_location=trainer.device)
    for net, state in zip(trainer.networks, best["networks"]):
        net.load_state_dict(state)
    test_metrics: dict[str, dict[str, float]] = {}
    if test_split is not None:
        test_metrics = {"best": _neutral_metrics(trainer.evaluate(test_split)), "last": last_metrics}

    history = [{neutral_name(key): value for key, value in record.items()} for record in trainer.history]
    last = history[-1] if history else {}
    precisions = [value for key, value in last.items() if key.endswith("split_precision")]
    recalls = [value for key, value in last.items() if key.endswith("split_recall")]
    split = {"precision": float(np.mean(precisions)), "recall": float(np.mean(recalls))} if precisions else {}
    for net in trainer.networks:
        net.eval()
    return PairedResult(
        run_dir=trainer.run_dir,
        best_epoch=trainer.best_epoch,
        best_dev_rsum=trainer.best_rsum,
        epochs=trainer.epoch,
        test=test_metrics,
        split=split,
        history=history,
        encoders=[(net.image_encoder, net.text_encoder) for net in trainer.networks],
    )


def _neutral_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    return {neutral_name(key): float(value) for key, value in metrics.items()}
