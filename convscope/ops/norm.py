"""Batch normalisation over the channel axis of (N, H, W, C) blocks, as torch.nn.BatchNorm2d computes it.

Training: each channel c is normalised with the mean and the *biased* variance of its N * H * W values
in the batch, then scaled and shifted by learnable per-channel `weight` (gamma) and `bias` (beta):

    y = (x - mean_c) / sqrt(var_c + eps) * weight_c + bias_c

The batch statistics also move the running statistics used at inference, with the *unbiased* variance
(var * count / (count - 1)), exactly as PyTorch does:

    running = (1 - momentum) * running + momentum * batch

Inference: the running mean and variance take the place of the batch's.

Data-parallel shards each normalise with their own batch statistics (like DistributedDataParallel
without SyncBatchNorm); `combine_batch_statistics` merges the shards' (count, mean, var) into the
whole batch's exactly, so the running statistics move once per step, as for one undivided batch.
"""

from typing import NamedTuple

import numpy as np


class BatchStatistics(NamedTuple):
    """Per-channel statistics of one batch: `count` values per channel, their mean and biased
    variance, each (C,)."""

    count: int
    mean: np.ndarray
    var: np.ndarray


class BatchNormCache(NamedTuple):
    normalised: np.ndarray  # (N * H * W, C): (x - mean) / sqrt(var + eps)
    inv_std: np.ndarray  # (C,)
    weight: np.ndarray  # (C,)
    statistics: BatchStatistics


def _channel_sum(rows: np.ndarray) -> np.ndarray:
    """(M, C) -> (C,) column sums; a matrix-vector product is much faster than rows.sum(axis=0)."""
    return np.ones(rows.shape[0], dtype=rows.dtype) @ rows


def _channel_rows(x: np.ndarray, what: str) -> np.ndarray:
    if x.ndim != 4:
        raise ValueError(f"{what} expects images of shape (N, H, W, C), got shape {x.shape}")
    return x.reshape(-1, x.shape[3])


def batchnorm2d_forward(x, weight, bias, eps: float = 1e-5):
    """Training-mode batch normalisation with the batch's own statistics.

    x: (N, H, W, C), weight and bias: (C,). Returns y: (N, H, W, C) and a BatchNormCache, whose
    `statistics` (count N * H * W, mean (C,), biased var (C,)) feed the running statistics.
    """
    rows = _channel_rows(x, "batchnorm2d")
    count = rows.shape[0]
    if count < 2:
        raise ValueError(
            f"batchnorm2d: training needs more than 1 value per channel, got input shape {x.shape}"
        )
    mean = _channel_sum(rows) / count
    centred = rows - mean
    var = _channel_sum(centred * centred) / count
    inv_std = 1.0 / np.sqrt(var + eps)
    centred *= inv_std  # now the normalised values
    y = centred * weight
    y += bias
    cache = BatchNormCache(centred, inv_std, weight, BatchStatistics(count, mean, var))
    return y.reshape(x.shape), cache


def batchnorm2d_backward(dy, cache: BatchNormCache):
    """dy: (N, H, W, C) -> dx: (N, H, W, C), dweight: (C,), dbias: (C,).

    With x_hat the normalised input and m = N * H * W values per channel:
    dx = weight / sqrt(var + eps) * (dy - mean(dy) - x_hat * mean(dy * x_hat)).
    """
    normalised, inv_std, weight, statistics = cache
    dy_rows = dy.reshape(normalised.shape)
    dbias = _channel_sum(dy_rows)
    dweight = _channel_sum(dy_rows * normalised)
    count = statistics.count
    dx = normalised * (dweight / count)
    np.subtract(dy_rows, dx, out=dx)
    dx -= dbias / count
    dx *= weight * inv_std
    return dx.reshape(dy.shape), dweight, dbias


def batchnorm2d(x, running_mean, running_var, weight, bias, eps: float = 1e-5):
    """Inference-mode batch normalisation, (N, H, W, C) -> (N, H, W, C), with the running statistics:
    one multiply and one add per value (scale = weight / sqrt(running_var + eps))."""
    if x.ndim != 4:
        raise ValueError(f"batchnorm2d expects images of shape (N, H, W, C), got shape {x.shape}")
    scale = weight / np.sqrt(running_var + eps)
    shift = bias - running_mean * scale
    y = x * scale.astype(x.dtype, copy=False)
    y += shift.astype(x.dtype, copy=False)
    return y


def batchnorm2d_inference_backward(dy, x, running_mean, running_var, weight, eps: float = 1e-5):
    """Backward of inference-mode batch normalisation, a fixed per-channel x * scale + shift:
    dy, x: (N, H, W, C) -> dx: (N, H, W, C), dweight: (C,), dbias: (C,). Attribution uses it
    (gradients of a trained model's output in eval mode, as torch's `model.eval()`)."""
    inv_std = 1.0 / np.sqrt(running_var + eps)
    rows, dy_rows = _channel_rows(x, "batchnorm2d"), _channel_rows(dy, "batchnorm2d")
    dbias = _channel_sum(dy_rows)
    dweight = _channel_sum(dy_rows * ((rows - running_mean) * inv_std))
    dx = dy * (weight * inv_std).astype(dy.dtype, copy=False)
    return dx, dweight.astype(dy.dtype, copy=False), dbias


def combine_batch_statistics(shards) -> BatchStatistics:
    """The statistics of a batch from those of its disjoint shards (Chan et al.'s pairwise formula,
    in float64): count = sum n_i, mean = sum n_i mean_i / count,
    var = sum n_i (var_i + (mean_i - mean)^2) / count. One shard is returned as it is."""
    shards = list(shards)
    if not shards:
        raise ValueError("combine_batch_statistics needs at least one shard")
    if len(shards) == 1:
        return shards[0]
    dtype = shards[0].mean.dtype
    counts = np.array([s.count for s in shards], dtype=np.float64)[:, None]
    means = np.stack([s.mean for s in shards]).astype(np.float64)
    variances = np.stack([s.var for s in shards]).astype(np.float64)
    count = counts.sum()
    mean = (counts * means).sum(axis=0) / count
    var = (counts * (variances + (means - mean) ** 2)).sum(axis=0) / count
    return BatchStatistics(int(count), mean.astype(dtype), var.astype(dtype))


def update_running_statistics(running_mean, running_var, statistics: BatchStatistics, momentum: float):
    """Move the running statistics (C,) in place towards one batch's: the mean, and the unbiased
    variance var * count / (count - 1), each as running = (1 - momentum) * running + momentum * batch."""
    count = statistics.count
    unbiased = statistics.var * (count / (count - 1))
    running_mean *= 1.0 - momentum
    running_mean += momentum * statistics.mean.astype(running_mean.dtype, copy=False)
    running_var *= 1.0 - momentum
    running_var += momentum * unbiased.astype(running_var.dtype, copy=False)
