"""Typed run configuration: dataclasses, YAML load/dump and ``key=value`` overrides.

A configuration has four sections (``data``, ``model``, ``rectify``, ``train``).
Each field carries a ``help`` text in its metadata, which the CLI reference and
the error messages reuse. Keys are addressed as ``section.field``; a bare
``field`` is accepted when exactly one section has it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml


class ConfigError(ValueError):
    """An invalid configuration key or value."""


def _field(default: Any, help: str, **kwargs: Any) -> Any:
    if isinstance(default, (list, dict, tuple)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass
class DataConfig:
    """Data source of the pairs and the injected noise."""

    root: str | None = _field(None, "Folder that holds dataset folders; empty means the bundled dataset.")
    dataset: str = _field("openclipart", "Dataset folder name under `root` (precomp layout).")
    image_features: str = _field("ims", "Image file stem: `ims` ({split}_ims.npy or thumbnails) or `regions`.")
    text_features: str | None = _field(
        "minilm", "Caption embedding name ({split}_caps_<name>.npy); empty trains a bi-GRU on raw captions."
    )
    train_split: str = _field("train", "Split used for training.")
    dev_split: str = _field("dev", "Split used for model selection.")
    test_split: str = _field("test", "Split reported at the end.")
    noise_ratio: float = _field(0.4, "Share of training pairs to corrupt, in [0, 1).")
    noise_convention: str = _field("caption", "Noise convention: `caption` (shuffle captions) or `image`.")
    noise_file: str | None = _field(None, "A saved noise index (.npy) to use instead of generating one.")
    noise_seed: int = _field(0, "Seed of the generated noise (independent of the training seed).")
    max_train_pairs: int | None = _field(None, "Keep only the first N training captions (for quick runs).")


@dataclass
class ModelConfig:
    """Encoders of one network (both networks share the architecture)."""

    embed_dim: int = _field(256, "Size of the joint embedding space.")
    image_encoder: str = _field("auto", "`auto`, `global`, `region` or `thumbnail`; auto follows the data.")
    text_encoder: str = _field("auto", "`auto`, `embedding` or `gru`; auto follows `data.text_features`.")
    hidden_dim: int | None = _field(None, "Hidden size of the MLP heads; empty means embed_dim.")
    dropout: float = _field(0.1, "Dropout inside the encoders (also makes the two augmented views differ).")
    word_dim: int = _field(300, "Word embedding size of the bi-GRU text encoder.")
    word_vectors: str | None = _field(
        None,
        "Local text file of pretrained word vectors for the bi-GRU, one `word v1 ... vD` line per word "
        "(GloVe format, D = word_dim); empty keeps random initialisation. Nothing is downloaded.",
    )


@dataclass
class RectifyConfig:
    """Memory bank, neighbour search, neighbourhood graphs and the refiner."""

    refiner: str = _field("attention", "Refiner name from the registry (see `in2r-graph refiners`).")
    k: int = _field(10, "Neighbours retrieved from the memory bank per suspected-noisy query.")
    num_layers: int = _field(1, "Message-passing layers of the refiner.")
    heads: int = _field(4, "Attention heads (attention, gat, gatv2 and transformer refiners).")
    refiner_dropout: float = _field(0.1, "Dropout inside the refiner.")
    readout: str = _field("mean", "Node states to prototype: `mean`, `attention` or `query`.")
    topology: str = _field("complete", "Edges of a neighbourhood graph: `complete`, `knn` or `star`.")
    knn_edges: int = _field(3, "Fellow neighbours each node links to under the `knn` topology.")
    edge_weights: str = _field("none", "Edge weights: `none`, `partner` or `query` side similarities.")
    query_node: bool = _field(False, "Add the query itself as a node of its graph.")
    search_backend: str = _field("torch", "Neighbour search: `torch` (exact), `faiss` (flat), `faiss-ivf`, `faiss-gpu` or `auto`.")
    bank_size: int | None = _field(
        None, "Capacity of each memory bank, in pairs; empty means the training pairs, at most 65,536."
    )
    bank_owner: str = _field(
        "own", "Bank a network searches: `own` (its own embeddings of peer-trusted pairs) or `peer`."
    )
    bank_sharding: bool = _field(
        False,
        "Under torchrun: split each bank across the ranks and search it with a distributed top-k "
        "(for banks larger than one device's memory); by default every rank holds the whole bank.",
    )
    weight: float = _field(0.5, "Weight of each rectification loss term.")
    rectify_images: bool = _field(True, "Synthesise caption prototypes for suspected-noisy images.")
    rectify_texts: bool = _field(True, "Synthesise image prototypes for suspected-noisy captions.")


@dataclass
class TrainConfig:
    """Optimisation, co-training schedule and run bookkeeping."""

    method: str = _field("in2r", "`in2r`, `co-divide` (clean part only) or `contrastive` (one net, noisy pairs).")
    ensemble: bool = _field(
        False, "With method contrastive: train two independent networks and average their similarities."
    )
    epochs: int = _field(12, "Training epochs, warm-up included.")
    warmup_epochs: int = _field(1, "Epochs of plain contrastive training before the clean/noisy split.")
    batch_size: int = _field(128, "Pairs per batch (labeled and unlabeled batches each).")
    lr: float = _field(5e-4, "AdamW learning rate.")
    weight_decay: float = _field(1e-4, "AdamW weight decay.")
    lr_decay_epochs: list = _field([8], "Epochs (0-based) at which the learning rate is multiplied by lr_decay.")
    lr_decay: float = _field(0.1, "Learning-rate factor applied at each lr_decay_epochs entry.")
    grad_clip: float = _field(2.0, "Gradient-norm clipping threshold (0 disables).")
    temperature: float = _field(0.05, "InfoNCE temperature.")
    margin: float = _field(0.2, "Hinge margin of image-text terms.")
    view_margin: float = _field(0.3, "Hinge margin between two augmented views of one modality.")
    complementary_weight: float = _field(0.1, "Weight of the complementary (negative-probability) term.")
    intra_weight: float = _field(1.0, "Weight of the intra-modal (view vs view) terms.")
    clean_threshold: float = _field(0.5, "Clean-probability threshold of the Gaussian-mixture split.")
    min_noisy_fraction: float = _field(0.01, "Share made suspected-noisy when the mixture finds no noisy pair.")
    seed: int = _field(0, "Seed of initialisation, batching and augmentation.")
    device: str = _field("auto", "`auto`, `cpu`, `cuda` or `cuda:N`; under torchrun each rank uses its local GPU.")
    amp: bool = _field(False, "Mixed precision (bfloat16 autocast) for training steps on a GPU; ignored on CPU.")
    num_threads: int | None = _field(None, "torch CPU threads; empty keeps torch's default.")
    eval_shard_size: int = _field(1024, "Images per similarity shard during evaluation.")
    out_dir: str = _field("runs", "Folder that receives run directories.")
    run_name: str | None = _field(None, "Run directory name; empty means a timestamped name.")
    progress: bool = _field(True, "Show a progress bar per epoch on a terminal.")


@dataclass
class Config:
    """The whole run configuration."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    rectify: RectifyConfig = field(default_factory=RectifyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Return the configuration as nested plain dicts (YAML- and checkpoint-safe)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "<dict>") -> "Config":
        """Build a configuration from nested dicts; unknown keys raise :class:`ConfigError`."""
        config = cls()
        if values is None:
            return config
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: expected a mapping of sections, got {type(values).__name__}")
        for section_name, section_values in values.items():
            if section_name not in SECTIONS:
                raise ConfigError(f"{source}: unknown section {section_name!r}{_suggest(section_name, SECTIONS)}")
            if section_values is None:
                continue
            if not isinstance(section_values, dict):
                raise ConfigError(f"{source}: section {section_name!r} must be a mapping")
            for key, value in section_values.items():
                config.set(f"{section_name}.{key}", value, source=source)
        return config

    def set(self, key: str, value: Any, source: str = "--set") -> None:
        """Set ``section.field`` (or a bare field name that is unique) to ``value``.

        String values are parsed as YAML scalars and then converted to the
        field's type, so ``"3"``, ``"true"`` and ``"[5, 10]"`` all work.
        """
        section_name, name = resolve_key(key, source)
        section = getattr(self, section_name)
        kind = _FIELD_TYPES[section_name][name]
        setattr(section, name, _convert(value, kind, f"{section_name}.{name}", source))


SECTIONS = {"data": DataConfig, "model": ModelConfig, "rectify": RectifyConfig, "train": TrainConfig}
_FIELD_TYPES = {name: get_type_hints(kind) for name, kind in SECTIONS.items()}


def all_keys() -> list[str]:
    """Return every ``section.field`` key."""
    return [f"{section}.{name}" for section, hints in _FIELD_TYPES.items() for name in hints]


def field_help() -> dict[str, tuple[str, Any]]:
    """Return ``{"section.field": (help, default)}`` for documentation."""
    defaults = Config().to_dict()
    out = {}
    for section_name, kind in SECTIONS.items():
        for item in dataclasses.fields(kind):
            out[f"{section_name}.{item.name}"] = (item.metadata.get("help", ""), defaults[section_name][item.name])
    return out


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def resolve_key(key: str, source: str = "--set") -> tuple[str, str]:
    """Map ``section.field`` or a unique bare ``field`` to ``(section, field)``."""
    if "." in key:
        section_name, name = key.split(".", 1)
        if section_name in _FIELD_TYPES and name in _FIELD_TYPES[section_name]:
            return section_name, name
    else:
        owners = [section for section, hints in _FIELD_TYPES.items() if key in hints]
        if len(owners) == 1:
            return owners[0], key
        if len(owners) > 1:
            choices = ", ".join(f"{owner}.{key}" for owner in owners)
            raise ConfigError(f"{source}: key {key!r} is ambiguous; use one of {choices}")
    bare_names = [name for hints in _FIELD_TYPES.values() for name in hints]
    close = difflib.get_close_matches(key, all_keys() + bare_names, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"{source}: unknown config key {key!r}{hint} (`in2r-graph config` lists every key)")


def _convert(value: Any, kind: Any, key: str, source: str) -> Any:
    optional = get_origin(kind) is not None and type(None) in get_args(kind)
    if isinstance(value, str):
        stripped = value.strip()
        if optional and stripped.lower() in ("", "none", "null"):
            return None
        if kind not in (str, str | None):
            try:
                value = yaml.safe_load(stripped)
            except yaml.YAMLError as error:
                raise ConfigError(f"{source}: {key}={value!r} is not a valid value: {error}") from None
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{source}: {key} cannot be empty")
    base = [arg for arg in get_args(kind) if arg is not type(None)][0] if optional else kind
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            raise TypeError
        if base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if base is float:
            if isinstance(value, bool):
                raise TypeError
            number = float(value)
            if math.isnan(number):
                raise TypeError
            return number
        if base is str:
            return str(value)
        if base is list:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return [value]
            if not isinstance(value, (list, tuple)):
                raise TypeError
            return list(value)
    except (TypeError, ValueError):
        name = getattr(base, "__name__", str(base))
        raise ConfigError(f"{source}: {key}={value!r} is not a valid {name}") from None
    return value


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that rejects a mapping with the same key twice (PyYAML keeps the last one)."""


class DuplicateKeyError(yaml.YAMLError):
    """A YAML mapping that sets one key twice."""


def _unique_key_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise DuplicateKeyError(f"line {key_node.start_mark.line + 1}: key {key!r} is set twice")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_key_mapping)


def read_yaml(path: Path) -> Any:
    """Parse a YAML file like ``yaml.safe_load``, but raise ``yaml.YAMLError`` on a repeated key."""
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML file (optional) and apply ``key=value`` overrides, then validate."""
    config = Config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            values = read_yaml(path)
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise ConfigError(f"{path}: not a valid YAML file: {error}") from None
        config = Config.from_dict(values, source=str(path))
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        config.set(key.strip(), value, source="--set")
    validate_config(config)
    return config


def dump_config(config: Config, path: str | Path) -> None:
    """Write the resolved configuration as YAML.

    The text goes to a temporary file that is renamed over ``path``, so a
    process killed while writing leaves the previous file intact.
    """
    path = Path(path)
    text = yaml.safe_dump(config.to_dict(), sort_keys=False)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "x", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _choice(value: str, choices: tuple[str, ...], key: str) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is invalid; expected one of {', '.join(choices)}")


def validate_config(config: Config) -> None:
    """Check ranges and choices that do not depend on the data; raise :class:`ConfigError`."""
    data, model, rectify, train = config.data, config.model, config.rectify, config.train
    if not 0.0 <= data.noise_ratio < 1.0:
        raise ConfigError(f"data.noise_ratio={data.noise_ratio} is invalid; expected a number in [0, 1)")
    _choice(data.noise_convention, ("caption", "image"), "data.noise_convention")
    _choice(data.image_features, ("ims", "regions"), "data.image_features")
    for key in ("train_split", "dev_split", "test_split"):
        name = getattr(data, key)
        if not name or "/" in name or os.sep in name:
            raise ConfigError(f"data.{key}={name!r} is invalid; expected a split name such as 'train' (a file prefix)")
    if not 0 <= data.noise_seed < 2**32:
        raise ConfigError(f"data.noise_seed={data.noise_seed} is invalid; expected an integer in [0, 2**32)")
    if data.max_train_pairs is not None and data.max_train_pairs < 1:
        raise ConfigError(f"data.max_train_pairs={data.max_train_pairs} is invalid; expected a positive count")

    _choice(model.image_encoder, ("auto", "global", "region", "thumbnail"), "model.image_encoder")
    _choice(model.text_encoder, ("auto", "embedding", "gru"), "model.text_encoder")
    if model.embed_dim < 1:
        raise ConfigError(f"model.embed_dim={model.embed_dim} is invalid; expected a positive size")
    if model.word_vectors:
        text_encoder = model.text_encoder
        if text_encoder == "auto":
            text_encoder = "embedding" if data.text_features else "gru"
        if text_encoder != "gru":
            raise ConfigError(
                f"model.word_vectors={model.word_vectors!r} is set, but the text encoder is {text_encoder!r} "
                f"(model.text_encoder={model.text_encoder!r}, data.text_features={data.text_features!r}); word "
                "vectors feed only the bi-GRU, so set data.text_features to empty or drop model.word_vectors"
            )

    if rectify.k < 1:
        raise ConfigError(f"rectify.k={rectify.k} is invalid; a prototype needs at least 1 neighbour")
    if rectify.bank_size is not None and rectify.bank_size < 1:
        raise ConfigError(f"rectify.bank_size={rectify.bank_size} is invalid; expected a positive capacity")
    if rectify.bank_size is not None and rectify.k >= rectify.bank_size:
        raise ConfigError(
            f"rectify.k={rectify.k} is larger than rectify.bank_size={rectify.bank_size} allows; a query needs "
            "k neighbours besides its own pair, so expected rectify.k < rectify.bank_size"
        )
    _choice(rectify.readout, ("mean", "attention", "query"), "rectify.readout")
    _choice(rectify.topology, ("complete", "knn", "star"), "rectify.topology")
    _choice(rectify.edge_weights, ("none", "partner", "query"), "rectify.edge_weights")
    # The backend registry lives above this layer and plugins may add names, so build_trainer checks the name.
    if not rectify.search_backend:
        raise ConfigError("rectify.search_backend is empty; expected a backend name such as 'torch'")
    _choice(rectify.bank_owner, ("own", "peer"), "rectify.bank_owner")
    if rectify.readout == "query" and not rectify.query_node:
        raise ConfigError("rectify.readout='query' needs rectify.query_node=true")
    if rectify.topology == "star" and not rectify.query_node:
        raise ConfigError("rectify.topology='star' links neighbours to the query, so it needs rectify.query_node=true")

    _choice(train.method, ("in2r", "co-divide", "contrastive"), "train.method")
    # NumPy and scikit-learn take seeds below 2**32, and the trainer adds the epoch to this one.
    if not 0 <= train.seed < 2**31:
        raise ConfigError(f"train.seed={train.seed} is invalid; expected an integer in [0, 2**31)")
    if train.num_threads is not None and train.num_threads < 1:
        raise ConfigError(f"train.num_threads={train.num_threads} is invalid; expected a positive count or empty")
    if not 0.0 <= train.min_noisy_fraction < 1.0:
        raise ConfigError(f"train.min_noisy_fraction={train.min_noisy_fraction} is invalid; expected [0, 1)")
    if train.batch_size < 2:
        raise ConfigError(f"train.batch_size={train.batch_size} is invalid; contrastive losses need at least 2")
    if train.epochs < 1:
        raise ConfigError(f"train.epochs={train.epochs} is invalid; expected at least 1")
    if not 0 <= train.warmup_epochs <= train.epochs:
        raise ConfigError(
            f"train.warmup_epochs={train.warmup_epochs} is invalid; expected 0..train.epochs ({train.epochs})"
        )
    if train.method != "contrastive" and train.warmup_epochs < 1:
        raise ConfigError("train.warmup_epochs must be at least 1 for co-trained methods: the split needs a model")
    if not (math.isfinite(train.lr) and train.lr > 0):
        raise ConfigError(f"train.lr={train.lr} is invalid; expected a positive finite number")
    if not (math.isfinite(train.weight_decay) and train.weight_decay >= 0):
        raise ConfigError(f"train.weight_decay={train.weight_decay} is invalid; expected a finite number >= 0")
    if not (math.isfinite(train.temperature) and train.temperature > 0):
        raise ConfigError(f"train.temperature={train.temperature} is invalid; expected a positive number")
    if not (math.isfinite(train.grad_clip) and train.grad_clip >= 0):
        raise ConfigError(f"train.grad_clip={train.grad_clip} is invalid; expected a finite number >= 0 (0 disables)")
    if not (math.isfinite(train.lr_decay) and train.lr_decay > 0):
        raise ConfigError(f"train.lr_decay={train.lr_decay} is invalid; expected a positive factor such as 0.1")
    if not (math.isfinite(rectify.weight) and rectify.weight >= 0):
        raise ConfigError(f"rectify.weight={rectify.weight} is invalid; expected a finite number >= 0")
    if train.ensemble and train.method != "contrastive":
        raise ConfigError(
            f"train.ensemble=true applies to train.method='contrastive'; {train.method!r} already trains "
            "two networks and averages their similarities"
        )
    if not 0.0 < train.clean_threshold < 1.0:
        raise ConfigError(f"train.clean_threshold={train.clean_threshold} is invalid; expected (0, 1)")
    run_name = train.run_name
    if run_name and (run_name in (".", "..") or "/" in run_name or os.sep in run_name):
        raise ConfigError(
            f"train.run_name={run_name!r} is invalid; expected a folder name without path separators "
            "(train.out_dir sets the parent folder)"
        )
    if train.eval_shard_size < 1:
        raise ConfigError(f"train.eval_shard_size={train.eval_shard_size} is invalid; expected a positive count")
    for epoch in train.lr_decay_epochs:
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise ConfigError(f"train.lr_decay_epochs contains {epoch!r}; expected non-negative integers")
