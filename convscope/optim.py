"""Optimisers: turn gradients into parameter updates, in place, with PyTorch's update rules.

`step(params, grads)` takes two dicts keyed by parameter name (as in `Sequential.state_dict()`)
and updates each parameter array in place; per-parameter state is kept under the same names.
"""

import math

import numpy as np


def _check_hyper(name: str, value, low: float, high: float | None = None, include_low=True):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (value >= low if include_low else value > low)
    ok = ok and (high is None or value < high)
    if not ok:
        bound = f"[{low}, {high})" if high is not None else (f">= {low}" if include_low else f"> {low}")
        raise ValueError(f"{name} must be a number {bound}, got {value!r}")
    return float(value)


class Optimizer:
    """Base class: holds the learning rate and per-parameter state."""

    def __init__(self, lr: float, weight_decay: float):
        self.lr = _check_hyper("lr", lr, 0.0, include_low=False)
        self.weight_decay = _check_hyper("weight_decay", weight_decay, 0.0)
        self.state: dict[str, dict[str, np.ndarray]] = {}
        self.steps = 0

    def step(self, params: dict, grads: dict):
        self.steps += 1
        for name, p in params.items():
            g = grads[name]
            if self.weight_decay:
                g = g + self.weight_decay * p
            self._update(name, p, g)

    def _update(self, name: str, p: np.ndarray, g: np.ndarray):
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay:
    buf = momentum * buf + g;  p -= lr * (g + momentum * buf if nesterov else buf)."""

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.momentum = _check_hyper("momentum", momentum, 0.0, 1.0)
        if nesterov and self.momentum == 0.0:
            raise ValueError("SGD: nesterov=True needs momentum > 0")
        self.nesterov = bool(nesterov)

    def _update(self, name, p, g):
        if self.momentum:
            state = self.state.setdefault(name, {})
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = g.copy()
            else:
                buf *= self.momentum
                buf += g
            g = g + self.momentum * buf if self.nesterov else buf
        p -= self.lr * g

    def get_config(self):
        return {
            "lr": self.lr,
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
        }


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction, L2 weight decay added to the gradient (torch.optim.Adam)."""

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"Adam: betas must be a pair, got {betas!r}")
        self.betas = (
            _check_hyper("betas[0]", betas[0], 0.0, 1.0),
            _check_hyper("betas[1]", betas[1], 0.0, 1.0),
        )
        self.eps = _check_hyper("eps", eps, 0.0, include_low=False)

    def _update(self, name, p, g):
        beta1, beta2 = self.betas
        state = self.state.setdefault(name, {})
        if "exp_avg" not in state:
            state["exp_avg"] = np.zeros_like(p)
            state["exp_avg_sq"] = np.zeros_like(p)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= beta1
        m += (1 - beta1) * g
        v *= beta2
        v += (1 - beta2) * (g * g)
        correction1 = 1 - beta1**self.steps
        correction2 = 1 - beta2**self.steps
        denom = np.sqrt(v) / np.sqrt(correction2) + self.eps
        p -= (self.lr / correction1) * (m / denom)

    def get_config(self):
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps, "weight_decay": self.weight_decay}


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


def get_optimizer(spec) -> Optimizer:
    """An Optimizer instance, or 'sgd' / 'adam' for one with default settings."""
    if isinstance(spec, Optimizer):
        return spec
    if isinstance(spec, str) and spec.lower() in OPTIMIZERS:
        return OPTIMIZERS[spec.lower()]()
    raise ValueError(f"optimizer must be an Optimizer or one of {sorted(OPTIMIZERS)}, got {spec!r}")


class OneCycle:
    """The one-cycle learning-rate schedule (torch.optim.lr_scheduler.OneCycleLR, cosine, two
    phases): from max_lr / div_factor up to max_lr over the first pct_start of the steps, then down
    to max_lr / (div_factor * final_div_factor)."""

    def __init__(self, max_lr, pct_start=0.3, div_factor=25.0, final_div_factor=1e4):
        self.max_lr = _check_hyper("max_lr", max_lr, 0.0, include_low=False)
        self.pct_start = _check_hyper("pct_start", pct_start, 0.0, 1.0, include_low=False)
        self.initial_lr = self.max_lr / _check_hyper("div_factor", div_factor, 0.0, include_low=False)
        self.min_lr = self.initial_lr / _check_hyper(
            "final_div_factor", final_div_factor, 0.0, include_low=False
        )

    @staticmethod
    def _cosine(start, end, fraction):
        return end + (start - end) / 2.0 * (math.cos(math.pi * fraction) + 1)

    def __call__(self, step: int, total_steps: int) -> float:
        warmup_end = self.pct_start * total_steps - 1
        if step <= warmup_end:
            return self._cosine(self.initial_lr, self.max_lr, step / warmup_end if warmup_end > 0 else 1.0)
        fraction = (step - warmup_end) / max(total_steps - 1 - warmup_end, 1e-12)
        return self._cosine(self.max_lr, self.min_lr, min(fraction, 1.0))


class Cosine:
    """Cosine decay from the optimiser's lr `max_lr` to `min_lr` over the run."""

    def __init__(self, max_lr, min_lr=0.0):
        self.max_lr = _check_hyper("max_lr", max_lr, 0.0, include_low=False)
        self.min_lr = _check_hyper("min_lr", min_lr, 0.0)

    def __call__(self, step: int, total_steps: int) -> float:
        fraction = step / max(total_steps - 1, 1)
        return self.min_lr + (self.max_lr - self.min_lr) / 2.0 * (math.cos(math.pi * fraction) + 1)
