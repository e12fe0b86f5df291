"""Fuzzing the parsers: every test here feeds one parser mutated valid files and random bytes.

Budget: CONVSCOPE_FUZZ_EXAMPLES cases per parser (default 2,000, as `make test` runs them; `make fuzz`
runs 10,000). A parser may only raise its documented error type; each case must finish within
MAX_SECONDS_PER_CASE and the whole run may not grow the process's peak memory by more than
MAX_RSS_GROWTH_MB. The terminal summary lists how many cases each parser ran.
"""

import resource
import sys

import pytest
from fuzz_helpers import CASES


@pytest.fixture(autouse=True)
def no_memory_blow_up():
    """The process's peak resident memory may not grow much while a fuzz test runs."""
    from fuzz_helpers import MAX_RSS_GROWTH_MB

    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is in bytes on macOS, KiB on Linux
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    yield
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale - before) / 2**20
    assert grown < MAX_RSS_GROWTH_MB, f"peak memory grew by {grown:.0f} MB during fuzzing"


def pytest_terminal_summary(terminalreporter):
    if CASES:
        counts = ", ".join(f"{name} {count:,}" for name, count in sorted(CASES.items()))
        terminalreporter.write_line(f"fuzz cases per parser: {counts}")
