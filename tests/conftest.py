from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture
def golden_gpu() -> str:
    """Path of the round-number test profile (tests/data/profiles/golden-gpu.yaml)."""
    return str(DATA / "profiles" / "golden-gpu.yaml")
