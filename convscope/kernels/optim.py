"""Compiled in-place optimiser updates: one pass over each parameter instead of four or five.

Each kernel takes a parameter, its gradient and its state buffers as flat float32 arrays and applies
torch's update rule, as convscope.optim does in NumPy (the weight decay folded into the gradient).
"""

import numpy as np

from convscope.kernels.compile import jit


@jit
def sgd_update(p, g, buf, lr, momentum, nesterov, weight_decay, first):
    """p -= lr * d with d = buf (or g + momentum * buf if nesterov), buf = momentum * buf + g
    (buf = g at the first step); without momentum (buf unused), p -= lr * g."""
    lr32, m32, wd32 = np.float32(lr), np.float32(momentum), np.float32(weight_decay)
    for i in range(p.size):
        grad = g[i] + wd32 * p[i]
        if momentum != 0.0:
            b = grad if first else buf[i] * m32 + grad
            buf[i] = b
            grad = grad + m32 * b if nesterov else b
        p[i] -= lr32 * grad


@jit
def adam_update(p, g, m, v, step_size, beta1, beta2, root_correction2, eps, weight_decay):
    """m = beta1 m + (1 - beta1) g; v = beta2 v + (1 - beta2) g²;
    p -= step_size * m / (sqrt(v) / root_correction2 + eps), step_size = lr / (1 - beta1^t)."""
    b1, b2 = np.float32(beta1), np.float32(beta2)
    c1, c2 = np.float32(1.0 - beta1), np.float32(1.0 - beta2)
    size, root, e, wd = (
        np.float32(step_size),
        np.float32(root_correction2),
        np.float32(eps),
        np.float32(weight_decay),
    )
    for i in range(p.size):
        grad = g[i] + wd * p[i]
        mi = m[i] * b1 + c1 * grad
        vi = v[i] * b2 + c2 * (grad * grad)
        m[i] = mi
        v[i] = vi
        p[i] -= size * (mi / (np.sqrt(vi) / root + e))
