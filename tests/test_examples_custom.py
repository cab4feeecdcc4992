import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_refiner.py"


@pytest.mark.slow
def test_custom_refiner_example_trains(tmp_path):
    result = subprocess.run(
        [
            sys.executable, str(EXAMPLE),
            "--epochs", "3", "--max-train-pairs", "200", "--embed-dim", "32", "--k", "4",
            "--edge-weights", "partner", "--out-dir", str(tmp_path),
        ],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "rSum" in result.stdout
    assert "refiner graphconv-example" in result.stdout
    summaries = list(tmp_path.glob("*/summary.json"))
    assert len(summaries) == 1
    last_record = json.loads(summaries[0].read_text())["last_record"]
    assert "A/text_rectify_loss" in last_record
    assert "A/text_prototype_fidelity" in last_record
    config = (summaries[0].parent / "config.yaml").read_text()
    assert "refiner: graphconv-example" in config
