"""The loss at the output: softmax cross-entropy, fused for numerical stability."""

import numpy as np


def log_softmax(logits):
    """log(softmax(logits)) along the last axis without overflow or log(0)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax_cross_entropy_forward(logits, labels):
    """Mean cross-entropy of softmax(logits) against integer class labels.

    logits: (N, K) float, labels: (N,) ints in [0, K). Returns (loss as a Python float, cache).
    """
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (N, K), got {logits.shape}")
    labels = np.asarray(labels)
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"labels must have shape ({logits.shape[0]},), got {labels.shape}")
    log_p = log_softmax(logits)
    rows = np.arange(logits.shape[0])
    loss = -log_p[rows, labels].mean()
    return float(loss), (log_p, labels)


def softmax_cross_entropy_backward(cache, dloss: float = 1.0):
    """Gradient of the mean loss with respect to the logits: (softmax - onehot) / N, (N, K)."""
    log_p, labels = cache
    n = log_p.shape[0]
    dlogits = np.exp(log_p)
    dlogits[np.arange(n), labels] -= 1.0
    dlogits *= dloss / n
    return dlogits
