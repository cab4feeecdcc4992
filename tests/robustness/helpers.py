"""Tiny precomp datasets on disk and the real ``in2r-graph`` command in a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CLI_TIMEOUT_S = 240

# Commands that run_cases runs side by side. A failing command spends most of
# its time importing torch and the package, which keeps one core busy, so two
# at a time about halve the wall time on two idle cores.
PARALLEL_COMMANDS = max(1, min(2, os.cpu_count() or 1))

# Train, dev and test images of the tiny dataset; each image has CAPTIONS_PER_IMAGE captions.
SPLIT_IMAGES = {"train": 60, "dev": 20, "test": 20}
CAPTIONS_PER_IMAGE = 2
IMAGE_DIM = 8
TEXT_DIM = 6

# Settings that keep a training run on the tiny dataset to a few seconds.
TINY_SETTINGS = [
    "--set", "model.embed_dim=16",
    "--set", "train.batch_size=16",
    "--set", "rectify.k=4",
    "--set", "train.progress=false",
    "--set", "train.warmup_epochs=1",
]


def cli_command() -> list[str]:
    """Return the installed ``in2r-graph`` console script, or ``python -m in2r_graph`` without one."""
    script = Path(sys.executable).with_name("in2r-graph")
    if script.is_file():
        return [str(script)]
    found = shutil.which("in2r-graph")
    return [found] if found else [sys.executable, "-m", "in2r_graph"]


def cli_environment(**extra: str) -> dict[str, str]:
    environment = dict(os.environ)
    environment.update(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1")
    environment.pop("IN2R_GRAPH_TEST_PAUSE_IN_SAVE", None)
    environment.pop("IN2R_GRAPH_TEST_PAUSE_AFTER_EPOCH", None)
    environment.update(extra)
    return environment


def run_cli(*args: str, cwd: Path, **environment: str) -> subprocess.CompletedProcess:
    """Run ``in2r-graph ARGS`` to completion and return its exit code and output."""
    return subprocess.run(
        [*cli_command(), *map(str, args)],
        cwd=cwd,
        env=cli_environment(**environment),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )


def write_split(
    root: Path,
    split: str,
    num_images: int,
    *,
    per_image: int = CAPTIONS_PER_IMAGE,
    image_dim: int = IMAGE_DIM,
    text_dim: int = TEXT_DIM,
    seed: int = 0,
) -> None:
    """Write one valid split: float32 global features, .txt captions and float32 caption embeddings.

    Captions sit near their image in a shared random direction, so a model can learn the pairing.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    images = rng.standard_normal((num_images, image_dim)).astype(np.float32)
    owner = np.repeat(np.arange(num_images), per_image)
    projection = rng.standard_normal((image_dim, text_dim)).astype(np.float32)
    texts = images[owner] @ projection + 0.3 * rng.standard_normal((owner.size, text_dim)).astype(np.float32)
    np.save(root / f"{split}_ims.npy", images)
    np.save(root / f"{split}_caps_minilm.npy", texts.astype(np.float32))
    captions = [f"image {j} caption {k}" for j in range(num_images) for k in range(per_image)]
    (root / f"{split}_caps.txt").write_text("\n".join(captions) + "\n", encoding="utf-8")


def write_dataset(root: Path, **options) -> Path:
    """Write the train, dev and test splits of a tiny valid dataset into ``root``; return ``root``."""
    for seed, (split, num_images) in enumerate(SPLIT_IMAGES.items()):
        write_split(root, split, num_images, seed=seed, **options)
    return root


def train_args(dataset: Path, out_dir: Path, *extra: str, run_name: str = "run", epochs: int = 2) -> list[str]:
    """Return the arguments of a tiny training run on ``dataset``."""
    return [
        "train",
        "--data-root", str(dataset.parent),
        "--dataset", dataset.name,
        "--out-dir", str(out_dir),
        "--run-name", run_name,
        "--epochs", str(epochs),
        *TINY_SETTINGS,
        *extra,
    ]


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str, code: int = 2) -> None:
    """Check a failed CLI call: its exit code, one message line without a traceback, and its content."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert "error: " in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


@dataclass
class CliCase:
    """One command of a table of cases, with what its message must contain and, once run, its result."""

    args: list[str]
    cwd: Path
    fragments: list[str] = field(default_factory=list)
    result: subprocess.CompletedProcess | None = None


def run_cases(cases: dict[str, CliCase]) -> dict[str, CliCase]:
    """Run every case's command, PARALLEL_COMMANDS at a time, and store each result in its case."""
    with ThreadPoolExecutor(max_workers=PARALLEL_COMMANDS) as pool:
        futures = {name: pool.submit(run_cli, *case.args, cwd=case.cwd) for name, case in cases.items()}
    for name, future in futures.items():
        cases[name].result = future.result()
    return cases
