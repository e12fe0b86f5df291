"""The fit loop: loss at the output, backpropagate, update, repeat over the data for many epochs.

Reliability, for runs left alone for an hour:
- checkpoint=PATH writes the whole training state (convscope.checkpoint) atomically after every epoch,
  and on Ctrl-C, which is honoured between two steps so the state written is consistent;
  resume=PATH continues such a run so that it ends bit-identical to one never stopped.
- A NaN or infinite loss or gradient raises TrainingDiverged naming the step and the layer; the model
  keeps the weights from before that step and the checkpoint file its last good epoch. So does a loss
  that grew GROWTH_LIMIT times over the first one (or chance level): then the model keeps the weights
  from before the last step whose loss was under that limit.
- keep_best="val_accuracy" (or another metric) ends fit with the weights of the best epoch;
  early_stop=PATIENCE ends it once that metric (default val_loss) has not improved for PATIENCE epochs.
- swa_epochs=N, swa_lr=LR: after the schedule's `epochs`, N more at the constant rate LR, ending with the
  average of the weights after each of them (stochastic weight averaging, convscope.swa).
"""

import contextlib
import math
import os
import signal
import sys
import threading
from dataclasses import dataclass, field

import numpy as np

from convscope.checkpoint import TrainingState, data_checksum, load_checkpoint, save_checkpoint
from convscope.checks import check_images, check_labels
from convscope.optim import Adam, NonFiniteGradient
from convscope.snapshots import Snapshots, checked_schedule
from convscope.swa import average_into, recompute_batchnorm

MONITORS = ("val_accuracy", "val_loss", "accuracy", "loss")
GROWTH_LIMIT = 100  # a loss this many times the first one (or chance level, log(classes)) is divergence


class TrainingDiverged(RuntimeError):
    """A non-finite loss or gradient stopped training. The message names the step and the layer (and
    suggests a smaller learning rate when the loss grew first); `step` is the failing optimiser step
    (1-based), `layer` the index of the first layer with a non-finite gradient, or None. The model keeps
    the weights from before that step; a checkpoint file keeps its last good epoch."""

    def __init__(self, message: str, step: int, layer: int | None = None):
        super().__init__(message)
        self.step = step
        self.layer = layer


@dataclass
class History:
    """Per-epoch metrics of a fit, like Keras' History: `history["loss"][epoch]`.

    best_epoch: with keep_best, the (1-based) epoch whose weights the model ends with;
    stopped_early: whether early_stop ended the fit before its last epoch;
    averaged: with swa_epochs, {"epochs": how many were averaged, and "val_loss", "val_accuracy" of the
    averaged weights when there is validation_data} (the per-epoch metrics are SGD's own weights').
    """

    history: dict = field(
        default_factory=lambda: {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}
    )
    best_epoch: int | None = None
    stopped_early: bool = False
    averaged: dict | None = None

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


def validation_split(x, y, fraction: float, seed: int = 0):
    """Hold out a seeded random `fraction` of (x (N, ...), y (N,)) for validation:
    ((x_train, y_train), (x_val, y_val)), each part in its original order. Its own Generator, seeded by
    `seed`, draws the split, so fit's Generator is untouched."""
    n = len(x)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be a number between 0 and 1, got {fraction!r}")
    count = int(round(fraction * n))
    if not 1 <= count < n or len(y) != n:
        raise ValueError(
            f"validation fraction {fraction} of {n} images leaves {count} for validation and "
            f"{n - count} for training; both need at least one"
        )
    chosen = np.zeros(n, dtype=bool)
    chosen[np.random.default_rng(seed).permutation(n)[:count]] = True
    return (x[~chosen], y[~chosen]), (x[chosen], y[chosen])


def holdout_last(x, y, count: int):
    """Hold out the last `count` of (x (N, ...), y (N,)) for validation, in their stored order:
    ((x_train, y_train), (x_val, y_val)). As the ResNet paper split CIFAR-10's 50,000 training images
    into 45,000 for training and the last 5,000 for validation."""
    n = len(x)
    if (
        isinstance(count, bool)
        or not isinstance(count, (int, np.integer))
        or not 1 <= count < n
        or len(y) != n
    ):
        raise ValueError(
            f"holding out the last {count!r} of {n} images needs a whole number from 1 to {n - 1} "
            "(both parts need at least one image)"
        )
    return (x[: n - count], y[: n - count]), (x[n - count :], y[n - count :])


def _progress(total: int, epoch: int, epochs: int, verbose: int, initial: int = 0):
    """A tqdm bar per epoch (steps, ETA, loss, accuracy), silent when verbose=0 or not a TTY."""
    from tqdm.auto import tqdm

    quiet = verbose == 0 or not sys.stderr.isatty()
    return tqdm(
        total=total, initial=initial, desc=f"epoch {epoch}/{epochs}", unit="step", disable=quiet, leave=True
    )


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_swa_arguments(swa_epochs, swa_lr, keep_best, early_stop):
    if not _is_int(swa_epochs) or swa_epochs < 0:
        raise ValueError(f"fit: swa_epochs must be a whole number >= 0, got {swa_epochs!r}")
    if swa_epochs == 0:
        if swa_lr is not None:
            raise ValueError("fit: swa_lr is the learning rate of the swa_epochs: give swa_epochs too")
        return
    ok = isinstance(swa_lr, (int, float, np.floating)) and not isinstance(swa_lr, bool)
    if not (ok and math.isfinite(swa_lr) and swa_lr > 0):
        raise ValueError(f"fit: swa_epochs needs swa_lr, a learning rate > 0, got {swa_lr!r}")
    if keep_best is not None or early_stop is not None:
        option = "keep_best" if keep_best is not None else "early_stop"
        raise ValueError(f"fit: {option} and swa_epochs exclude each other (the average is the result)")


def _check_fit_arguments(epochs, batch_size, keep_best, early_stop, has_validation: bool):
    """The metric to monitor (keep_best, else val_loss when early stopping, else None); or a ValueError."""
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if not _is_int(value) or value < 1:
            raise ValueError(f"fit: {name} must be a positive int, got {value!r}")
    if keep_best is not None and keep_best not in MONITORS:
        raise ValueError(f"fit: keep_best must be one of {', '.join(MONITORS)}, got {keep_best!r}")
    if early_stop is not None and (not _is_int(early_stop) or early_stop < 1):
        raise ValueError(f"fit: early_stop must be a patience of at least 1 epoch, got {early_stop!r}")
    monitor = keep_best or ("val_loss" if early_stop is not None else None)
    if monitor and monitor.startswith("val_") and not has_validation:
        option = f"keep_best={keep_best!r}" if keep_best else "early_stop"
        raise ValueError(f"fit: {option} watches {monitor}, which needs validation_data (or --val-split)")
    return monitor


def _checked_validation(model, validation_data):
    if validation_data is None:
        return None
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        raise ValueError(
            f"fit: validation_data must be a pair (x_val, y_val), got {type(validation_data).__name__}"
        )
    x_val = check_images(validation_data[0], model.input_shape, what="validation x")
    y_val = check_labels(validation_data[1], x_val.shape[0], model.num_classes, what="validation y")
    if x_val.shape[0] == 0:
        raise ValueError("fit: validation_data holds no images")
    return x_val, y_val


@contextlib.contextmanager
def _deferred_interrupts(enabled: bool):
    """Within: Ctrl-C (SIGINT) is noted instead of raised, so the loop can stop between two steps and
    checkpoint a consistent state; a second Ctrl-C interrupts at once. Yields a function telling whether
    one came. Off unless enabled, in the main thread, and SIGINT has Python's default handler."""
    usable = (
        enabled
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    )
    if not usable:
        yield lambda: False
        return
    noted = []

    def note(signum, frame):
        noted.append(signum)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, note)
    try:
        yield lambda: bool(noted)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@dataclass
class _Run:
    """The fixed settings of one fit call, and what it has seen of the loss (for the divergence hint)."""

    model: object
    x: np.ndarray
    y: np.ndarray
    validation: tuple | None
    epochs: int  # the schedule's, then swa_epochs more
    batch_size: int
    shuffle: bool
    augment: object
    lr_schedule: object
    swa_epochs: int
    swa_lr: float | None
    verbose: int
    checkpoint: str | None
    keep_best: str | None
    monitor: str | None
    patience: int | None
    interrupted: object = None
    saved: tuple | None = None  # (path, epoch, batch) of the last checkpoint written or resumed from
    lowest_loss: float = math.inf
    last_loss: float | None = None
    loss_limit: float = math.inf  # GROWTH_LIMIT times the first loss (or chance level), set at step 1
    good_weights: dict | None = None  # the weights before the last step whose loss was under the limit
    trial_weights: dict | None = None  # the weights before the current step
    snapshots: object = None  # the convscope.snapshots.Snapshots being recorded, if any

    @property
    def batches(self) -> int:
        return -(-self.x.shape[0] // self.batch_size)

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.swa_epochs


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
    checkpoint=None,
    resume=None,
    keep_best=None,
    early_stop=None,
    snapshots=None,
    swa_epochs=0,
    swa_lr=None,
):
    """Train `model` on images x (N, H, W, C) and class ids y (N,); returns a History.

    augment: None or a callable (batch, rng) -> batch applied to raw training batches only
    (e.g. convscope.data.augment.Augmentation). lr_schedule: None or a callable
    (step, total_steps) -> learning rate, set on the optimiser before every step (e.g. OneCycle).
    One Generator seeded by `seed` drives shuffling, augmentation and dropout: equal seeds, equal runs.

    checkpoint: a file to write the training state to after every epoch and on Ctrl-C (then
    KeyboardInterrupt is raised). resume: a checkpoint to continue from (and, without `checkpoint`, to
    keep writing); batch_size, shuffle, the training data and keep_best must be those it was written
    with, `epochs` may grow. keep_best: 'val_accuracy', 'val_loss', 'accuracy' or 'loss': end with the
    weights of the best epoch. early_stop: stop when that metric (val_loss without keep_best) has not
    improved for this many epochs. Raises TrainingDiverged on a NaN or infinite loss or gradient.
    snapshots: 'epoch' or a number of steps N: record the first conv layer's kernels and the first
    training image's first-layer feature maps before training and then every epoch or every N steps,
    into `model.snapshots` (saved with the model and in checkpoints; see convscope.snapshots).
    swa_epochs, swa_lr: stochastic weight averaging (convscope.swa): after the `epochs` (and their
    lr_schedule), train swa_epochs more at the constant learning rate swa_lr, and end with the mean of
    the weights after each of those epochs, batch normalisation's statistics measured afresh over one
    more epoch of x's batches, shuffled and augmented as in training;
    History.averaged holds its validation metrics. A checkpoint keeps the average so far; a finished run
    can be resumed with swa_epochs added.
    """
    x = model._prepare(x)
    if x.shape[0] == 0:
        raise ValueError("fit needs at least one training image")
    y = check_labels(y, x.shape[0], model.num_classes)
    validation = _checked_validation(model, validation_data)
    _check_swa_arguments(swa_epochs, swa_lr, keep_best, early_stop)
    monitor = _check_fit_arguments(epochs, batch_size, keep_best, early_stop, validation is not None)
    checkpoint = resume if checkpoint is None else checkpoint
    checkpoint = None if checkpoint is None else os.fspath(checkpoint)
    settings = {
        "epochs": int(epochs),
        "batch_size": int(batch_size),
        "shuffle": bool(shuffle),
        "num_train": int(x.shape[0]),
        "train_checksum": data_checksum(x, y) if checkpoint else None,
        "keep_best": keep_best,
        "label_smoothing": model.label_smoothing,
        "seed": int(seed),
        "snapshots": None if snapshots is None else checked_schedule(snapshots),
        "swa_epochs": int(swa_epochs),
        "swa_lr": None if swa_lr is None else float(swa_lr),
    }
    run = _Run(
        model=model,
        x=x,
        y=y,
        validation=validation,
        epochs=settings["epochs"],
        batch_size=settings["batch_size"],
        shuffle=settings["shuffle"],
        augment=augment,
        lr_schedule=lr_schedule,
        swa_epochs=settings["swa_epochs"],
        swa_lr=settings["swa_lr"],
        verbose=verbose,
        checkpoint=checkpoint,
        keep_best=keep_best,
        monitor=monitor,
        patience=early_stop,
    )
    if resume is not None:
        state = load_checkpoint(resume, model, settings)
        run.saved = (os.fspath(resume), state.epoch, state.batch)
        if verbose:
            print(f"resumed from {os.fspath(resume)}: {_position(state, run)}", flush=True)
    else:
        state = TrainingState(settings, np.random.default_rng(seed), History().history)
        if snapshots is not None:
            model.snapshots = Snapshots.start(model, settings["snapshots"], x[0])
            model.snapshots.take(model, 0, 0.0)
    run.snapshots = model.snapshots if snapshots is not None else None
    if model.optimizer is None:
        model.compile(Adam(1e-3))
    model.augmentation = augment.get_config() if hasattr(augment, "get_config") else None
    history = History(state.history)
    with _deferred_interrupts(checkpoint is not None) as interrupted:
        run.interrupted = interrupted
        while state.epoch < run.total_epochs and not _patience_exhausted(run, state):
            _train_epoch(run, state)
            _end_epoch(run, state, history)
    return _finish(run, state, history)


def _position(state, run) -> str:
    text = f"{state.epoch} of {run.total_epochs} epochs done, step {state.step}"
    if state.batch:
        text += f", {state.batch} of {run.batches} batches into epoch {state.epoch + 1}"
    return text


def _patience_exhausted(run, state) -> bool:
    return run.patience is not None and state.wait >= run.patience


def _train_epoch(run: _Run, state) -> None:
    """The steps of epoch state.epoch + 1 from batch state.batch on; on Ctrl-C, checkpoint and stop."""
    n = run.x.shape[0]
    if state.batch == 0:
        state.order = state.rng.permutation(n) if run.shuffle else np.arange(n)
        state.running = {"loss_sum": 0.0, "correct": 0, "seen": 0}
    with _progress(run.batches, state.epoch + 1, run.total_epochs, run.verbose, initial=state.batch) as bar:
        for b in range(state.batch, run.batches):
            idx = state.order[b * run.batch_size : (b + 1) * run.batch_size]
            loss, logits = _train_step(run, state, idx)
            running = state.running
            running["loss_sum"] += loss * len(idx)
            running["correct"] += int((logits.argmax(axis=1) == run.y[idx]).sum())
            running["seen"] += len(idx)
            state.batch, state.step = b + 1, state.step + 1
            if run.snapshots is not None:
                run.snapshots.take(run.model, state.step, state.epoch + state.batch / run.batches)
            bar.set_postfix(
                loss=f"{running['loss_sum'] / running['seen']:.4f}",
                accuracy=f"{running['correct'] / running['seen']:.4f}",
            )
            bar.update(1)
            if run.interrupted() and state.batch < run.batches:
                _save(run, state)
                raise KeyboardInterrupt


def _train_step(run: _Run, state, idx):
    """One optimiser step on the images `idx`: (loss, logits); TrainingDiverged if it is not finite."""
    model = run.model
    batch = _training_batch(run, idx, state.rng)
    if state.step >= run.epochs * run.batches and run.swa_epochs:
        model.optimizer.lr = run.swa_lr
    elif run.lr_schedule is not None:
        model.optimizer.lr = run.lr_schedule(state.step, run.epochs * run.batches)
    run.trial_weights = _copy_weights(model, into=run.trial_weights)
    try:
        loss, logits = model.train_step(model.standardize(batch), run.y[idx], rng=state.rng)
    except NonFiniteGradient as error:
        raise _diverged(run, state, error.name) from None
    if not math.isfinite(loss):
        raise _diverged(run, state, None, f"the loss is {loss}")
    if run.last_loss is None:
        run.loss_limit = GROWTH_LIMIT * max(loss, math.log(max(model.num_classes, 2)))
    if loss > run.loss_limit:
        model.load_state_dict(run.good_weights)
        cause = (
            f"the loss grew from {run.lowest_loss:.4g} to {loss:.4g}, over {GROWTH_LIMIT} times where it "
            "started"
        )
        raise _diverged(run, state, None, cause, kept_good=True)
    run.good_weights, run.trial_weights = run.trial_weights, run.good_weights
    run.lowest_loss, run.last_loss = min(run.lowest_loss, loss), loss
    return loss, logits


def _training_batch(run: _Run, idx, rng):
    """The raw training images `idx`, augmented when the fit augments."""
    return run.x[idx] if run.augment is None else run.augment(run.x[idx], rng)


def _copy_weights(model, into=None) -> dict:
    """A copy of the model's state_dict (parameters and buffers), written into `into` when given."""
    if into is None:
        return {k: v.copy() for k, v in model.state_dict().items()}
    for key, value in model.state_dict().items():
        np.copyto(into[key], value)
    return into


def _layer_of(model, param: str):
    """(layer index, 'layer 3 (conv2d_1) weight') for a state_dict name like '3.weight'."""
    index, _, what = param.partition(".")
    if index.isdigit() and int(index) < len(model.layers):
        return int(index), f"layer {index} ({model.layers[int(index)].name}) {what}"
    return None, param


def _diverged(run: _Run, state, param, cause=None, kept_good=False) -> TrainingDiverged:
    """The TrainingDiverged for the step now failing: where, what, the likely cause, what is kept."""
    layer = None
    if param is not None:
        layer, where = _layer_of(run.model, param)
        cause = f"the gradient of {where} is NaN or infinite"
    step = state.step + 1
    place = f"step {step} (epoch {state.epoch + 1}, batch {state.batch + 1} of {run.batches})"
    lr = run.model.optimizer.lr
    if kept_good:
        hint = f"the learning rate {lr:.3g} is likely too high, try {lr / 10:.3g}"
    elif run.last_loss is None:
        hint = (
            "it failed at its first step: look for extreme values in the inputs, or try a learning rate "
            f"below {lr:.3g}"
        )
    elif run.last_loss > max(4 * run.lowest_loss, run.lowest_loss + 1):
        hint = (
            f"the loss rose from {run.lowest_loss:.4g} to {run.last_loss:.4g} before this: the learning rate "
            f"{lr:.3g} is likely too high, try {lr / 10:.3g}"
        )
    else:
        hint = (
            f"the loss was {run.last_loss:.4g} just before: the learning rate {lr:.3g} may be too high, "
            f"try {lr / 10:.3g} (or look for extreme values in the inputs)"
        )
    if run.saved is not None:
        path, epoch, batch = run.saved
        kept = f"the last good checkpoint ({_where(epoch, batch)}) is kept in {path}"
    elif run.checkpoint is not None:
        kept = f"no checkpoint was written yet ({run.checkpoint} is written after every epoch)"
    elif kept_good:
        kept = "the model keeps its weights from before the last step whose loss was under that"
    else:
        kept = "the model keeps the weights from before this step"
    return TrainingDiverged(f"training diverged at {place}: {cause}; {hint}; {kept}", step, layer)


def _where(epoch: int, batch: int) -> str:
    return f"after epoch {epoch}" if batch == 0 else f"epoch {epoch + 1}, batch {batch}"


def _save(run: _Run, state) -> None:
    save_checkpoint(run.checkpoint, run.model, state)
    run.saved = (run.checkpoint, state.epoch, state.batch)
    if state.batch and run.verbose:
        print(
            f"interrupted: checkpoint saved to {run.checkpoint} ({_where(state.epoch, state.batch)} of "
            f"{run.batches})",
            flush=True,
        )


def _end_epoch(run: _Run, state, history: History) -> None:
    """Record the epoch's metrics, track the best epoch, write the checkpoint, print the epoch line."""
    running = state.running
    metrics = {
        "loss": running["loss_sum"] / running["seen"],
        "accuracy": running["correct"] / running["seen"],
    }
    if run.validation is not None:
        metrics["val_loss"], metrics["val_accuracy"] = run.model.evaluate(*run.validation)
    history.record(**metrics)
    state.epoch, state.batch, state.order = state.epoch + 1, 0, None
    note = _track_best(run, state, metrics)
    if state.epoch > run.epochs:
        state.swa_weights = state.swa_weights or {k: v.copy() for k, v in run.model.parameters().items()}
        average_into(state.swa_weights, run.model.parameters(), state.swa_count)
        state.swa_count += 1
        note += f"  (averaged {state.swa_count})"
    if run.snapshots is not None:
        run.snapshots.take(run.model, state.step, state.epoch, epoch_done=True)
    if run.checkpoint is not None:
        _save(run, state)
    if run.verbose:
        summary = "  ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        print(f"epoch {state.epoch}/{run.total_epochs}  {summary}{note}", flush=True)
    if run.interrupted():
        if run.verbose:
            print(
                f"interrupted: checkpoint saved to {run.checkpoint} (after epoch {state.epoch})", flush=True
            )
        raise KeyboardInterrupt


def _track_best(run: _Run, state, metrics: dict) -> str:
    """Update the best epoch and the early-stopping count; a note for the epoch line."""
    if run.monitor is None:
        return ""
    value = metrics[run.monitor]
    best = state.best
    if best is None or (value > best["value"] if "accuracy" in run.monitor else value < best["value"]):
        state.best, state.wait = {"monitor": run.monitor, "value": value, "epoch": state.epoch}, 0
        if run.keep_best:
            state.best_weights = {k: v.copy() for k, v in run.model.state_dict().items()}
        return "  (best)" if run.keep_best else ""
    state.wait += 1
    if _patience_exhausted(run, state):
        return (
            f"  (early stop: no better {run.monitor} for {state.wait} epochs; best "
            f"{best['value']:.4f} after epoch {best['epoch']})"
        )
    return ""


def _finish(run: _Run, state, history: History) -> History:
    """Mark an early stop, with keep_best put the best epoch's weights back into the model, and with
    swa_epochs the averaged ones."""
    history.stopped_early = state.epoch < run.total_epochs and _patience_exhausted(run, state)
    if state.swa_count:
        history.averaged = _load_average(run, state)
    if run.keep_best and state.best_weights is not None:
        run.model.load_state_dict(state.best_weights)
        history.best_epoch = state.best["epoch"]
        if run.verbose:
            print(
                f"kept the weights of epoch {state.best['epoch']} ({run.monitor} {state.best['value']:.4f})",
                flush=True,
            )
    return history


def _load_average(run: _Run, state) -> dict:
    """Put the averaged weights into the model, measure batch normalisation's statistics for them in one
    more epoch's batches (shuffled and augmented as in training, drawn from the fit's Generator), and
    evaluate: History.averaged."""
    run.model.load_state_dict({**run.model.state_dict(), **state.swa_weights})
    order = batch_indices(run.x.shape[0], run.batch_size, state.rng if run.shuffle else None)
    batches = (run.model.standardize(_training_batch(run, idx, state.rng)) for idx in order)
    recompute_batchnorm(run.model, batches, state.rng)
    averaged = {"epochs": state.swa_count}
    if run.validation is not None:
        averaged["val_loss"], averaged["val_accuracy"] = run.model.evaluate(*run.validation)
    if run.verbose:
        metrics = "".join(f"  {k}={v:.4f}" for k, v in averaged.items() if k != "epochs")
        print(f"averaged the weights of the last {state.swa_count} epochs{metrics}", flush=True)
    return averaged
