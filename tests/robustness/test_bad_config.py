"""Invalid settings given to the real ``in2r-graph`` commands: one clear line, exit code 2, nothing written."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from .helpers import CAPTIONS_PER_IMAGE, SPLIT_IMAGES, CliCase, assert_user_error, run_cases, train_args

TRAIN_PAIRS = SPLIT_IMAGES["train"] * CAPTIONS_PER_IMAGE

# Settings of a bi-GRU text encoder over the raw captions, with small word vectors.
GRU = ["--set", "data.text_features=", "--set", "model.word_dim=4"]

# name: (extra train arguments, fragments of the message).
# Run through the installed command in a subprocess.
SETTINGS = {
    "unknown_key": (
        ["--set", "rectify.refinr=gat"],
        ["unknown config key 'rectify.refinr'", "did you mean 'rectify.refiner'?"],
    ),
    "unknown_refiner": (
        ["--set", "rectify.refiner=graphormer"],
        ["unknown refiner 'graphormer'", "registered refiners: ", "attention", "gat", "sage", "mean"],
    ),
    "k_zero": (["--set", "rectify.k=0"], ["rectify.k=0 is invalid", "at least 1 neighbour"]),
    "k_above_training_pairs": (
        ["--set", f"rectify.k={TRAIN_PAIRS}"],
        [f"rectify.k={TRAIN_PAIRS} is larger than the memory bank allows", f"expected rectify.k < {TRAIN_PAIRS}"],
    ),
    "k_equals_bank_size": (
        ["--set", "rectify.k=10", "--set", "rectify.bank_size=10"],
        ["rectify.k=10 is larger than rectify.bank_size=10 allows", "expected rectify.k < rectify.bank_size"],
    ),
    "batch_size_zero": (["--set", "train.batch_size=0"], ["train.batch_size=0 is invalid", "at least 2"]),
}

# Run through the CLI's main() in this process.
MORE_SETTINGS = {
    "unknown_bare_key": (
        ["--set", "warmup_epoch=1"],
        ["unknown config key 'warmup_epoch'", "did you mean 'warmup_epochs'?"],
    ),
    "epochs_zero": (["--epochs", "0"], ["train.epochs=0 is invalid", "expected at least 1"]),
    "seed_negative": (["--seed", "-1"], ["train.seed=-1 is invalid", "expected an integer in [0, 2**31)"]),
    "not_an_integer": (["--set", "rectify.k=2.5"], ["rectify.k=2.5 is not a valid int"]),
    "unknown_device": (["--set", "train.device=gpu"], ["device 'gpu' is invalid", "expected auto, cpu, cuda or cuda:N"]),
    "star_without_query": (
        ["--set", "rectify.topology=star"],
        ["rectify.topology='star'", "needs rectify.query_node=true"],
    ),
    "split_name_with_slash": (["--set", "data.dev_split=../dev"], ["data.dev_split='../dev' is invalid"]),
    "min_noisy_fraction_one": (
        ["--set", "train.min_noisy_fraction=1"],
        ["train.min_noisy_fraction=1.0 is invalid; expected [0, 1)"],
    ),
    "unknown_search_backend": (
        ["--set", "rectify.search_backend=annoy"],
        ["rectify.search_backend='annoy' is unknown", "the registered backends are", "faiss-ivf", "torch"],
    ),
    "negative_grad_clip": (["--set", "train.grad_clip=-1"], ["train.grad_clip=-1.0 is invalid", "0 disables"]),
    "negative_rectify_weight": (["--set", "rectify.weight=-0.5"], ["rectify.weight=-0.5 is invalid"]),
    "ensemble_with_in2r": (
        ["--set", "train.ensemble=true"],
        ["train.ensemble=true applies to train.method='contrastive'", "'in2r' already trains two networks"],
    ),
    "run_name_with_separator": (["--run-name", "../escape"], ["train.run_name='../escape' is invalid"]),
    "word_vectors_with_embeddings": (
        ["--set", "model.word_vectors=glove.txt"],
        ["model.word_vectors='glove.txt' is set", "the text encoder is 'embedding'", "word vectors feed only the bi-GRU"],
    ),
}


def _yaml_unknown_key(folder: Path) -> tuple[list[str], list[str]]:
    config = folder / "run.yaml"
    config.write_text("train:\n  epoch: 3\n", encoding="utf-8")
    return ["--config", str(config)], [str(config), "unknown config key 'train.epoch'", "did you mean 'train.epochs'?"]


def _yaml_unknown_section(folder: Path) -> tuple[list[str], list[str]]:
    config = folder / "run.yaml"
    config.write_text("rectfy:\n  k: 3\n", encoding="utf-8")
    return ["--config", str(config)], [str(config), "unknown section 'rectfy'", "did you mean 'rectify'?"]


def _yaml_invalid(folder: Path) -> tuple[list[str], list[str]]:
    config = folder / "run.yaml"
    config.write_text("train: [epochs: 3\n", encoding="utf-8")
    return ["--config", str(config)], [str(config), "not a valid YAML file"]


def _yaml_duplicate_key(folder: Path) -> tuple[list[str], list[str]]:
    config = folder / "run.yaml"
    config.write_text("rectify:\n  k: 3\n  k: 5\n", encoding="utf-8")
    return ["--config", str(config)], [str(config), "not a valid YAML file", "line 3: key 'k' is set twice"]


def _yaml_missing(folder: Path) -> tuple[list[str], list[str]]:
    config = folder / "absent.yaml"
    return ["--config", str(config)], [f"config file not found: {config}"]


def _word_vectors_missing(folder: Path) -> tuple[list[str], list[str]]:
    path = folder / "glove.6B.4d.txt"
    return [*GRU, "--set", f"model.word_vectors={path}"], [
        f"model.word_vectors: file {path} not found",
        "in2r-graph never downloads word vectors",
    ]


def _word_vectors_wrong_size(folder: Path) -> tuple[list[str], list[str]]:
    path = folder / "vectors.txt"
    path.write_text("image 0.1 0.2 0.3\ncaption 0.4 0.5 0.6\n", encoding="utf-8")
    return [*GRU, "--set", f"model.word_vectors={path}"], [
        str(path),
        "line 1 (word 'image') has 3 values; expected 4 (model.word_dim)",
    ]


def _word_vectors_not_utf8(folder: Path) -> tuple[list[str], list[str]]:
    path = folder / "vectors.txt"
    path.write_bytes(b"image 0.1 0.2 0.3 0.4\ncaf\xe9 0.1 0.2 0.3 0.4\n")
    return [*GRU, "--set", f"model.word_vectors={path}"], [str(path), "line 2 has an invalid UTF-8 byte 0xe9"]


def _word_vectors_no_match(folder: Path) -> tuple[list[str], list[str]]:
    path = folder / "vectors.txt"
    path.write_text("chien 0.1 0.2 0.3 0.4\nchat 0.4 0.5 0.6 0.7\n", encoding="utf-8")
    return [*GRU, "--set", f"model.word_vectors={path}"], [str(path), "none of the", "vocabulary words has a vector"]


# Run through the installed command in a subprocess.
FILES: dict[str, Callable[[Path], tuple[list[str], list[str]]]] = {
    "word_vectors_missing": _word_vectors_missing,
}

# Run through the CLI's main() in this process.
MORE_FILES: dict[str, Callable[[Path], tuple[list[str], list[str]]]] = {
    "yaml_unknown_key": _yaml_unknown_key,
    "yaml_unknown_section": _yaml_unknown_section,
    "yaml_invalid": _yaml_invalid,
    "yaml_duplicate_key": _yaml_duplicate_key,
    "yaml_missing": _yaml_missing,
    "word_vectors_wrong_size": _word_vectors_wrong_size,
    "word_vectors_not_utf8": _word_vectors_not_utf8,
    "word_vectors_no_match": _word_vectors_no_match,
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, shared_dataset) -> dict[str, CliCase]:
    """Run one ``in2r-graph train`` subprocess per case, each with its own output folder."""
    cases = {}
    for name, (extra, fragments) in SETTINGS.items():
        folder = tmp_path_factory.mktemp(name)
        cases[name] = CliCase(train_args(shared_dataset, folder / "runs", *extra), folder, fragments)
    for name, prepare in FILES.items():
        folder = tmp_path_factory.mktemp(name)
        extra, fragments = prepare(folder)
        cases[name] = CliCase(train_args(shared_dataset, folder / "runs", *extra), folder, fragments)
    return run_cases(cases)


@pytest.mark.parametrize("case", [*SETTINGS, *FILES])
def test_bad_setting_rejected(case, outcomes):
    outcome = outcomes[case]

    assert_user_error(outcome.result, *outcome.fragments)
    assert not (outcome.cwd / "runs").exists()


@pytest.mark.parametrize("case", list(MORE_SETTINGS))
def test_more_bad_settings_rejected(case, shared_dataset, tmp_path, cli_in_process):
    extra, fragments = MORE_SETTINGS[case]

    result = cli_in_process(*train_args(shared_dataset, tmp_path / "runs", *extra))

    assert_user_error(result, *fragments)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("case", list(MORE_FILES))
def test_more_bad_files_rejected(case, shared_dataset, tmp_path, cli_in_process):
    extra, fragments = MORE_FILES[case](tmp_path)

    result = cli_in_process(*train_args(shared_dataset, tmp_path / "runs", *extra))

    assert_user_error(result, *fragments)
    assert not (tmp_path / "runs").exists()


def test_out_dir_that_is_a_file(shared_dataset, tmp_path, cli_in_process):
    blocker = tmp_path / "runs"
    blocker.write_text("not a folder", encoding="utf-8")

    result = cli_in_process(*train_args(shared_dataset, blocker / "nested"))

    assert_user_error(result, f"{blocker} is a file, not a folder")
    assert blocker.read_text(encoding="utf-8") == "not a folder"


def test_resume_of_plain_folder(tmp_path, cli_in_process):
    folder = tmp_path / "not_a_run"
    folder.mkdir()

    result = cli_in_process("train", "--resume", folder)

    assert_user_error(result, f"cannot resume: {folder} is not a run directory (no config.yaml)")


def test_evaluate_missing_checkpoint(tmp_path, cli_in_process):
    result = cli_in_process("evaluate", tmp_path / "absent.pt")

    assert_user_error(result, f"checkpoint not found: {tmp_path / 'absent.pt'}")


def test_evaluate_text_file_as_checkpoint(tmp_path, cli_in_process):
    not_a_checkpoint = tmp_path / "notes.pt"
    not_a_checkpoint.write_text("these are notes, not weights\n", encoding="utf-8")

    result = cli_in_process("evaluate", not_a_checkpoint)

    assert_user_error(result, f"{not_a_checkpoint} is not an in2r-graph checkpoint")
    assert "weights_only=False" not in result.stderr


def test_evaluate_checkpoint_flag_with_file(tmp_path, cli_in_process):
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"")

    result = cli_in_process("evaluate", checkpoint, "--checkpoint", "last")

    assert_user_error(result, "--checkpoint last picks a checkpoint inside a run directory", "pass the run directory")


def test_word_vectors_used(shared_dataset, tmp_path, cli_in_process):
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("2 4\nimage 0.1 0.2 0.3 0.4\nunused 1 1 1 1\ncaption 0.5 0.6 0.7 0.8\n", encoding="utf-8")

    result = cli_in_process(*train_args(shared_dataset, tmp_path / "runs", *GRU, "--set", f"model.word_vectors={vectors}", epochs=1))

    assert result.returncode == 0, result.stderr
    assert "read word vectors for 2 of" in result.stderr


def test_five_fold_needs_5000_images(shared_dataset, tmp_path, cli, cli_in_process):
    trained = cli_in_process(*train_args(shared_dataset, tmp_path / "runs", epochs=1))
    run_dir = tmp_path / "runs" / "run"

    result = cli("evaluate", run_dir, "--split", "test", "--five-fold")
    plain = cli_in_process("evaluate", run_dir, "--split", "test")

    assert trained.returncode == 0, trained.stderr
    assert_user_error(
        result,
        "--five-fold needs a split of exactly 5,000 images",
        f"split 'test' of {shared_dataset} has {SPLIT_IMAGES['test']} images",
        "evaluate without --five-fold",
    )
    assert plain.returncode == 0, plain.stderr
    assert "rSum" in plain.stdout
