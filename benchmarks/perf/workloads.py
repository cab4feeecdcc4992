"""Training workloads for the step, graph and scaling benchmarks.

A workload is a trainer built the way ``in2r-graph train`` builds one
(configuration, data loading, noise, networks), minus the diagnostics hooks,
whose ground-truth checks are not part of training. The data is the
Flickr8k precomp folder when it exists. Otherwise a synthetic folder of the
same shapes is written to a temporary folder: 6,000 train images with 1,280-d
global features and 9 x 256 region features, and 5 captions per image with
384-d caption embeddings. Timings do not depend on the feature values, except the
clean/noisy split, which decides how many batches an epoch has.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from in2r_graph.config import Config
from in2r_graph.data.pairs import PairData, subset_split
from in2r_graph.training.session import build_networks, input_sizes, load_run_data
from in2r_graph.training.trainer import Trainer

WORDS = [f"word{index}" for index in range(2000)]
SETUPS = {
    # Flickr8k global CNN features and sentence embeddings: MLP encoders, the default setup.
    "global+minilm": ["data.image_features=ims", "data.text_features=minilm"],
    # Region features pooled with GPO and a bi-GRU over the raw captions: the encoder types of the
    # reference design, on 9 region features of 256 dims where it uses 36 of 2,048.
    "regions+gru": ["data.image_features=regions", "data.text_features="],
}


@dataclass
class Dataset:
    """A precomp dataset folder, what it contains, and the temporary folder to delete afterwards."""

    root: Path
    name: str
    description: str
    temporary: Path | None = None

    def cleanup(self) -> None:
        if self.temporary is not None:
            shutil.rmtree(self.temporary, ignore_errors=True)


def write_synthetic_split(folder: Path, split: str, num_images: int, rng: np.random.Generator) -> None:
    """Write one synthetic split with Flickr8k's shapes into ``folder``."""
    captions_per_image = 5
    num_captions = num_images * captions_per_image
    np.save(folder / f"{split}_ims.npy", rng.standard_normal((num_images, 1280), dtype=np.float32).astype(np.float16))
    np.save(
        folder / f"{split}_regions.npy", rng.standard_normal((num_images, 9, 256), dtype=np.float32).astype(np.float16)
    )
    embeddings = rng.standard_normal((num_captions, 384), dtype=np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    np.save(folder / f"{split}_caps_minilm.npy", embeddings.astype(np.float16))
    lengths = rng.integers(8, 16, size=num_captions)
    lines = [" ".join(rng.choice(WORDS, size=length)) for length in lengths]
    (folder / f"{split}_caps.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def synthetic_dataset(train_images: int, eval_images: int = 200, seed: int = 0) -> Dataset:
    """Write a synthetic precomp dataset with ``train_images`` train images to a temporary folder."""
    temporary = Path(tempfile.mkdtemp(prefix="in2r-perf-"))
    folder = temporary / "synthetic"
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_images), ("dev", eval_images), ("test", eval_images)):
        write_synthetic_split(folder, split, count, rng)
    description = f"synthetic, Flickr8k shapes, {train_images} train images"
    return Dataset(temporary, "synthetic", description, temporary)


def repeated_dataset(source: Path, times: int, base_images: int | None = None) -> Dataset:
    """Write the train split of ``source`` repeated ``times`` times to a temporary folder.

    ``base_images`` keeps only the first images of the split (and their
    captions) before repeating. Dev and test are linked, not copied. The
    folder is outside the repository and :meth:`Dataset.cleanup` deletes it.
    """
    temporary = Path(tempfile.mkdtemp(prefix="in2r-perf-"))
    folder = temporary / source.name
    folder.mkdir()
    for path in source.iterdir():
        if path.is_file() and not path.name.startswith("train_"):
            (folder / path.name).symlink_to(path.resolve())
    images = np.load(source / "train_ims.npy", mmap_mode="r")
    base_images = images.shape[0] if base_images is None else min(base_images, images.shape[0])
    lines = (source / "train_caps.txt").read_text(encoding="utf-8").splitlines()
    per_image = len(lines) // images.shape[0]
    for stem, rows in (("ims", base_images), ("regions", base_images), ("caps_minilm", base_images * per_image)):
        path = source / f"train_{stem}.npy"
        if path.exists():
            np.save(folder / path.name, np.concatenate([np.load(path, mmap_mode="r")[:rows]] * times))
    (folder / "train_caps.txt").write_text("\n".join(lines[: base_images * per_image] * times) + "\n", encoding="utf-8")
    ids = source / "train_image_ids.txt"
    if ids.exists():
        names = ids.read_text(encoding="utf-8").splitlines()[:base_images]
        repeated = [f"{name}#{copy_index}" for copy_index in range(times) for name in names]
        (folder / ids.name).write_text("\n".join(repeated) + "\n", encoding="utf-8")
    description = f"{source.name} train split ({base_images} images) repeated {times}x"
    return Dataset(temporary, source.name, description, temporary)


def pick_dataset(flickr8k: Path, synthetic_images: int) -> Dataset:
    """Return the Flickr8k folder when it exists, else a synthetic one of ``synthetic_images`` images."""
    if flickr8k.is_dir():
        return Dataset(flickr8k.parent, flickr8k.name, f"{flickr8k.name} (real features)")
    return synthetic_dataset(synthetic_images)


def make_config(dataset: Dataset, method: str, overrides: list[str]) -> Config:
    """Return the default configuration on ``dataset`` with ``method`` and ``key=value`` overrides."""
    config = Config()
    settings = [
        f"data.root={dataset.root}",
        f"data.dataset={dataset.name}",
        f"train.method={method}",
        "train.progress=false",
        "train.device=cpu",
        *overrides,
    ]
    for item in settings:
        key, value = item.split("=", 1)
        config.set(key, value)
    return config


def build_trainer(config: Config, run_dir: Path) -> Trainer:
    """Load the data of ``config`` and build its trainer without diagnostics hooks.

    The global seeds are set from ``train.seed`` first, as the command line
    does, so two trainers of one configuration start from the same weights.
    """
    torch.manual_seed(config.train.seed)
    np.random.seed(config.train.seed)
    data = load_run_data(config)
    networks = build_networks(config, input_sizes(data))
    train = PairData(data.train, data.caption_to_image, data.vocab)
    dev = PairData(data.dev, data.dev.clean_caption_to_image(), data.vocab)
    return Trainer(config, networks, train, dev, run_dir=run_dir, device=torch.device("cpu"))


def copy_encoders(source: Trainer, target: Trainer) -> None:
    """Give ``target``'s networks the encoder weights of ``source``'s, so both run the same encoders."""
    for source_net, target_net in zip(source.networks, target.networks):
        target_net.image_encoder.load_state_dict(copy.deepcopy(source_net.image_encoder.state_dict()))
        target_net.text_encoder.load_state_dict(copy.deepcopy(source_net.text_encoder.state_dict()))


def limit_pairs(trainer: Trainer, count: int) -> None:
    """Cut the trainer's training set to its first ``count`` captions, with their clean images.

    The vocabulary is kept, so token ids and the text encoder's embedding
    table stay those of the whole split.
    """
    split = subset_split(trainer.train_data.split, count)
    trainer.train_data = PairData(split, split.clean_caption_to_image(), trainer.train_data.vocab)


def fill_bank(trainer: Trainer, seed: int = 0) -> None:
    """Fill every network's memory bank to capacity with random unit embeddings of random pairs."""
    generator = torch.Generator().manual_seed(seed)
    for net in trainer.networks:
        if net.bank is None:
            continue
        capacity, dim = net.bank.capacity, net.bank.dim
        images = torch.nn.functional.normalize(torch.randn(capacity, dim, generator=generator), dim=1)
        texts = torch.nn.functional.normalize(torch.randn(capacity, dim, generator=generator), dim=1)
        ids = torch.randint(trainer.train_data.num_pairs, (capacity,), generator=generator)
        net.bank.push(images, texts, ids)


def fixed_split(num_pairs: int, labeled_pairs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return a labeled mask with ``labeled_pairs`` trusted pairs and clean probabilities to match."""
    rng = np.random.default_rng(seed)
    labeled = np.zeros(num_pairs, dtype=bool)
    labeled[rng.permutation(num_pairs)[:labeled_pairs]] = True
    prob = np.where(labeled, rng.uniform(0.5, 1.0, num_pairs), rng.uniform(0.0, 0.5, num_pairs))
    return labeled, prob
