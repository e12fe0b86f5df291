"""`convscope train` in a child process, for tests/test_checkpoint.py.

With CONVSCOPE_TEST_PAUSE_AT=N it prints PAUSED and sleeps at the N-th augmented batch, so the test can
SIGKILL it at a known point in the middle of an epoch. Everything else is the real command.
"""

import os
import sys
import time

from convscope.cli import main
from convscope.data import augment


def pause_at(count: int) -> None:
    original = augment.Augmentation.__call__
    calls = [0]

    def pausing(self, x, rng):
        calls[0] += 1
        if calls[0] == count:
            print("PAUSED", flush=True)
            time.sleep(600)
        return original(self, x, rng)

    augment.Augmentation.__call__ = pausing


if __name__ == "__main__":
    if os.environ.get("CONVSCOPE_TEST_PAUSE_AT"):
        pause_at(int(os.environ["CONVSCOPE_TEST_PAUSE_AT"]))
    sys.exit(main(sys.argv[1:]))
