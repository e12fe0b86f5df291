"""Optimisers: turn gradients into parameter updates, in place, with PyTorch's update rules.

`step(params, grads)` takes two dicts keyed by parameter name (as in `Sequential.state_dict()`)
and updates each parameter array in place; per-parameter state is kept under the same names.
A NaN or infinite gradient raises NonFiniteGradient before any parameter is touched.
`state_dict()` / `load_state_dict()` carry the hyperparameters, the step count and every buffer,
so a resumed optimiser continues bit for bit (see convscope.checkpoint).
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


def _fusable(p: np.ndarray, g: np.ndarray) -> bool:
    """Whether the compiled update applies: the numba backend, float32, contiguous arrays."""
    from convscope.kernels import backend

    return (
        backend() == "numba"
        and p.dtype == g.dtype == np.float32
        and p.flags.c_contiguous
        and g.flags.c_contiguous
    )


def _fused_kernels():
    from convscope.kernels import optim

    return optim


class NonFiniteGradient(ArithmeticError):
    """Optimizer.step was given a NaN or infinite gradient and updated nothing; `name` is the first such
    parameter's (in the order of `params`, the order of the layers)."""

    def __init__(self, name: str):
        super().__init__(f"the gradient of {name} holds NaN or infinite values")
        self.name = name


def first_non_finite(arrays: dict):
    """The name of the first array holding a NaN or an infinity, or None. (A float64 sum of float32 values
    cannot overflow, and NaN and infinities survive it, so one cheap reduction per array suffices.)"""
    for name, array in arrays.items():
        if not np.isfinite(np.sum(array, dtype=np.float64)):
            return name
    return None


class Optimizer:
    """Base class: holds the learning rate and per-parameter state."""

    buffers: tuple[str, ...] = ()  # the names of the per-parameter state arrays

    def __init__(self, lr: float, weight_decay: float):
        self.lr = _check_hyper("lr", lr, 0.0, include_low=False)
        self.weight_decay = _check_hyper("weight_decay", weight_decay, 0.0)
        self.state: dict[str, dict[str, np.ndarray]] = {}
        self.steps = 0

    def step(self, params: dict, grads: dict):
        """Update every parameter in place from its gradient; NonFiniteGradient (nothing updated) if a
        gradient holds NaN or infinite values."""
        bad = first_non_finite({name: grads[name] for name in params})
        if bad is not None:
            raise NonFiniteGradient(bad)
        self.steps += 1
        for name, p in params.items():
            g = grads[name]
            if _fusable(p, g):
                self._fused_update(name, p, g)
            else:
                self._update(name, p, g + self.weight_decay * p if self.weight_decay else g)

    def get_config(self) -> dict:
        raise NotImplementedError

    def state_dict(self) -> dict:
        """{"type": class name, "hyperparameters": get_config() (lr included), "steps": int,
        "state": {param name: {buffer name: array}}}; the arrays are the optimiser's own, not copies."""
        return {
            "type": type(self).__name__,
            "hyperparameters": self.get_config(),
            "steps": self.steps,
            "state": {name: dict(buffers) for name, buffers in self.state.items()},
        }

    def load_state_dict(self, state: dict, params: dict | None = None):
        """Take hyperparameters, step count and buffers (copied) from `state_dict()` output; with `params`
        ({name: array}), each buffer must belong to a parameter and have its shape and dtype.
        A ValueError says what does not fit; nothing is changed then."""
        if not isinstance(state, dict) or state.get("type") != type(self).__name__:
            kind = state.get("type") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"optimizer state is for {kind!r}, this optimizer is {type(self).__name__}")
        hyperparameters = state.get("hyperparameters")
        if not isinstance(hyperparameters, dict):
            raise ValueError("optimizer state: hyperparameters must be a dict")
        try:
            fresh = type(self)(**hyperparameters)
        except TypeError as error:
            raise ValueError(
                f"optimizer state: hyperparameters do not fit {type(self).__name__}: {error}"
            ) from None
        steps = state.get("steps")
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
            raise ValueError(f"optimizer state: steps must be a whole number >= 0, got {steps!r}")
        buffers = self._checked_buffers(state.get("state"), params)
        vars(self).update({k: v for k, v in vars(fresh).items() if k not in ("state", "steps")})
        self.steps = steps
        self.state = buffers
        return self

    def _checked_buffers(self, state, params) -> dict:
        if not isinstance(state, dict):
            raise ValueError("optimizer state: state must map parameter names to buffers")
        checked = {}
        for name, buffers in state.items():
            if params is not None and name not in params:
                raise ValueError(f"optimizer state: buffers for {name!r}, which the model does not have")
            if not isinstance(buffers, dict) or set(buffers) != set(self.buffers):
                found = sorted(buffers) if isinstance(buffers, dict) else type(buffers).__name__
                raise ValueError(
                    f"optimizer state of {name!r}: buffers {found}, expected {list(self.buffers)}"
                )
            checked[name] = {}
            for key, value in buffers.items():
                value = np.array(value, copy=True)
                if params is not None and (
                    value.shape != params[name].shape or value.dtype != params[name].dtype
                ):
                    raise ValueError(
                        f"optimizer state of {name!r}: {key} is {value.dtype} {value.shape}, "
                        f"expected {params[name].dtype} {params[name].shape}"
                    )
                checked[name][key] = value
        return checked

    def _update(self, name: str, p: np.ndarray, g: np.ndarray):
        """The reference update of p in place, g including the weight decay."""
        raise NotImplementedError

    def _fused_update(self, name: str, p: np.ndarray, g: np.ndarray):
        """The same update in one compiled pass (convscope.kernels.optim), weight decay included."""
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay:
    buf = momentum * buf + g;  p -= lr * (g + momentum * buf if nesterov else buf)."""

    buffers = ("momentum_buffer",)

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

    def _fused_update(self, name, p, g):
        buf, first = np.zeros(1, dtype=np.float32), False
        if self.momentum:
            state = self.state.setdefault(name, {})
            first = state.get("momentum_buffer") is None
            if first:
                state["momentum_buffer"] = np.empty_like(p)
            buf = state["momentum_buffer"]
        _fused_kernels().sgd_update(
            p.reshape(-1),
            g.reshape(-1),
            buf.reshape(-1),
            self.lr,
            self.momentum,
            self.nesterov,
            self.weight_decay,
            first,
        )

    def get_config(self):
        return {
            "lr": self.lr,
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
        }


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction, L2 weight decay added to the gradient (torch.optim.Adam)."""

    buffers = ("exp_avg", "exp_avg_sq")

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
        if "exp_avg" not in state or "exp_avg_sq" not in state:
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

    def _fused_update(self, name, p, g):
        beta1, beta2 = self.betas
        state = self.state.setdefault(name, {})
        if "exp_avg" not in state or "exp_avg_sq" not in state:
            state["exp_avg"] = np.zeros_like(p)
            state["exp_avg_sq"] = np.zeros_like(p)
        step_size = self.lr / (1 - beta1**self.steps)
        root_correction2 = math.sqrt(1 - beta2**self.steps)
        _fused_kernels().adam_update(
            p.reshape(-1),
            g.reshape(-1),
            state["exp_avg"].reshape(-1),
            state["exp_avg_sq"].reshape(-1),
            step_size,
            beta1,
            beta2,
            root_correction2,
            self.eps,
            self.weight_decay,
        )

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


class Steps:
    """Step decay (torch.optim.lr_scheduler.MultiStepLR): `max_lr`, multiplied by `gamma` each time
    the run passes one of `milestones`, given as fractions of its steps. The ResNet paper's CIFAR
    schedule, lr 0.1 divided by 10 at 32k and 48k of 64k iterations, is Steps(0.1, (0.5, 0.75))."""

    def __init__(self, max_lr, milestones=(0.5, 0.75), gamma=0.1):
        self.max_lr = _check_hyper("max_lr", max_lr, 0.0, include_low=False)
        self.gamma = _check_hyper("gamma", gamma, 0.0, 1.0, include_low=False)
        if not all(0.0 < m < 1.0 for m in milestones) or list(milestones) != sorted(milestones):
            raise ValueError(f"Steps: milestones must be increasing fractions in (0, 1), got {milestones!r}")
        self.milestones = tuple(float(m) for m in milestones)

    def __call__(self, step: int, total_steps: int) -> float:
        passed = sum(step >= round(m * total_steps) for m in self.milestones)
        return self.max_lr * self.gamma**passed
