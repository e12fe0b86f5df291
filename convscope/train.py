"""The fit loop: loss at the output, backpropagate, update, repeat over the data for many epochs."""

import sys
from dataclasses import dataclass, field

import numpy as np

from convscope.model import check_images, check_labels
from convscope.optim import Adam


@dataclass
class History:
    """Per-epoch metrics of a fit, like Keras' History: `history["loss"][epoch]`."""

    history: dict = field(
        default_factory=lambda: {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}
    )

    def record(self, **metrics):
        for key, value in metrics.items():
            self.history.setdefault(key, []).append(float(value))

    def __getitem__(self, key):
        return self.history[key]

    @property
    def epochs(self) -> int:
        return len(self.history["loss"])


def batch_indices(n: int, batch_size: int, rng: np.random.Generator | None):
    """Index arrays of consecutive mini-batches over a permutation of range(n) (or range(n) itself)."""
    order = rng.permutation(n) if rng is not None else np.arange(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def _progress(total: int, epoch: int, epochs: int, verbose: int):
    """A tqdm bar per epoch (steps, ETA, loss, accuracy), silent when verbose=0 or not a TTY."""
    from tqdm.auto import tqdm

    quiet = verbose == 0 or not sys.stderr.isatty()
    return tqdm(total=total, desc=f"epoch {epoch}/{epochs}", unit="step", disable=quiet, leave=True)


def _check_fit_arguments(epochs, batch_size):
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"fit: {name} must be a positive int, got {value!r}")


def fit(
    model,
    x,
    y,
    epochs=1,
    batch_size=32,
    validation_data=None,
    shuffle=True,
    seed=0,
    verbose=1,
    augment=None,
    lr_schedule=None,
):
    """Train `model` on images x (N, H, W, C) and class ids y (N,); returns a History.

    augment: None or a callable (batch, rng) -> batch applied to raw training batches only
    (e.g. convscope.data.augment.Augmentation). lr_schedule: None or a callable
    (step, total_steps) -> learning rate, set on the optimiser before every step (e.g. OneCycle).
    One Generator seeded by `seed` drives shuffling, augmentation and dropout: equal seeds, equal runs.
    """
    _check_fit_arguments(epochs, batch_size)
    x = model._prepare(x)
    if x.shape[0] == 0:
        raise ValueError("fit needs at least one training image")
    y = check_labels(y, x.shape[0], model.num_classes)
    if validation_data is not None:
        x_val, y_val = validation_data
        x_val = check_images(x_val, model.input_shape, what="validation x")
        y_val = check_labels(y_val, x_val.shape[0], model.num_classes, what="validation y")
    if model.optimizer is None:
        model.compile(Adam(1e-3))
    rng = np.random.default_rng(seed)
    history = History()
    steps_per_epoch = -(-x.shape[0] // batch_size)
    step = 0
    for epoch in range(1, epochs + 1):
        batches = batch_indices(x.shape[0], batch_size, rng if shuffle else None)
        loss_sum, correct, seen = 0.0, 0, 0
        with _progress(len(batches), epoch, epochs, verbose) as bar:
            for idx in batches:
                batch = x[idx] if augment is None else augment(x[idx], rng)
                if lr_schedule is not None:
                    model.optimizer.lr = lr_schedule(step, epochs * steps_per_epoch)
                loss, logits = model.train_step(model.standardize(batch), y[idx], rng=rng)
                step += 1
                loss_sum += loss * len(idx)
                correct += int((logits.argmax(axis=1) == y[idx]).sum())
                seen += len(idx)
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", accuracy=f"{correct / seen:.4f}")
                bar.update(1)
        metrics = {"loss": loss_sum / seen, "accuracy": correct / seen}
        if validation_data is not None:
            metrics["val_loss"], metrics["val_accuracy"] = model.evaluate(x_val, y_val)
        history.record(**metrics)
        if verbose:
            summary = "  ".join(f"{k}={v:.4f}" for k, v in metrics.items())
            print(f"epoch {epoch}/{epochs}  {summary}", flush=True)
    return history
