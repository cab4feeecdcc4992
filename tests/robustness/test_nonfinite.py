"""A NaN or infinite loss stops the run with the epoch, step, loss terms and last good checkpoint named."""

from __future__ import annotations

import numpy as np
import torch

from .helpers import train_args


def test_huge_features_stop_first_epoch(dataset, tmp_path, cli):
    # Finite float32 values whose squares overflow inside the encoder.
    images = np.load(dataset / "train_ims.npy")
    np.save(dataset / "train_ims.npy", (images * 1e30).astype(np.float32))

    result = cli(*train_args(dataset, tmp_path / "runs"))
    log = tmp_path / "runs" / "run" / "train.log"

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "error: non-finite loss at epoch 1, step 1, net A: nce_loss=nan" in result.stderr
    assert "no checkpoint was saved yet (the run failed in its first epoch)" in result.stderr
    assert f"(traceback in {log})" in result.stderr
    assert "Traceback" in log.read_text(encoding="utf-8")
    assert not (tmp_path / "runs" / "run" / "checkpoints").exists()


def test_exploding_lr_names_last_checkpoint(shared_dataset, tmp_path, cli_in_process):
    # After the first epoch the learning rate grows by 1e20, which sends the weights to infinity.
    result = cli_in_process(
        *train_args(
            shared_dataset, tmp_path / "runs", "--set", "train.lr_decay_epochs=[1]", "--set", "train.lr_decay=1e20",
            epochs=3,
        )
    )
    last = tmp_path / "runs" / "run" / "checkpoints" / "last.pt"

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "error: non-finite loss at epoch 2, step " in result.stderr
    assert "hinge_loss=" in result.stderr
    assert "image_rectify_loss=nan" in result.stderr
    assert f"last good checkpoint: {last} (epoch 1)" in result.stderr
    assert torch.load(last, weights_only=True)["epoch"] == 1
