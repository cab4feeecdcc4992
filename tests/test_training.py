"""End-to-end training runs on a tiny slice of the bundled dataset."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from in2r_graph.cli.main import main
from in2r_graph.training.checkpoint import load_checkpoint
from in2r_graph.training.session import run_directory_lock

TINY = [
    "--set", "data.max_train_pairs=192",
    "--set", "train.batch_size=32",
    "--set", "model.embed_dim=32",
    "--set", "rectify.k=4",
    "--set", "train.progress=false",
]


def _train(tmp_path: Path, name: str, *extra: str) -> Path:
    code = main(["train", "--out-dir", str(tmp_path), "--run-name", name, "--epochs", "3", "--set", "warmup_epochs=1", *TINY, *extra])
    assert code == 0
    return tmp_path / name


@pytest.mark.slow
def test_in2r_run_writes_run_directory(tmp_path, capsys):
    run_dir = _train(tmp_path, "in2r")
    printed = capsys.readouterr().out
    assert "rSum" in printed
    assert "realised" in printed
    assert "precision" in printed
    for name in ("config.yaml", "metrics.csv", "train.log", "summary.json", "checkpoints/best.pt", "checkpoints/last.pt"):
        assert (run_dir / name).is_file(), name
    metrics = (run_dir / "metrics.csv").read_text()
    assert "A/image_rectify_loss" in metrics
    assert "A/split_precision" in metrics
    assert "dev_rsum" in metrics
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["method"] == "in2r"


@pytest.mark.slow
def test_checkpoint_holds_plain_tensors(tmp_path):
    run_dir = _train(tmp_path, "plain")
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 3
    assert len(state["networks"]) == 2
    assert any(key.startswith("bank.") for key in state["networks"][0])
    assert any(key.startswith("text_refiner.") for key in state["networks"][0])


@pytest.mark.slow
def test_same_seed_same_metrics(tmp_path):
    first = _train(tmp_path, "first", "--method", "co-divide")
    second = _train(tmp_path, "second", "--method", "co-divide")
    a = json.loads((first / "summary.json").read_text())["test"]
    b = json.loads((second / "summary.json").read_text())["test"]
    assert a == b


@pytest.mark.slow
def test_contrastive_baseline_uses_one_network(tmp_path):
    run_dir = _train(tmp_path, "contrastive", "--method", "contrastive")
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert len(state["networks"]) == 1


@pytest.mark.slow
def test_resume_matches_uninterrupted_run(tmp_path):
    full = _train(tmp_path, "full")
    partial = tmp_path / "partial"
    assert main(["train", "--out-dir", str(tmp_path), "--run-name", "partial", "--epochs", "2", "--set", "warmup_epochs=1", *TINY]) == 0
    assert main(["train", "--resume", str(partial), "--epochs", "3"]) == 0
    a = json.loads((full / "summary.json").read_text())["test"]
    b = json.loads((partial / "summary.json").read_text())["test"]
    assert list(a.values()) == list(b.values())


@pytest.mark.slow
def test_resume_of_locked_run_rejected(tmp_path, capsys):
    run_dir = _train(tmp_path, "locked", "--method", "co-divide")
    capsys.readouterr()
    last = (run_dir / "checkpoints" / "last.pt").read_bytes()

    with run_directory_lock(run_dir):
        code = main(["train", "--resume", str(run_dir), "--epochs", "4"])

    assert code == 2
    assert "is in use by another training process" in capsys.readouterr().err
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == last
    assert main(["train", "--resume", str(run_dir), "--epochs", "4"]) == 0


@pytest.mark.slow
def test_resume_with_other_config_rejected(tmp_path, capsys):
    run_dir = _train(tmp_path, "run")
    code = main(["train", "--resume", str(run_dir), "--set", "rectify.k=3"])
    assert code == 2
    assert "rectify.k was 4 in the saved run but is 3 now" in capsys.readouterr().err
    config_before = (run_dir / "config.yaml").read_text()

    code = main(["train", "--resume", str(run_dir), "--epochs", "2"])

    assert code == 2
    assert "has finished 3 epochs, more than train.epochs=2" in capsys.readouterr().err
    assert (run_dir / "config.yaml").read_text() == config_before

    code = main(["train", "--resume", str(run_dir), "--epochs", "0"])

    assert code == 2
    assert "--epochs 0: it is below the run's train.warmup_epochs=1" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_command_reproduces_best(tmp_path, capsys):
    run_dir = _train(tmp_path, "evaluated")
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--split", "test"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((run_dir / "summary.json").read_text())
    best_row = next(value for key, value in summary["test"].items() if key.startswith("best"))
    assert f"{best_row['rsum']:.1f}" in printed


def test_noise_command_writes_file(tmp_path, capsys):
    out = tmp_path / "noise.npy"
    assert main(["noise", "--ratio", "0.4", "--convention", "caption", "--seed", "3", "--out", str(out)]) == 0
    noise = np.load(out)
    assert noise.ndim == 1
    assert "realised" in capsys.readouterr().out


def test_noise_command_rejects_bad_ratio(tmp_path, capsys):
    code = main(["noise", "--ratio", "abc", "--convention", "caption", "--out", str(tmp_path / "n.npy")])
    assert code == 2
    assert "not a number" in capsys.readouterr().err
    assert not (tmp_path / "n.npy").exists()


def test_unknown_refiner_is_a_clear_error(tmp_path, capsys):
    code = main(["train", "--out-dir", str(tmp_path), "--set", "rectify.refiner=graphormer", *TINY])
    assert code == 2
    assert "registered refiners" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_refiners_command_lists_registry(capsys):
    assert main(["refiners"]) == 0
    printed = capsys.readouterr().out
    for name in ("attention", "gat", "gcn", "sage", "mean"):
        assert name in printed
