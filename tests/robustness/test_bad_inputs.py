"""Invalid dataset files given to the real ``in2r-graph train``: one clear line, exit code 2, no run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from .helpers import SPLIT_IMAGES, CliCase, assert_user_error, run_cases, train_args, write_dataset, write_split

TRAIN_IMAGES = SPLIT_IMAGES["train"]


def _drop_last_caption(root: Path) -> list[str]:
    path = root / "train_caps.txt"
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")
    return [str(path), f"{len(lines) - 1} captions for {TRAIN_IMAGES} images", "expected N to be a multiple of M"]


def _empty_caption_line(root: Path) -> list[str]:
    path = root / "dev_caps.txt"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[3] = "   "
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [str(path), "line 4 is empty", "expected one caption per line"]


def _tsv_row_without_tab(root: Path) -> list[str]:
    (root / "test_caps.txt").unlink()
    path = root / "test_caps.tsv"
    rows = [f"img{j}.jpg\tcaption {j}" for j in range(SPLIT_IMAGES["test"])]
    rows[1] = "img1.jpg caption without a tab"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return [str(path), "line 2 has no tab", "expected 'id<TAB>caption'"]


def _latin1_captions(root: Path) -> list[str]:
    path = root / "train_caps.txt"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[0] = "caf\u00e9 on a street"
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return [str(path), "invalid UTF-8 byte 0xe9 at byte offset 3", "expected a UTF-8 text file"]


def _nan_feature(root: Path) -> list[str]:
    path = root / "train_ims.npy"
    images = np.load(path)
    images[5, 2] = np.nan
    np.save(path, images)
    return [str(path), "row 5 contains NaN or inf", "expected finite values"]


def _inf_embedding(root: Path) -> list[str]:
    path = root / "dev_caps_minilm.npy"
    embeddings = np.load(path)
    embeddings[7, 0] = -np.inf
    np.save(path, embeddings)
    return [str(path), "row 7 contains NaN or inf", "expected finite values"]


def _zero_rows(root: Path) -> list[str]:
    path = root / "test_ims.npy"
    np.save(path, np.zeros((0, 8), dtype=np.float32))
    return [str(path), "shape (0, 8) with no elements"]


def _one_dimensional_features(root: Path) -> list[str]:
    path = root / "train_ims.npy"
    np.save(path, np.zeros(TRAIN_IMAGES, dtype=np.float32))
    return [str(path), f"array has shape ({TRAIN_IMAGES},)", "expected global features (M, D) or region features"]


def _integer_features(root: Path) -> list[str]:
    path = root / "train_ims.npy"
    np.save(path, np.zeros((TRAIN_IMAGES, 8), dtype=np.int64))
    return [str(path), "dtype int64", "expected float16 or float32"]


def _image_size_differs(root: Path) -> list[str]:
    write_split(root, "dev", SPLIT_IMAGES["dev"], image_dim=9)
    return ["split 'dev' has global images of shape (20, 9)", "shape (60, 8)", "expected the same kind and per-image shape"]


def _caption_size_differs(root: Path) -> list[str]:
    write_split(root, "test", SPLIT_IMAGES["test"], text_dim=5)
    return ["split 'test' has caption embeddings of size 5", "has size 6", "expected the same size in every split"]


def _missing_split_file(root: Path) -> list[str]:
    (root / "dev_caps.txt").unlink()
    return [str(root), "no caption file for split 'dev'", "expected dev_caps.txt or dev_caps.tsv"]


def _empty_folder(root: Path) -> list[str]:
    for entry in root.iterdir():
        entry.unlink()
    return [f"dataset folder {root} is empty", "expected precomp files"]


def _path_is_a_file(root: Path) -> list[str]:
    for entry in root.iterdir():
        entry.unlink()
    root.rmdir()
    root.write_text("not a folder\n", encoding="utf-8")
    return [f"dataset path {root} is a file", "expected a dataset folder"]


def _missing_folder(root: Path) -> list[str]:
    for entry in root.iterdir():
        entry.unlink()
    root.rmdir()
    return [f"dataset folder {root} not found"]


# Cases run through the installed command in a subprocess.
CASES: dict[str, Callable[[Path], list[str]]] = {
    "captions_not_multiple": _drop_last_caption,
    "empty_caption_line": _empty_caption_line,
    "tsv_row_without_tab": _tsv_row_without_tab,
    "captions_not_utf8": _latin1_captions,
    "nan_feature": _nan_feature,
    "inf_embedding": _inf_embedding,
    "zero_rows": _zero_rows,
    "features_1d": _one_dimensional_features,
    "image_size_differs": _image_size_differs,
    "missing_split_file": _missing_split_file,
    "empty_folder": _empty_folder,
    "path_is_a_file": _path_is_a_file,
}

# Further cases, run through the CLI's main() in this process.
MORE_CASES: dict[str, Callable[[Path], list[str]]] = {
    "features_integer": _integer_features,
    "caption_size_differs": _caption_size_differs,
    "missing_folder": _missing_folder,
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, CliCase]:
    """Run ``in2r-graph train`` once per case, each on its own corrupted copy of the tiny dataset."""
    cases = {}
    for name, corrupt in CASES.items():
        folder = tmp_path_factory.mktemp(name)
        dataset = write_dataset(folder / "data" / "tiny")
        fragments = corrupt(dataset)
        cases[name] = CliCase(train_args(dataset, folder / "runs"), folder, fragments)
    return run_cases(cases)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_dataset_rejected(case, outcomes):
    outcome = outcomes[case]

    assert_user_error(outcome.result, *outcome.fragments)
    assert not (outcome.cwd / "runs").exists()


@pytest.mark.parametrize("case", list(MORE_CASES))
def test_more_bad_datasets_rejected(case, dataset, tmp_path, cli_in_process):
    fragments = MORE_CASES[case](dataset)

    result = cli_in_process(*train_args(dataset, tmp_path / "runs"))

    assert_user_error(result, *fragments)
    assert not (tmp_path / "runs").exists()


def test_nan_check_names_region_file(dataset, tmp_path, cli_in_process):
    regions = np.zeros((TRAIN_IMAGES, 3, 8), dtype=np.float16)
    regions[2, 1, 4] = np.inf
    np.save(dataset / "train_regions.npy", regions)
    for split in ("dev", "test"):
        np.save(dataset / f"{split}_regions.npy", np.zeros((SPLIT_IMAGES[split], 3, 8), dtype=np.float16))

    result = cli_in_process(*train_args(dataset, tmp_path / "runs", "--set", "data.image_features=regions"))

    assert_user_error(result, str(dataset / "train_regions.npy"), "row 2 contains NaN or inf")
    assert not (tmp_path / "runs").exists()
