import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize(
    "arguments",
    [["--refiner", "attention"], ["--refiner", "gat", "--k", "5"], ["--refiner", "mean", "--topology", "star", "--query-node"]],
)
def test_rectify_only_example(arguments):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "rectify_only.py"), *arguments], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "prototypes (32, 64)" in result.stdout
