"""Data parallelism across the CPU's cores, inside one process.

A batch is split into shards along N; each shard runs forward (and backward) in its own thread on
a replica of the model that shares the parameter arrays but keeps its own caches and gradients,
and the shard gradients are summed. NumPy releases the GIL inside its element-wise loops and BLAS
calls, so the shards really run at the same time, element-wise work included. Meanwhile BLAS is
held to one thread, so the two levels of threading do not fight over the cores.

Sums over shards change the order of floating-point additions, so results agree with a
single-threaded run to rounding (~1e-7 relative), and are bit-identical from run to run for the
same number of workers.

Batch normalisation is the exception: each shard normalises with its own batch statistics, as
DistributedDataParallel does without SyncBatchNorm, so a model with BatchNorm2D layers trains a
little differently with different numbers of workers (still bit-identical run to run for the same
number). The running statistics move once per step: each replica records its shard's count, mean
and variance, and the runner combines them exactly into the whole batch's (convscope.ops.norm) and
updates the shared buffers after the step, so they do not depend on the number of workers beyond
rounding, and with one worker they equal torch's.
"""

import copy
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

MIN_SHARD = 16  # smaller shards cost more in thread hand-offs than they gain


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def shard_slices(n: int, workers: int) -> list[slice]:
    """Split range(n) into at most `workers` contiguous slices of at least MIN_SHARD items."""
    count = max(1, min(workers, n // MIN_SHARD))
    step = n / count  # the bounds np.linspace(0, n, count + 1).round() gives, without its overhead
    bounds = [round(step * i) for i in range(count)] + [n]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def replicate_layer(layer):
    """A layer sharing `params` and `buffers` (the same dicts, so in-place updates reach every
    replica) with its own gradients, caches and batch statistics."""
    twin = copy.copy(layer)
    twin.grads = {}
    twin._cache = None
    twin.batch_statistics = None
    return twin


class ShardedRunner:
    """Runs a Sequential's passes over shards of a batch in a small thread pool."""

    def __init__(self, model, workers: int):
        self.model = model
        self.workers = workers
        self.replicas = [model]
        self.pool = (
            ThreadPoolExecutor(max_workers=workers - 1, thread_name_prefix="convscope")
            if workers > 1
            else None
        )
        self._blas = None

    def _replica(self, index: int):
        while len(self.replicas) <= index:
            self.replicas.append(self.model.replica())
        return self.replicas[index]

    def _single_blas_thread(self):
        """A context holding BLAS to one thread (threadpoolctl), created once per runner."""
        if self._blas is None:
            from threadpoolctl import ThreadpoolController

            self._blas = ThreadpoolController()
        return self._blas.limit(limits=1, user_api="blas")

    def _map(self, function, shards, one_blas_thread=False):
        """[function(i, shard) for each shard], the first in the calling thread, the others in the pool.
        BLAS runs on one thread whenever there are several shards, or when `one_blas_thread`."""
        if len(shards) == 1 and not one_blas_thread:
            return [function(0, shards[0])]
        with self._single_blas_thread():
            if len(shards) == 1:
                return [function(0, shards[0])]
            futures = [self.pool.submit(function, i, s) for i, s in enumerate(shards) if i > 0]
            first = function(0, shards[0])
            return [first] + [f.result() for f in futures]

    def _shard_rngs(self, rng, count: int) -> list:
        """One Generator per shard: `rng` itself, unless several shards draw random numbers (dropout)."""
        if rng is not None and count > 1 and any(layer.uses_rng for layer in self.model.layers):
            # Seeds drawn from rng itself, so its bit-generator state alone determines the run.
            return [np.random.default_rng(seed) for seed in rng.integers(0, 2**63, size=count)]
        return [rng] * count

    def loss_and_gradients(self, x, y, rng=None):
        """Mean loss, logits (N, K) and the summed gradients (named like `parameters()`) of one batch.

        Also moves the model's buffers once, with the statistics of every shard combined."""
        n = x.shape[0]
        shards = shard_slices(n, self.workers)
        rngs = self._shard_rngs(rng, len(shards))

        def run(index, part):
            replica = self._replica(index)
            count = part.stop - part.start
            loss, logits = replica.loss_and_gradients(
                x[part], y[part], rng=rngs[index], loss_weight=count / n
            )
            return loss * count / n, logits, replica.gradients(), replica.batch_statistics()

        results = self._map(run, shards)
        self.model.update_buffers([r[3] for r in results])
        grads = results[0][2]
        if len(results) > 1:
            grads = {name: sum(r[2][name] for r in results) for name in grads}
        loss = sum(r[0] for r in results)
        logits = results[0][1] if len(results) == 1 else np.concatenate([r[1] for r in results])
        return loss, logits, grads

    def record_batch_statistics(self, x, rng=None):
        """A training-mode forward pass of a batch (N, H, W, C), for its statistics alone: moves the
        model's buffers once, as a training step would, and changes nothing else. `rng` drives dropout."""
        shards = shard_slices(x.shape[0], self.workers)
        rngs = self._shard_rngs(rng, len(shards))

        def run(index, part):
            replica = self._replica(index)
            replica.forward_logits(x[part], training=True, rng=rngs[index])
            return replica.batch_statistics()

        self.model.update_buffers(self._map(run, shards))

    def forward_logits(self, x):
        """Inference-mode logits (N, K) of a batch. BLAS keeps to one thread even for one shard: inference
        runs a few images at a time (convscope.kernels.plan.infer), whose matrix products are too small
        to gain from BLAS's threads, which then only wait for each other (and for any other busy
        process)."""
        shards = shard_slices(x.shape[0], self.workers)
        outputs = self._map(
            lambda index, part: self._replica(index).forward_logits(x[part]), shards, one_blas_thread=True
        )
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=False)
