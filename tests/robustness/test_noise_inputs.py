"""Invalid noise files and ratios given to ``in2r-graph train`` and ``in2r-graph noise``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from .helpers import (
    CAPTIONS_PER_IMAGE,
    SPLIT_IMAGES,
    CliCase,
    assert_user_error,
    run_cases,
    train_args,
)

TRAIN_IMAGES = SPLIT_IMAGES["train"]
TRAIN_CAPTIONS = TRAIN_IMAGES * CAPTIONS_PER_IMAGE


def _clean_mapping() -> np.ndarray:
    return np.arange(TRAIN_CAPTIONS, dtype=np.int64) // CAPTIONS_PER_IMAGE


def _with_value(index: int, value: int) -> np.ndarray:
    mapping = _clean_mapping()
    mapping[index] = value
    return mapping


def _swapped_captions() -> np.ndarray:
    mapping = _clean_mapping()
    mapping[[0, 5]] = mapping[[5, 0]]
    return mapping


def _noise_args(dataset: Path, out: Path, ratio: str, convention: str = "caption") -> list[str]:
    return [
        "noise", "--data-root", str(dataset.parent), "--dataset", dataset.name,
        "--ratio", ratio, "--convention", convention, "--out", str(out),
    ]


# name: (array in the noise file, --noise-convention, fragments of the message).
# Run through the installed command in a subprocess.
FILE_CASES = {
    "image_permutation_as_caption": (
        np.random.default_rng(0).permutation(TRAIN_IMAGES),
        "caption",
        [f"shape ({TRAIN_IMAGES},)", "looks like an image permutation", f"expects shape ({TRAIN_CAPTIONS},)"],
    ),
    "wrong_length": (
        np.zeros(100, dtype=np.int64),
        "caption",
        ["shape (100,)", f"expects shape ({TRAIN_CAPTIONS},)"],
    ),
    "out_of_range": (
        _with_value(7, TRAIN_IMAGES),
        "caption",
        [f"contains {TRAIN_IMAGES} at index 7", f"expected image indices in [0, {TRAIN_IMAGES})"],
    ),
    "float_dtype": (
        _clean_mapping().astype(np.float64),
        "caption",
        ["dtype float64", "expected an integer array of image indices"],
    ),
}

# Run through the CLI's main() in this process.
MORE_FILE_CASES = {
    "caption_noise_as_image": (
        _swapped_captions(),
        "image",
        ["convention 'image' expects an image permutation", "--noise-convention caption"],
    ),
    "negative_value": (
        _with_value(6, -1),
        "caption",
        ["contains -1 at index 6", f"expected image indices in [0, {TRAIN_IMAGES})"],
    ),
    "not_a_permutation": (
        np.zeros(TRAIN_IMAGES, dtype=np.int64),
        "image",
        ["is not a permutation", f"image 0 appears {TRAIN_IMAGES} times", "expected each image index exactly once"],
    ),
}

# name: (data.noise_ratio of ``in2r-graph train``, fragment of the message)
TRAIN_RATIOS = {
    "train_ratio_one": ("1.0", "data.noise_ratio=1.0 is invalid; expected a number in [0, 1)"),
    "train_ratio_text": ("abc", "data.noise_ratio='abc' is not a valid float"),
}
MORE_TRAIN_RATIOS = {
    "train_ratio_negative": ("-0.1", "data.noise_ratio=-0.1 is invalid; expected a number in [0, 1)"),
    "train_ratio_nan": ("nan", "data.noise_ratio='nan' is not a valid float"),
}

# name: (--ratio of ``in2r-graph noise``, fragment of the message)
COMMAND_RATIOS = {
    "command_ratio_above_one": ("1.5", "--ratio 1.5 is invalid; expected a value in [0, 1)"),
    "command_ratio_text": ("ten", "--ratio 'ten' is not a number; expected a value in [0, 1)"),
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, shared_dataset) -> dict[str, CliCase]:
    """Run one ``in2r-graph`` subprocess per case, each in its own folder."""
    cases = {}
    for name, (array, convention, fragments) in FILE_CASES.items():
        folder = tmp_path_factory.mktemp(name)
        noise_file = folder / "noise.npy"
        np.save(noise_file, array)
        args = train_args(shared_dataset, folder / "runs", "--noise-file", str(noise_file), "--noise-convention", convention)
        cases[name] = CliCase(args, folder, [str(noise_file), *fragments])
    for name, (ratio, fragment) in TRAIN_RATIOS.items():
        folder = tmp_path_factory.mktemp(name)
        args = train_args(shared_dataset, folder / "runs", "--set", f"data.noise_ratio={ratio}")
        cases[name] = CliCase(args, folder, [fragment])
    for name, (ratio, fragment) in COMMAND_RATIOS.items():
        folder = tmp_path_factory.mktemp(name)
        cases[name] = CliCase(_noise_args(shared_dataset, folder / "noise.npy", ratio), folder, [fragment])
    return run_cases(cases)


@pytest.mark.parametrize("case", [*FILE_CASES, *TRAIN_RATIOS])
def test_bad_noise_for_train_rejected(case, outcomes):
    outcome = outcomes[case]

    assert_user_error(outcome.result, *outcome.fragments)
    assert not (outcome.cwd / "runs").exists()


@pytest.mark.parametrize("case", list(COMMAND_RATIOS))
def test_bad_ratio_for_noise_command_rejected(case, outcomes):
    outcome = outcomes[case]

    assert_user_error(outcome.result, *outcome.fragments)
    assert not (outcome.cwd / "noise.npy").exists()
    assert list(outcome.cwd.glob(".noise.npy*")) == []


@pytest.mark.parametrize("case", list(MORE_FILE_CASES))
def test_more_bad_noise_files_rejected(case, shared_dataset, tmp_path, cli_in_process):
    array, convention, fragments = MORE_FILE_CASES[case]
    noise_file = tmp_path / "noise.npy"
    np.save(noise_file, array)

    result = cli_in_process(
        *train_args(shared_dataset, tmp_path / "runs", "--noise-file", noise_file, "--noise-convention", convention)
    )

    assert_user_error(result, str(noise_file), *fragments)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("case", list(MORE_TRAIN_RATIOS))
def test_more_bad_ratios_rejected(case, shared_dataset, tmp_path, cli_in_process):
    ratio, fragment = MORE_TRAIN_RATIOS[case]

    result = cli_in_process(*train_args(shared_dataset, tmp_path / "runs", "--set", f"data.noise_ratio={ratio}"))

    assert_user_error(result, fragment)
    assert not (tmp_path / "runs").exists()


def test_missing_noise_file_rejected(shared_dataset, tmp_path, cli_in_process):
    result = cli_in_process(*train_args(shared_dataset, tmp_path / "runs", "--noise-file", tmp_path / "absent.npy"))

    assert_user_error(result, "data.noise_file", str(tmp_path / "absent.npy"), "not found")
    assert not (tmp_path / "runs").exists()


def test_noise_file_not_npy_rejected(shared_dataset, tmp_path, cli_in_process):
    noise_file = tmp_path / "noise.npy"
    noise_file.write_text("0 1 2 3\n", encoding="utf-8")

    result = cli_in_process(*train_args(shared_dataset, tmp_path / "runs", "--noise-file", noise_file))

    assert_user_error(result, str(noise_file), "not a .npy file", "expected a .npy file with one integer array")


def test_noise_command_bad_dataset(dataset, tmp_path, cli_in_process):
    captions = dataset / "train_caps.txt"
    captions.write_bytes(b"\xff\xfe not utf-8\n" * TRAIN_CAPTIONS)
    out = tmp_path / "noise.npy"

    result = cli_in_process(*_noise_args(dataset, out, "0.2", "image"))

    assert_user_error(result, str(captions), "invalid UTF-8 byte 0xff")
    assert not out.exists()
    assert list(tmp_path.glob(".noise.npy*")) == []


def test_noise_command_missing_out_folder(shared_dataset, tmp_path, cli_in_process):
    out = tmp_path / "absent" / "noise.npy"

    result = cli_in_process(*_noise_args(shared_dataset, out, "0.2"))

    assert_user_error(result, f"--out {out}: folder {out.parent} does not exist")
    assert not out.parent.exists()


def test_noise_command_out_is_folder(shared_dataset, tmp_path, cli_in_process):
    result = cli_in_process(*_noise_args(shared_dataset, tmp_path, "0.2"))

    assert_user_error(result, f"--out {tmp_path} is a folder; expected the path of the .npy file to write")


def test_noise_file_from_command_trains(shared_dataset, tmp_path, cli):
    out = tmp_path / "noise.npy"

    written = cli(*_noise_args(shared_dataset, out, "0.5", "image"), "--seed", "3")
    trained = cli(
        *train_args(shared_dataset, tmp_path / "runs", "--noise-file", "noise.npy", "--noise-convention", "image", epochs=1)
    )

    assert written.returncode == 0, written.stderr
    assert np.load(out).shape == (TRAIN_IMAGES,)
    assert trained.returncode == 0, trained.stderr
    assert (tmp_path / "runs" / "run" / "summary.json").is_file()
    assert f"noise_file: {out}" in (tmp_path / "runs" / "run" / "config.yaml").read_text()
