"""Kill and interrupt real training processes, then resume: no unreadable checkpoint, same final metrics.

The runs use a 150-pair slice of the bundled dataset for 3 epochs (1 warm-up).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from in2r_graph.training.checkpoint import PAUSE_AFTER_EPOCH_VARIABLE, PAUSE_IN_SAVE_VARIABLE

from .helpers import cli_command, cli_environment, run_cli, train_args

BUNDLED_SLICE = [
    "--set", "data.max_train_pairs=150",
    "--set", "model.embed_dim=16",
    "--set", "train.batch_size=32",
    "--set", "rectify.k=4",
    "--set", "train.progress=false",
    "--set", "train.warmup_epochs=1",
]
EPOCHS = "3"
WAIT_TIMEOUT_S = 180


def _default_sigint() -> None:
    # A test suite started as a background job of a shell inherits an ignored SIGINT,
    # which the training process would inherit too; these tests need Ctrl-C to work.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Run:
    """One ``in2r-graph train`` process with its output in files."""

    def __init__(self, args: list[str], cwd: Path, log_name: str, **environment: str) -> None:
        self.stdout_path = cwd / f"{log_name}.out"
        self.stderr_path = cwd / f"{log_name}.err"
        with open(self.stdout_path, "w") as stdout, open(self.stderr_path, "w") as stderr:
            self.process = subprocess.Popen(
                [*cli_command(), *args],
                cwd=cwd,
                env=cli_environment(**environment),
                stdout=stdout,
                stderr=stderr,
                preexec_fn=_default_sigint,
            )

    def wait_until(self, condition: Callable[[], bool]) -> None:
        """Poll ``condition`` every 10 ms; fail the test if the process ends first or time runs out."""
        deadline = time.monotonic() + WAIT_TIMEOUT_S
        while not condition():
            if self.process.poll() is not None:
                pytest.fail(f"the run ended (exit {self.process.returncode}) before the interruption point:\n{self.stderr}")
            if time.monotonic() > deadline:
                self.process.kill()
                pytest.fail(f"the interruption point was not reached in {WAIT_TIMEOUT_S} s:\n{self.stderr}")
            time.sleep(0.01)

    def stop(self, signum: int) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout=WAIT_TIMEOUT_S)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")


def _train(out_dir: Path, run_name: str) -> list[str]:
    return ["train", "--out-dir", str(out_dir), "--run-name", run_name, "--epochs", EPOCHS, *BUNDLED_SLICE]


def _resume(run_dir: Path) -> list[str]:
    return ["train", "--resume", str(run_dir)]


def _checkpoint_files(run_dir: Path) -> list[Path]:
    folder = run_dir / "checkpoints"
    return sorted(path for path in folder.glob("*.pt")) if folder.is_dir() else []


def _saved_epoch(run_dir: Path) -> int | None:
    last = run_dir / "checkpoints" / "last.pt"
    return torch.load(last, weights_only=True)["epoch"] if last.is_file() else None


def _unreadable_checkpoints(run_dir: Path) -> list[str]:
    """Return the checkpoint files that ``torch.load(weights_only=True)`` rejects, with the reason."""
    failures = []
    for path in _checkpoint_files(run_dir):
        try:
            torch.load(path, weights_only=True)
        except Exception as error:  # any failure to load is what this check reports
            failures.append(f"{path.name}: {error}")
    return failures


def _temporary_files(run_dir: Path) -> list[Path]:
    return sorted(run_dir.rglob(".*.tmp"))


def _test_metrics(run_dir: Path) -> list[dict[str, float]]:
    return list(json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))["test"].values())


@pytest.mark.slow
def test_killed_and_resumed_run_matches(tmp_path):
    reference = run_cli(*_train(tmp_path, "reference"), cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr
    run_dir = tmp_path / "interrupted"

    # 1. SIGKILL during the first epoch: nothing is saved yet.
    run = Run(_train(tmp_path, "interrupted"), tmp_path, "first")
    run.wait_until(lambda: (run_dir / "train_caption_to_image.npy").is_file())
    assert run.stop(signal.SIGKILL) == -signal.SIGKILL
    assert _saved_epoch(run_dir) is None
    assert (run_dir / "config.yaml").is_file()

    # 2. SIGKILL during the second epoch, after the first one was saved.
    # The pause after each saved epoch keeps epoch 2 from finishing before the signal lands.
    run = Run(_resume(run_dir), tmp_path, "second", **{PAUSE_AFTER_EPOCH_VARIABLE: "20"})
    run.wait_until(lambda: (run_dir / "metrics.csv").is_file())
    assert run.stop(signal.SIGKILL) == -signal.SIGKILL
    assert "has no finished epoch" in run.stderr
    assert _saved_epoch(run_dir) == 1
    assert _unreadable_checkpoints(run_dir) == []

    # 3. SIGKILL while the checkpoint of the second epoch is being written.
    run = Run(_resume(run_dir), tmp_path, "third", **{PAUSE_IN_SAVE_VARIABLE: "60"})
    run.wait_until(lambda: bool(list((run_dir / "checkpoints").glob(".last.pt.*.tmp"))))
    assert run.stop(signal.SIGKILL) == -signal.SIGKILL
    assert "resuming" in run.stderr
    assert _saved_epoch(run_dir) == 1
    assert _unreadable_checkpoints(run_dir) == []
    assert len(_temporary_files(run_dir)) == 1

    # 4. Ctrl-C (SIGINT) while that checkpoint is being written: the write finishes, then the run stops.
    stale = set(_temporary_files(run_dir))
    run = Run(_resume(run_dir), tmp_path, "fourth", **{PAUSE_IN_SAVE_VARIABLE: "1"})
    run.wait_until(lambda: bool(set((run_dir / "checkpoints").glob(".last.pt.*.tmp")) - stale))
    assert run.stop(signal.SIGINT) == 130
    assert "removed" in run.stderr
    assert "interrupted; epoch 2 is the last finished epoch" in run.stderr
    assert f"Continue with: in2r-graph train --resume {run_dir}" in run.stderr
    assert "Traceback" not in run.stderr
    assert _saved_epoch(run_dir) == 2
    assert _unreadable_checkpoints(run_dir) == []
    assert _temporary_files(run_dir) == []

    # 5. The last resume finishes the run.
    final = run_cli(*_resume(run_dir), cwd=tmp_path)
    assert final.returncode == 0, final.stderr
    assert _saved_epoch(run_dir) == 3
    assert _unreadable_checkpoints(run_dir) == []
    assert _temporary_files(run_dir) == []
    assert _test_metrics(run_dir) == _test_metrics(tmp_path / "reference")


@pytest.mark.slow
def test_ctrl_c_during_epoch_saves_last_epoch(tmp_path):
    run_dir = tmp_path / "stopped"
    run = Run(_train(tmp_path, "stopped"), tmp_path, "stopped", **{PAUSE_AFTER_EPOCH_VARIABLE: "20"})
    run.wait_until(lambda: (run_dir / "metrics.csv").is_file())

    code = run.stop(signal.SIGINT)

    assert code == 130
    assert "interrupted; epoch 1 is the last finished epoch" in run.stderr
    assert f"Continue with: in2r-graph train --resume {run_dir}" in run.stderr
    assert "Traceback" not in run.stderr
    assert _saved_epoch(run_dir) == 1
    assert _unreadable_checkpoints(run_dir) == []


# ---- resume rejected, through the CLI's main() on the tiny dataset ---------------------------------


@pytest.fixture
def finished_run(dataset, tmp_path, cli_in_process) -> Path:
    result = cli_in_process(*train_args(dataset, tmp_path / "runs", epochs=1))
    assert result.returncode == 0, result.stderr
    return tmp_path / "runs" / "run"


def test_resume_other_noise_file_rejected(finished_run, tmp_path, cli_in_process):
    noise_file = tmp_path / "noise.npy"
    np.save(noise_file, np.arange(120) // 2)

    result = cli_in_process("train", "--resume", finished_run, "--noise-file", noise_file, "--epochs", "2")

    assert result.returncode == 2
    assert f"cannot resume: data.noise_file was None in the saved run but is '{noise_file}' now" in result.stderr


def test_resume_changed_data_rejected(finished_run, dataset, cli_in_process):
    # Keep the first 50 of the 60 training images and their 100 captions.
    np.save(dataset / "train_ims.npy", np.load(dataset / "train_ims.npy")[:50])
    np.save(dataset / "train_caps_minilm.npy", np.load(dataset / "train_caps_minilm.npy")[:100])
    lines = (dataset / "train_caps.txt").read_text(encoding="utf-8").splitlines()[:100]
    (dataset / "train_caps.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")

    result = cli_in_process("train", "--resume", finished_run, "--epochs", "2")

    assert result.returncode == 2
    assert "cannot resume: training data num_pairs was 120 in the saved run but is 100 now" in result.stderr


def test_resume_without_last_checkpoint_rejected(finished_run, cli_in_process):
    (finished_run / "checkpoints" / "last.pt").unlink()

    result = cli_in_process("train", "--resume", finished_run, "--epochs", "2")

    assert result.returncode == 2
    assert "last.pt is missing but best.pt exists" in result.stderr


def test_resume_corrupt_checkpoint_rejected(finished_run, cli_in_process):
    last = finished_run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])

    result = cli_in_process("train", "--resume", finished_run, "--epochs", "2")

    assert result.returncode == 2
    assert f"checkpoint {last} cannot be read" in result.stderr


def test_resume_saved_before_new_key(finished_run, cli_in_process):
    # A run saved by a version without rectify.bank_owner resumes with that key's default.
    last = finished_run / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    del state["config"]["rectify"]["bank_owner"]
    torch.save(state, last)
    config = finished_run / "config.yaml"
    config.write_text(
        "".join(line for line in config.read_text(encoding="utf-8").splitlines(True) if "bank_owner" not in line),
        encoding="utf-8",
    )

    result = cli_in_process("train", "--resume", finished_run, "--epochs", "2")

    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stderr
    assert _saved_epoch(finished_run) == 2
