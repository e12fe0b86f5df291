"""Fixtures for the interop tests: the shared real data (as in tests/data/conftest.py) and the small
architectures of interop_helpers, with random weights."""

import os
from pathlib import Path

import numpy as np
import pytest
from interop_helpers import ARCHITECTURES

# The project's real data sets live beside the repository, in ../shared/data (see its README).
SHARED_DATA = Path(
    os.environ.get("CONVSCOPE_SHARED_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data")
)


@pytest.fixture(scope="session")
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"SHARED DATA MISSING: {SHARED_DATA} not found (set CONVSCOPE_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(params=list(ARCHITECTURES), ids=list(ARCHITECTURES))
def architecture(request):
    """A built model with random weights (biases made nonzero so that their layout matters)."""
    model = ARCHITECTURES[request.param]()
    rng = np.random.default_rng(7)
    for key, param in model.state_dict().items():
        if key.endswith("bias"):
            param[...] = rng.uniform(-0.2, 0.2, param.shape)
    return model
