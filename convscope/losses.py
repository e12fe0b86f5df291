"""The loss at the output: softmax cross-entropy, fused for numerical stability."""

import numpy as np


def log_softmax(logits):
    """log(softmax(logits)) along the last axis without overflow or log(0)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def checked_label_smoothing(value) -> float:
    """value as a float if it is a number in [0, 1) (a label smoothing), else a ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"label_smoothing must be a number in [0, 1), got {value!r}")
    return float(value)


def softmax_cross_entropy_forward(logits, labels, label_smoothing: float = 0.0):
    """Mean cross-entropy of softmax(logits) against integer class labels.

    logits: (N, K) float, labels: (N,) ints in [0, K). label_smoothing e in [0, 1): the target of each
    image is (1 - e) * onehot + e / K, as in torch.nn.functional.cross_entropy. Returns (loss as a
    Python float, cache).
    """
    label_smoothing = checked_label_smoothing(label_smoothing)
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (N, K), got {logits.shape}")
    labels = np.asarray(labels)
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"labels must have shape ({logits.shape[0]},), got {labels.shape}")
    log_p = log_softmax(logits)
    rows = np.arange(logits.shape[0])
    loss = -log_p[rows, labels].mean()
    if label_smoothing:
        loss = (1.0 - label_smoothing) * loss - label_smoothing * log_p.mean()
    return float(loss), (log_p, labels, label_smoothing)


def softmax_cross_entropy_backward(cache, dloss: float = 1.0):
    """Gradient of the mean loss with respect to the logits: (softmax - target) / N, (N, K)."""
    log_p, labels, label_smoothing = cache
    n, k = log_p.shape
    dlogits = np.exp(log_p)
    dlogits[np.arange(n), labels] -= 1.0 - label_smoothing
    if label_smoothing:
        dlogits -= label_smoothing / k
    dlogits *= dloss / n
    return dlogits
