import os
from pathlib import Path

# Spinning OpenMP threads slow everything down on a shared 2-core machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FLICKR8K = SHARED_DATA / "flickr8k_precomp"


@pytest.fixture
def flickr8k_root() -> Path:
    """The shared Flickr8k precomp folder; tests that use it skip when it is absent."""
    if not FLICKR8K.is_dir():
        pytest.skip(f"shared Flickr8k data not found at {FLICKR8K}")
    return FLICKR8K
