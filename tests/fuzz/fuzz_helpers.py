"""Shared pieces of the fuzz tests: the budget, the case runner, byte-level mutations."""

import gzip
import os
import time
from collections import Counter

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FUZZ_EXAMPLES = int(os.environ.get("CONVSCOPE_FUZZ_EXAMPLES", "2000"))
MAX_SECONDS_PER_CASE = 5.0
MAX_RSS_GROWTH_MB = 400
CASES: Counter = Counter()  # cases run per parser, printed in the terminal summary

fuzz_settings = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
# for entry points that reach a parser already fuzzed on its own (load_idx_pair, resuming a checkpoint)
secondary_settings = settings(fuzz_settings, max_examples=max(FUZZ_EXAMPLES // 4, 1))

INTERESTING_U32 = [0, 1, 2, 3, 4, 8, 10, 28, 255, 256, 3073, 65535, 65536, 2**24, 2**31 - 1, 2**31, 2**32 - 1]


def run_case(parser: str, parse, allowed: tuple):
    """Run parse(); only `allowed` exceptions may come out, and it must be quick. Counts the case.
    Quick in processor time, which a parser stuck in a loop or inflating a bomb spends and which
    other processes on a loaded machine do not (a case once took 8 s of wall time that way)."""
    start = time.process_time()
    try:
        result = parse()
    except allowed:
        result = None
    elapsed = time.process_time() - start
    assert elapsed < MAX_SECONDS_PER_CASE, f"{parser}: one case took {elapsed:.1f} s of processor time"
    CASES[parser] += 1
    return result


@st.composite
def mutated(draw, data: bytes, max_ops: int = 4):
    """`data` changed by 1 to `max_ops` bit flips, byte writes, big-endian uint32 writes of edge values,
    truncations, insertions or deletions."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(["flip", "byte", "u32", "truncate", "insert", "delete"]))
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        if op == "flip" and out:
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte" and out:
            out[at] = draw(st.integers(0, 255))
        elif op == "u32" and len(out) >= 4:
            at = min(at, len(out) - 4)
            value = draw(st.sampled_from(INTERESTING_U32))
            out[at : at + 4] = value.to_bytes(4, draw(st.sampled_from(["big", "little"])))
        elif op == "truncate":
            del out[at:]
        elif op == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del out[at : at + draw(st.integers(1, 16))]
    return bytes(out)


def mutations_of(seeds, gzip_too: bool = False):
    """Random bytes, and mutations of each seed (with gzip_too: gzipped before or after mutating)."""
    options = [st.binary(max_size=256)] + [mutated(seed) for seed in seeds]
    if gzip_too:
        options += [mutated(gzip.compress(seed, mtime=0)) for seed in seeds]
        options += [mutated(seed).map(lambda b: gzip.compress(b, mtime=0)) for seed in seeds]
    return st.one_of(options)
