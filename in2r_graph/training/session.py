"""Assemble a run from a configuration: data, noise, networks, trainer; re-evaluate checkpoints."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import torch

from .._filelock import LockHeld, exclusive_lock
from ..config import Config, ConfigError, dump_config
from ..data.errors import DataError
from ..data.noise import load_noise, make_noise, noisy_caption_to_image, realised_noise_rate
from ..data.pairs import PairData, subset_split
from ..data.precomp import PrecompSplit, bundled_dataset_root, load_dataset
from ..data.vocab import Vocabulary
from ..data.word_vectors import read_word_vectors
from ..search import list_backends
from . import distributed as dist_utils
from .checkpoint import CheckpointError, load_checkpoint, remove_stale_temporaries, save_array_atomic, write_bytes_atomic

# The network, trainer and probe modules import PyTorch Geometric, which takes
# seconds. They are imported where first needed, so invalid data and settings
# are reported before that cost.
if TYPE_CHECKING:
    from .network import Network
    from .trainer import Trainer

logger = logging.getLogger(__name__)

BUNDLED_DATASET = "openclipart"

# Settings that may differ between a run and its resumption.
# Held by the training process that writes a run directory.
LOCK_FILE = ".lock"

RESUMABLE_CHANGES = {"train.epochs", "train.progress", "train.device", "train.num_threads", "train.out_dir", "train.run_name"}


@dataclass
class RunData:
    """The splits of a run and its training noise.

    ``true_clean`` is the ground truth of the injected noise. It is read only
    by the split diagnostics; the trainer never receives it.
    """

    root: Path
    train: PrecompSplit
    dev: PrecompSplit
    test: PrecompSplit
    caption_to_image: np.ndarray
    true_clean: np.ndarray
    realised_noise: float
    vocab: Vocabulary | None

    def fingerprint(self) -> dict[str, Any]:
        """Return plain values that identify the training data and its noise."""
        digest = hashlib.sha1(np.ascontiguousarray(self.caption_to_image, dtype=np.int64).tobytes()).hexdigest()
        return {"dataset": str(self.root), "num_pairs": int(self.caption_to_image.size), "noise_sha1": digest}


def dataset_root(config: Config) -> Path:
    """Return the dataset folder named by the configuration (the bundled one by default)."""
    base = Path(config.data.root) if config.data.root else bundled_dataset_root()
    return base / config.data.dataset


def load_run_data(config: Config) -> RunData:
    """Load the three splits, apply or generate the noise and build the vocabulary."""
    data = config.data
    root = dataset_root(config)
    # load_dataset also checks that image and caption feature sizes agree between splits.
    names = list(dict.fromkeys((data.train_split, data.dev_split, data.test_split)))
    splits = load_dataset(root, names, image_features=data.image_features, text_features=data.text_features)
    train, dev, test = splits[data.train_split], splits[data.dev_split], splits[data.test_split]
    per_image = train.captions_per_image

    if data.noise_file:
        caption_to_image = load_noise(data.noise_file, data.noise_convention, train.num_images, per_image)
        if data.max_train_pairs is not None:
            # Keep every image: the noisy mapping may point anywhere in the split.
            count = min(data.max_train_pairs, train.num_captions)
            caption_to_image = caption_to_image[:count]
            embeddings = train.caption_embeddings
            train = dataclasses.replace(
                train,
                captions=train.captions[:count],
                caption_embeddings=None if embeddings is None else embeddings[:count],
            )
    else:
        if data.max_train_pairs is not None:
            train = subset_split(train, data.max_train_pairs)
        noise = make_noise(train.num_images, per_image, data.noise_ratio, data.noise_convention, data.noise_seed)
        caption_to_image = noisy_caption_to_image(
            noise, data.noise_convention, train.num_images, per_image, source="generated noise"
        )
    clean = np.arange(caption_to_image.size) // per_image
    true_clean = caption_to_image == clean
    realised = realised_noise_rate(caption_to_image, per_image)

    vocab = None
    if not data.text_features:
        vocab = Vocabulary.build(train.captions)
    return RunData(root, train, dev, test, caption_to_image, true_clean, realised, vocab)


def input_sizes(data: RunData) -> dict[str, Any]:
    """Return the sizes the encoders are built from."""
    images = data.train.images
    embeddings = data.train.caption_embeddings
    return {
        "image_kind": data.train.image_kind,
        "image_dim": int(images.shape[-1]) if data.train.image_kind != "thumbnail" else None,
        "text_dim": None if embeddings is None else int(embeddings.shape[1]),
        "vocab_size": None if data.vocab is None else len(data.vocab),
        "num_pairs": int(data.caption_to_image.size),
    }


def check_bank_capacity(config: Config, num_pairs: int) -> None:
    """Raise :class:`ConfigError` when the memory bank can never serve ``rectify.k`` neighbours.

    A query's own pair is excluded from its neighbours, so a bank must hold at
    least ``k + 1`` pairs before rectification can run.
    """
    from .network import resolve_bank_size

    if config.train.method != "in2r":
        return
    capacity = resolve_bank_size(config, num_pairs)
    k = config.rectify.k
    if k < capacity:
        return
    if config.rectify.bank_size is None:
        origin = f"rectify.bank_size is empty, so the bank holds at most the {num_pairs} training pairs"
    else:
        origin = f"rectify.bank_size={config.rectify.bank_size}"
    raise ConfigError(
        f"rectify.k={k} is larger than the memory bank allows ({origin}); a query needs k neighbours besides "
        f"its own pair, so expected rectify.k < {capacity}. Lower rectify.k or use more training pairs"
    )


def check_input_files(config: Config, *, word_vectors: bool = True) -> None:
    """Raise :class:`DataError` for input files named in the configuration that do not exist.

    This runs before any data is read, so a mistyped path fails at once.

    Args:
        word_vectors: Also check ``model.word_vectors``. A resumed run does
            not read that file, because its checkpoint contains the weights.
    """
    files = [("data.noise_file", config.data.noise_file)]
    if word_vectors:
        files.append(("model.word_vectors", config.model.word_vectors))
    for key, value in files:
        if value and not Path(value).is_file():
            state = "is a folder" if Path(value).is_dir() else "not found"
            hint = (
                " in2r-graph never downloads word vectors: download them yourself and pass the local path."
                if key == "model.word_vectors"
                else ""
            )
            raise DataError(f"{key}: file {value} {state}; expected an existing local file.{hint}")


def load_word_vectors(config: Config, networks: list[Network], vocab: Vocabulary | None) -> None:
    """Copy the vectors of ``model.word_vectors`` into each network's bi-GRU word embedding.

    Words that the file lacks keep their random initialisation.
    """
    path = config.model.word_vectors
    if not path:
        return
    if vocab is None:
        raise ConfigError(
            f"model.word_vectors={path!r} needs the bi-GRU text encoder, which trains on raw captions; "
            "set data.text_features to empty"
        )
    vectors, found = read_word_vectors(path, vocab.words, config.model.word_dim)
    rows = torch.from_numpy(found)
    for net in networks:
        encoder = net.text_encoder
        weights = encoder.word_embedding.weight.detach().clone()  # (vocab_size, word_dim)
        weights[rows] = torch.from_numpy(vectors[found]).to(weights.dtype)
        encoder.load_word_vectors(weights)


def build_networks(config: Config, sizes: dict[str, Any]) -> list[Network]:
    """Build one network for ``contrastive`` (two with ``train.ensemble``) and two for the co-trained methods."""
    from .network import build_network
    from .trainer import copy_network

    rectifying = config.train.method == "in2r"
    first = build_network(config, with_rectification=rectifying, **sizes)
    if config.train.method == "contrastive" and not config.train.ensemble:
        return [first]
    if rectifying and config.rectify.bank_owner == "peer":
        # Searching the peer's bank only returns sensible neighbours while the two
        # embedding spaces stay close, so the peer starts as an exact copy.
        return [first, copy_network(first)]
    return [first, build_network(config, with_rectification=rectifying, **sizes)]


def make_split_hook(true_clean: np.ndarray):
    """Return a trainer hook that scores each split against the ground truth."""
    from ..evaluation.diagnostics import split_quality

    def hook(name: str, labeled: np.ndarray, clean_prob: np.ndarray) -> dict[str, float]:
        quality = split_quality(labeled, true_clean, clean_prob)
        scores = {
            "split_precision": quality["clean_precision"],
            "split_recall": quality["clean_recall"],
            "split_auc": quality.get("auc", math.nan),
        }
        # A score without a defined value (the AUC when no pair is truly noisy) is left out, not logged as NaN.
        return {key: value for key, value in scores.items() if math.isfinite(value)}

    return hook


def build_trainer(
    config: Config, data: RunData, run_dir: Path, device: torch.device, *, pretrained_words: bool = True
) -> Trainer:
    """Build networks and the trainer for ``config`` on ``data``.

    Args:
        pretrained_words: Load ``model.word_vectors`` into the networks. A
            resumed run passes False because its checkpoint contains the weights.
    """
    from .probe import make_rectification_probe
    from .trainer import Trainer

    sizes = input_sizes(data)
    check_bank_capacity(config, sizes["num_pairs"])
    backends = list_backends()
    if config.train.method == "in2r" and config.rectify.search_backend not in backends:
        raise ConfigError(
            f"rectify.search_backend={config.rectify.search_backend!r} is unknown; the registered backends are "
            f"{', '.join(backends)}"
        )
    try:
        networks = build_networks(config, sizes)
    except ValueError as error:
        # Invalid refiner names and options surface here; they are configuration errors.
        raise ConfigError(f"invalid model or refiner settings: {error}") from error
    if pretrained_words:
        load_word_vectors(config, networks, data.vocab)
    train = PairData(data.train, data.caption_to_image, data.vocab)
    dev = PairData(data.dev, data.dev.clean_caption_to_image(), data.vocab)
    extra = {
        "vocab": None if data.vocab is None else data.vocab.to_dict(),
        "fingerprint": data.fingerprint(),
        "sizes": sizes,
    }
    return Trainer(
        config,
        networks,
        train,
        dev,
        run_dir=run_dir,
        device=device,
        split_hook=make_split_hook(data.true_clean),
        epoch_hook=make_rectification_probe(
            np.arange(data.caption_to_image.size) // data.train.captions_per_image, data.true_clean, seed=config.train.seed
        ),
        extra_state=extra,
    )


def check_resumable(saved: dict[str, Any], config: Config, data: RunData) -> None:
    """Raise :class:`ConfigError` when a checkpoint does not belong to this configuration and data."""
    saved_config = saved["config"]
    current = config.to_dict()
    defaults = Config().to_dict()
    for section, values in current.items():
        for key, value in values.items():
            name = f"{section}.{key}"
            if name in RESUMABLE_CHANGES:
                continue
            # A key added to the configuration after the run was saved gets its
            # default, which keeps the behaviour of the version that saved it.
            before = saved_config.get(section, {}).get(key, defaults[section][key])
            if before != value:
                raise ConfigError(
                    f"cannot resume: {name} was {before!r} in the saved run but is {value!r} now; "
                    "resume with the saved configuration or start a new run"
                )
    finished = int(saved.get("epoch", 0))
    if config.train.epochs < finished:
        raise ConfigError(
            f"cannot resume: the saved run has finished {finished} epochs, more than train.epochs="
            f"{config.train.epochs}; give --epochs {finished} or more, or evaluate the run as it is"
        )
    fingerprint = data.fingerprint()
    for key, value in saved.get("fingerprint", {}).items():
        if fingerprint.get(key) != value:
            raise ConfigError(
                f"cannot resume: training data {key} was {value!r} in the saved run but is "
                f"{fingerprint.get(key)!r} now (different dataset or noise file)"
            )


def networks_from_checkpoint(state: dict[str, Any], device: torch.device) -> tuple[Config, list[Network]]:
    """Rebuild the networks stored in a checkpoint; raise CheckpointError for a file of another kind."""
    if not isinstance(state, dict) or not {"config", "sizes", "networks"} <= set(state):
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"not an in2r-graph checkpoint: expected the keys config, sizes and networks, found {found}"
        )
    config = Config.from_dict(state["config"], source="checkpoint")
    networks = build_networks(config, state["sizes"])
    for net, net_state in zip(networks, state["networks"]):
        net.load_state_dict(net_state)
        net.to(device).eval()
    return config, networks


def describe_noise(config: Config, realised: float) -> str:
    """Return the noise of a run in words: convention, where it came from and the realised rate."""
    source = (
        f"from {config.data.noise_file}"
        if config.data.noise_file
        else f"{100 * config.data.noise_ratio:.1f}% requested"
    )
    return f"{config.data.noise_convention} convention, {source}, {100 * realised:.2f}% realised"


def _log_data(config: Config, data: RunData) -> None:
    logger.info(
        "data %s: %d training pairs (%d images), dev %d images, test %d images; noise: %s",
        data.root,
        data.caption_to_image.size,
        data.train.num_images,
        data.dev.num_images,
        data.test.num_images,
        describe_noise(config, data.realised_noise),
    )


def resolve_device(name: str) -> torch.device:
    """Return the device for ``train.device`` (``auto`` picks CUDA when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device {name!r} is invalid; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {name!r} was requested but CUDA is not available; use the CPU "
            "(train: --set train.device=cpu, evaluate: --device cpu)"
        )
    return device


def run_training(
    config: Config,
    *,
    resume_dir: str | Path | None = None,
    on_start: Callable[[Path], Any] | None = None,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Train one run end to end and return its summary (also written to ``summary.json``).

    Nothing is written before the data, the noise and the networks have been
    built, so an invalid input leaves no run directory behind. Every file of
    the run directory is replaced atomically, so a killed process leaves the
    previous version of each file, never a partial one.

    Args:
        config: the resolved configuration.
        resume_dir: a run directory to continue from its last finished epoch.
            A run directory without a checkpoint (stopped during its first
            epoch) trains again from the start.
        on_start: called with the run directory once it exists (the CLI
            attaches its log file there); on rank 0 only under torchrun.
        device: the device to train on; by default from ``train.device``.
            Under torchrun the CLI passes each rank's device, and only rank 0
            writes the run directory.

    Raises:
        KeyboardInterrupt: with a message naming the saved epoch and the
            resume command, when training is interrupted.
        ConfigError, DataError, CheckpointError: for invalid settings, input
            files or checkpoints, before the run directory is created or
            changed.
        NonFiniteLossError: when a loss, a weight or an embedding becomes NaN
            or infinite.
    """
    device = device or resolve_device(config.train.device)
    main_process = dist_utils.is_main_process()
    check_input_files(config, word_vectors=resume_dir is None)
    data = load_run_data(config)
    _log_data(config, data)
    with contextlib.ExitStack() as held:
        saved = None
        if resume_dir is not None:
            run_dir = Path(resume_dir)
            if main_process:
                # Taken before anything in the folder is read or cleaned: another
                # process may be writing a checkpoint there.
                held.enter_context(run_directory_lock(run_dir))
            saved = _load_resume_checkpoint(run_dir)
        else:
            name = config.train.run_name or time.strftime(f"%Y%m%d-%H%M%S-{config.train.method}")
            out_dir = Path(config.train.out_dir)
            blocking = next((path for path in (out_dir, *out_dir.parents) if path.exists() and not path.is_dir()), None)
            if blocking is not None:
                raise ConfigError(f"train.out_dir={str(out_dir)!r} cannot hold run folders: {blocking} is a file, not a folder")
            run_dir = out_dir / name
            if run_dir.exists() and any(run_dir.iterdir()):
                raise ConfigError(f"run directory {run_dir} already exists; choose another run name or resume it")
        # Every rank checks the folder before rank 0 creates it.
        dist_utils.barrier()
        trainer = build_trainer(config, data, run_dir, device, pretrained_words=saved is None)
        if saved is not None:
            check_resumable(saved, config, data)
            trainer.load_state_dict(saved)
            logger.info("resuming %s after epoch %d", run_dir, trainer.epoch)

        if main_process:
            try:
                # A new run takes its folder exclusively, so two runs started in the same second cannot share it.
                empty = run_dir.is_dir() and not any(run_dir.iterdir())
                run_dir.mkdir(parents=True, exist_ok=resume_dir is not None or empty)
            except FileExistsError:
                raise ConfigError(f"run directory {run_dir} was created by another run; choose another run name") from None
            if resume_dir is None:
                held.enter_context(run_directory_lock(run_dir))
            if on_start is not None:
                on_start(run_dir)
            dump_config(config, run_dir / "config.yaml")
            save_array_atomic(run_dir / "train_caption_to_image.npy", data.caption_to_image.astype(np.int64))
        dist_utils.barrier()
        logger.info("run directory: %s (device %s)", run_dir, device)

        started = time.monotonic()
        try:
            trainer.fit()
        except KeyboardInterrupt:
            raise KeyboardInterrupt(_interrupt_message(trainer, run_dir)) from None
        summary = test_summary(trainer, data, run_dir, time.monotonic() - started)
        if main_process:
            write_bytes_atomic(run_dir / "summary.json", json.dumps(summary, indent=2).encode("utf-8"))
        return summary


@contextlib.contextmanager
def run_directory_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` while training writes to it.

    Raises:
        ConfigError: when another process holds the lock (for example the
            same ``--resume`` started twice).
    """
    try:
        with exclusive_lock(run_dir / LOCK_FILE, wait=False):
            yield
    except LockHeld as held:
        raise ConfigError(
            f"run directory {run_dir} is in use by another training process (pid {held.owner}); "
            "wait for it to finish or stop it before resuming"
        ) from None


def _load_resume_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """Return the last checkpoint of ``run_dir``, or None when no epoch has finished."""
    folder = run_dir / "checkpoints"
    remove_stale_temporaries(run_dir)
    remove_stale_temporaries(folder)
    last = folder / "last.pt"
    if last.is_file():
        return load_checkpoint(last)
    if (folder / "best.pt").is_file():
        raise CheckpointError(
            f"cannot resume {run_dir}: {last} is missing but best.pt exists, so the run's state after its last "
            "epoch is lost; evaluate best.pt with `in2r-graph evaluate` or start a new run"
        )
    logger.warning("%s has no finished epoch (no %s); training starts again from epoch 1", run_dir, last)
    return None


def _interrupt_message(trainer: Trainer, run_dir: Path) -> str:
    command = f"in2r-graph train --resume {shlex.quote(str(run_dir))}"
    if trainer.saved_epoch == 0:
        return f"interrupted in epoch 1, so no epoch was saved. Start it again with: {command}"
    return (
        f"interrupted; epoch {trainer.saved_epoch} is the last finished epoch and is saved in "
        f"{run_dir / 'checkpoints' / 'last.pt'}. Continue with: {command}"
    )


def test_summary(trainer: Trainer, data: RunData, run_dir: Path, seconds: float) -> dict[str, Any]:
    """Evaluate the best and the last checkpoint on the test split."""
    test = PairData(data.test, data.test.clean_caption_to_image(), data.vocab)
    last_metrics = trainer.evaluate(test)
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt", map_location=trainer.device)
    for net, state in zip(trainer.networks, best["networks"]):
        net.load_state_dict(state)
    rows = {
        f"best dev (epoch {trainer.best_epoch + 1})": trainer.evaluate(test),
        f"last (epoch {trainer.epoch})": last_metrics,
    }
    last_record = trainer.history[-1] if trainer.history else {}
    precisions = [value for key, value in last_record.items() if key.endswith("split_precision")]
    recalls = [value for key, value in last_record.items() if key.endswith("split_recall")]
    split = {"precision": float(np.mean(precisions)), "recall": float(np.mean(recalls))} if precisions else {}
    return {
        "method": trainer.config.train.method,
        "dataset": str(data.root),
        "run_dir": str(run_dir),
        "realised_noise": data.realised_noise,
        "best_epoch": trainer.best_epoch,
        "best_dev_rsum": trainer.best_rsum,
        "test_images": data.test.num_images,
        "test_captions": data.test.num_captions,
        "test": rows,
        "split": split,
        "last_record": {key: value for key, value in last_record.items() if isinstance(value, (int, float, str))},
        "seconds": seconds,
    }
