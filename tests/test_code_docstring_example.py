"""The code/docstring example: pair extraction and the small end-to-end run."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "code_docstring.py"

SOURCE = '''
class Basket:
    def __len__(self):
        """Return the number of fruits in the basket right now."""
        return len(self.fruits)

    def weigh(self, scale):
        """Weigh every fruit on the scale and return the total in grams.

        The scale is tared first.
        """
        scale.tare()
        return sum(scale.weigh(fruit) for fruit in self.fruits)

    def clear(self):
        """Drop all fruits."""
        self.fruits = []

    def refill(self):
        """Subclasses refill the basket from their own supplier."""
        raise NotImplementedError

    def short_doc(self):
        """Too short."""
        return 1
'''


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("code_docstring", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pairs_drop_docstring_and_trivial_functions(example, tmp_path):
    path = tmp_path / "basket.py"
    path.write_text(SOURCE, encoding="utf-8")
    pairs = example.function_pairs(path)
    assert len(pairs) == 1
    code, doc = pairs[0]
    assert code.startswith("def weigh(self, scale):")
    assert "tared" not in code
    assert "scale.tare()" in code
    assert doc == "Weigh every fruit on the scale and return the total in grams."


def test_unparsable_file_gives_no_pairs(example, tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("def broken(:\n", encoding="utf-8")
    assert example.function_pairs(path) == []


def test_split_words_splits_identifiers(example):
    assert example.split_words("getSourceLines(path_name)") == "get source lines path name "


def test_collate_bags_offsets(example):
    bags = [(torch.tensor([1, 2]), torch.tensor([0.5, 0.5])), (torch.tensor([3]), torch.tensor([1.0]))]
    batch = example.collate_bags(bags)
    assert torch.equal(batch["input"], torch.tensor([1, 2, 3]))
    assert torch.equal(batch["offsets"], torch.tensor([0, 2]))
    assert torch.equal(batch["weights"], torch.tensor([0.5, 0.5, 1.0]))


@pytest.mark.slow
def test_small_run_prints_both_methods(tmp_path):
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--small", "--out-dir", str(tmp_path), "--num-features", "4096", "--embed-dim", "32"],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "distinct function/docstring pairs" in result.stdout
    assert "in2r (best dev" in result.stdout
    assert "contrastive (best dev" in result.stdout
    assert "contrastive-ensemble (best dev" in result.stdout
    assert "clean/noisy split" in result.stdout
    summaries = sorted(tmp_path.glob("*/summary.json"))
    assert [json.loads(path.read_text())["method"] for path in summaries] == ["contrastive", "contrastive", "in2r"]
