"""Command-line interface: ``in2r-graph train | evaluate | noise | refiners | config``."""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
from pathlib import Path

# OpenMP threads that spin while waiting made training 3-10x slower on a shared
# 2-core machine; passive waiting must be chosen before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from .. import __version__  # noqa: E402
from ..config import Config, ConfigError, field_help, load_config  # noqa: E402
from ..data.errors import DataError  # noqa: E402
from ..training.checkpoint import CheckpointError  # noqa: E402
from ..training.errors import NonFiniteLossError  # noqa: E402

logger = logging.getLogger("in2r_graph")

# Exit codes: 2 for invalid input (settings, files, checkpoints), 1 for a run
# that failed on valid input, 130 for Ctrl-C. Neither kind prints a traceback
# on the terminal; the run's log file contains it.
USER_ERRORS = (ConfigError, DataError, CheckpointError, FileNotFoundError)
RUN_ERRORS = (NonFiniteLossError, OSError)


def _whole_number_at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="in2r-graph",
        description="Train and evaluate image-text retrieval under noisy correspondence with IN2R.",
    )
    parser.add_argument("--version", action="version", version=f"in2r-graph {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="Train a model (IN2R on the bundled dataset by default).")
    train.add_argument("--data-root", help="Folder that contains dataset folders (default: the bundled data).")
    train.add_argument("--dataset", help="Dataset folder name under --data-root (precomp layout).")
    train.add_argument("--config", help="YAML configuration file; --set values override it.")
    train.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="Override one configuration value, e.g. --set rectify.k=5 (repeatable).",
    )
    train.add_argument("--method", choices=("in2r", "co-divide", "contrastive"), help="Shortcut for train.method.")
    train.add_argument("--epochs", type=int, help="Shortcut for train.epochs.")
    train.add_argument("--seed", type=int, help="Shortcut for train.seed.")
    train.add_argument("--noise-file", help="Shortcut for data.noise_file (a saved noise index .npy).")
    train.add_argument(
        "--noise-convention", choices=("caption", "image"), help="Shortcut for data.noise_convention."
    )
    train.add_argument("--out-dir", help="Shortcut for train.out_dir.")
    train.add_argument("--run-name", help="Shortcut for train.run_name.")
    train.add_argument("--resume", metavar="RUN_DIR", help="Continue the run in RUN_DIR from its last finished epoch.")
    train.add_argument("-v", "--verbose", action="store_true", help="Print debug messages.")

    evaluate = commands.add_parser("evaluate", help="Re-evaluate a run directory or a checkpoint file.")
    evaluate.add_argument("target", help="A run directory (uses checkpoints/best.pt) or a .pt checkpoint.")
    evaluate.add_argument("--split", default="test", help="Split name to evaluate (default: test).")
    evaluate.add_argument(
        "--checkpoint", choices=("best", "last"), help="Which checkpoint of a run directory (default: best)."
    )
    evaluate.add_argument("--data-root", help="Override the data root stored in the checkpoint.")
    evaluate.add_argument("--five-fold", action="store_true", help="Also report the COCO-style mean over 5 folds of 1,000 images.")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N.")
    evaluate.add_argument("-v", "--verbose", action="store_true", help="Print debug messages.")

    noise = commands.add_parser("noise", help="Write a noise index file for a training split.")
    noise.add_argument("--data-root", help="Folder that contains dataset folders (default: the bundled data).")
    noise.add_argument("--dataset", default="openclipart", help="Dataset folder name (default: openclipart).")
    noise.add_argument("--split", default="train", help="Split to corrupt (default: train).")
    noise.add_argument("--ratio", required=True, help="Share of pairs to corrupt, in [0, 1).")
    noise.add_argument("--convention", required=True, choices=("caption", "image"), help="Noise convention.")
    noise.add_argument("--seed", type=int, default=0, help="Random seed (default: 0).")
    noise.add_argument("--out", required=True, help="Output .npy file.")

    bench = commands.add_parser(
        "bench",
        help="Run an ablation grid: one training run per cell, then results.csv, summary.md and plots.",
    )
    bench.add_argument(
        "--grid",
        required=True,
        help="Grid YAML file: base settings, the lists of values to combine, and optional variants, exclude "
        "and overrides entries (the format is described in in2r_graph.bench.grid).",
    )
    bench.add_argument(
        "--out", help="Output folder (default: runs/bench-<grid file name>); a rerun skips the finished cells."
    )
    bench.add_argument("--data-root", help="Folder that contains the dataset folders; overrides data.root of every cell.")
    bench.add_argument(
        "--workers",
        type=_whole_number_at_least_one,
        default=1,
        help="Cells trained at the same time, each in its own process (default: 1); on a CPU they share the cores.",
    )
    bench.add_argument("--dry-run", action="store_true", help="List the cells and their validity; train nothing.")
    bench.add_argument("-v", "--verbose", action="store_true", help="Print debug messages.")

    commands.add_parser("refiners", help="List the registered refiners.")
    commands.add_parser("config", help="List every configuration key with its default and meaning.")
    return parser


def setup_logging(verbose: bool = False) -> None:
    """Send the package's log records to standard error (the only place handlers are configured)."""
    root = logging.getLogger("in2r_graph")
    root.setLevel(logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.DEBUG if verbose else logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root.addHandler(handler)


def add_log_file(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("in2r_graph").addHandler(handler)
    return handler


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------- train


def _train_overrides(args: argparse.Namespace) -> list[str]:
    overrides = []
    if args.data_root is not None:
        overrides.append(f"data.root={args.data_root}")
    if args.dataset is not None:
        overrides.append(f"data.dataset={args.dataset}")
    shortcuts = {
        "method": "train.method",
        "epochs": "train.epochs",
        "seed": "train.seed",
        "noise_file": "data.noise_file",
        "noise_convention": "data.noise_convention",
        "out_dir": "train.out_dir",
        "run_name": "train.run_name",
    }
    for attribute, key in shortcuts.items():
        value = getattr(args, attribute)
        if value is not None:
            overrides.append(f"{key}={value}")
    return overrides + list(args.overrides)


def _make_input_paths_absolute(config: Config) -> None:
    """Store input paths as absolute paths in a new run, so that --resume works from any folder."""
    for section, key in (("data", "root"), ("data", "noise_file"), ("model", "word_vectors")):
        owner = getattr(config, section)
        value = getattr(owner, key)
        if value:
            setattr(owner, key, os.path.abspath(os.path.expanduser(value)))


def run_train(args: argparse.Namespace) -> int:
    from ..evaluation.retrieval import format_metrics_table
    from ..training import distributed as dist_utils
    from ..training.session import describe_noise, run_training

    if args.resume:
        resume_dir = Path(args.resume)
        if not (resume_dir / "config.yaml").is_file():
            raise ConfigError(
                f"cannot resume: {resume_dir} is not a run directory (no config.yaml); expected a folder "
                "written by `in2r-graph train`"
            )
        warmup = load_config(resume_dir / "config.yaml").train.warmup_epochs
        if args.epochs is not None and args.epochs < warmup:
            # The config check would name train.warmup_epochs, which the user did not change, so check here first.
            raise ConfigError(
                f"cannot resume with --epochs {args.epochs}: it is below the run's train.warmup_epochs={warmup}; "
                f"give --epochs {warmup} or more, and at least the epochs the run has finished"
            )
        config = load_config(resume_dir / "config.yaml", _train_overrides(args))
    else:
        resume_dir = None
        config = load_config(args.config, _train_overrides(args))
        _make_input_paths_absolute(config)
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    seed_everything(config.train.seed)
    device = None
    main_process = True
    if dist_utils.launched_by_torchrun():
        device = dist_utils.init_distributed(config.train.device)
        main_process = dist_utils.is_main_process()
        if not main_process:
            # Other ranks log warnings and errors only; rank 0 logs the run.
            for handler in logging.getLogger("in2r_graph").handlers:
                handler.setLevel(logging.WARNING)

    try:
        summary = run_training(
            config, resume_dir=resume_dir, device=device, on_start=lambda run_dir: add_log_file(run_dir / "train.log")
        )
    except KeyboardInterrupt as interrupt:
        logger.error("%s", interrupt.args[0] if interrupt.args else "interrupted")
        return 130
    finally:
        if dist_utils.is_distributed():
            dist_utils.shutdown()
    if not main_process:
        return 0
    lines = [
        "",
        f"in2r-graph {summary['method']} on {Path(summary['dataset']).name}: test split, {summary['test_images']} images x "
        f"{summary['test_captions']} captions",
        format_metrics_table(summary["test"]),
        f"noise: {describe_noise(config, summary['realised_noise'])}",
    ]
    split = summary["split"]
    if split:
        lines.append(
            f"clean/noisy split (last epoch, mean of both nets): precision {split['precision']:.3f}, "
            f"recall {split['recall']:.3f}"
        )
    lines.append(f"wall time {summary['seconds']:.0f}s; run directory {summary['run_dir']}")
    print("\n".join(lines))
    return 0


# ---------------------------------------------------------------------- evaluate


FIVE_FOLD_IMAGES = 5000


def run_evaluate(args: argparse.Namespace) -> int:
    from ..data.pairs import PairData
    from ..data.precomp import load_split
    from ..data.vocab import Vocabulary
    from ..evaluation.retrieval import five_fold_metrics, format_metrics_table, retrieval_metrics
    from ..training.checkpoint import load_checkpoint
    from ..training.session import dataset_root, networks_from_checkpoint, resolve_device
    from ..training.trainer import encode_split

    if not args.split.strip():
        raise ConfigError("--split is empty; expected a split name such as test or dev")
    target = Path(args.target)
    if target.is_dir():
        path = target / "checkpoints" / f"{args.checkpoint or 'best'}.pt"
    elif args.checkpoint is not None:
        raise ConfigError(
            f"--checkpoint {args.checkpoint} picks a checkpoint inside a run directory, but {target} is not a directory; "
            "pass the run directory, or the .pt file alone"
        )
    else:
        path = target
    device = resolve_device(args.device)
    state = load_checkpoint(path, map_location=device)
    config, networks = networks_from_checkpoint(state, device)
    if args.data_root:
        config.data.root = args.data_root
    split = load_split(
        dataset_root(config), args.split, image_features=config.data.image_features, text_features=config.data.text_features
    )
    if args.five_fold and split.num_images != FIVE_FOLD_IMAGES:
        raise ConfigError(
            f"--five-fold needs a split of exactly {FIVE_FOLD_IMAGES:,} images (5 folds of 1,000, the COCO 1K "
            f"protocol), but split {args.split!r} of {dataset_root(config)} has {split.num_images:,} images; "
            "evaluate without --five-fold"
        )
    vocab = Vocabulary.from_dict(state["vocab"]) if state.get("vocab") else None
    data = PairData(split, split.clean_caption_to_image(), vocab)

    try:
        encoded = [encode_split(net, data, device) for net in networks]
    except ValueError as error:
        # Features of another size or kind than the checkpoint was trained on.
        raise ConfigError(f"split {args.split!r} of {split.root} does not fit the checkpoint {path}: {error}") from None
    images = [pair[0] for pair in encoded]
    texts = [pair[1] for pair in encoded]
    caption_to_image = torch.from_numpy(data.caption_to_image)
    rows = {f"{path.name} on {args.split}": retrieval_metrics(images, texts, caption_to_image, shard_size=config.train.eval_shard_size)}
    if args.five_fold:
        rows["5-fold 1K mean"] = five_fold_metrics(images, texts, caption_to_image)
    print(format_metrics_table(rows))
    return 0


# ---------------------------------------------------------------------- noise


def run_noise(args: argparse.Namespace) -> int:
    from ..data.noise import make_noise, noisy_caption_to_image, realised_noise_rate, save_noise
    from ..data.precomp import bundled_dataset_root, load_split

    try:
        ratio = float(args.ratio)
    except ValueError:
        raise ConfigError(f"--ratio {args.ratio!r} is not a number; expected a value in [0, 1)") from None
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"--ratio {ratio} is invalid; expected a value in [0, 1)")
    if args.seed < 0:
        raise ConfigError(f"--seed {args.seed} is invalid; expected a non-negative integer")
    out = Path(args.out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; expected the path of the .npy file to write")
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: folder {out.parent} does not exist; create it first")
    root = (Path(args.data_root) if args.data_root else bundled_dataset_root()) / args.dataset
    split = load_split(root, args.split, validate=False)
    noise = make_noise(split.num_images, split.captions_per_image, ratio, args.convention, args.seed)
    mapping = noisy_caption_to_image(noise, args.convention, split.num_images, split.captions_per_image)
    save_noise(args.out, noise)
    print(
        f"wrote {args.out}: {args.convention} convention, shape {noise.shape}, requested {100 * ratio:.1f}%, "
        f"realised {100 * realised_noise_rate(mapping, split.captions_per_image):.2f}% of "
        f"{split.num_captions} captions"
    )
    return 0


def run_bench(args: argparse.Namespace) -> int:
    # Imported on use: the runner loads PyTorch Geometric, which other commands do not need.
    from ..bench.command import run_bench_command

    return run_bench_command(args)


def run_refiners(args: argparse.Namespace) -> int:
    from ..refiners import get_refiner_class, list_refiners

    for name in list_refiners():
        cls = get_refiner_class(name)
        lines = (cls.__doc__ or "").strip().splitlines()
        summary = lines[0] if lines else cls.__name__
        weights = "edge weights" if cls.supports_edge_weight else "no edge weights"
        print(f"{name:12s} {summary} ({weights})")
    return 0


def run_config(args: argparse.Namespace) -> int:
    for key, (text, default) in field_help().items():
        print(f"{key} = {default!r}\n    {text}")
    return 0


def _report_error(command: str, error: BaseException, code: int) -> int:
    """Print one line for ``error``, log its traceback (to the run's log file, if any) and return ``code``."""
    logger.debug("in2r-graph %s failed: %s", command, error, exc_info=True)
    log_files = [
        handler.baseFilename
        for handler in logging.getLogger("in2r_graph").handlers
        if isinstance(handler, logging.FileHandler)
    ]
    where = f" (traceback in {log_files[0]})" if log_files else ""
    print(f"in2r-graph {command}: error: {error}{where}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(getattr(args, "verbose", False))
    handlers = {
        "train": run_train,
        "evaluate": run_evaluate,
        "noise": run_noise,
        "refiners": run_refiners,
        "config": run_config,
        "bench": run_bench,
    }
    try:
        return handlers[args.command](args)
    except USER_ERRORS as error:
        return _report_error(args.command, error, 2)
    except RUN_ERRORS as error:
        return _report_error(args.command, error, 1)
    except KeyboardInterrupt:
        print("in2r-graph: interrupted", file=sys.stderr)
        return 130
    finally:
        # main() may run several times in one process (tests, notebooks): drop this call's handlers.
        package_logger = logging.getLogger("in2r_graph")
        for handler in list(package_logger.handlers):
            package_logger.removeHandler(handler)
            handler.close()


if __name__ == "__main__":
    sys.exit(main())
