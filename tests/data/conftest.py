import os
from pathlib import Path

import pytest

# The project's real data sets live beside the repository, in ../shared/data (see its README).
SHARED_DATA = Path(
    os.environ.get("CONVSCOPE_SHARED_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data")
)


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"SHARED DATA MISSING: {SHARED_DATA} not found (set CONVSCOPE_SHARED_DATA)")
    return SHARED_DATA
