"""Training checkpoints: everything `fit` needs to carry on exactly where it stopped.

A checkpoint is a model file (config.json + weights.safetensors, so `convscope.load` reads it as the
model of its last step) with two more members, in the same zip container, never pickled:

- training.json: the progress (epochs completed, batches done in the next epoch, optimiser steps so far,
  which the learning-rate schedule depends on); the settings a resumed fit must share (batch size,
  shuffle, the number and a CRC-32 of the training images and labels, keep_best); the Generator's
  bit_generator state (it drives shuffling, augmentation and dropout); the History; the optimiser's
  type, hyperparameters and step count; the best epoch so far and the early-stopping counter; mid-epoch,
  the running sums of the epoch; with stochastic weight averaging, how many epochs are averaged so far.
- training.safetensors: the optimiser's buffers (`optimizer/<param>/<buffer>`), the best weights so far
  (`best/<param>`), the averaged parameters (`swa/<param>`) and, mid-epoch, the epoch's order of the
  training images (`order`).

Resuming restores all of it, so a run that is stopped and resumed ends bit-identical to one that never
stopped. Every value read back is checked first; a CheckpointError names the file and the problem.
"""

import math
import os
import zlib
from dataclasses import dataclass, field

import numpy as np

from convscope.archive import ArchiveReader, ModelFileError, dump_json, save_tensors, short, write_archive
from convscope.model_file import (
    CONFIG_NAME,
    MEMBER_LIMITS,
    TRAINING_NAME,
    TRAINING_TENSORS_NAME,
    WEIGHTS_NAME,
    check_finite,
    model_members,
    read_model,
)
from convscope.optim import OPTIMIZERS

CHECKPOINT_FORMAT = "convscope-checkpoint"
CHECKPOINT_VERSION = 1
RESUME_SETTINGS = (
    "batch_size",
    "shuffle",
    "num_train",
    "train_checksum",
    "keep_best",
    "label_smoothing",
    "snapshots",
)
# for checkpoints written before the setting existed
SETTING_DEFAULTS = {"label_smoothing": 0.0, "snapshots": None, "swa_epochs": 0, "swa_lr": None}
KIND = "convscope checkpoint"


class CheckpointError(ModelFileError):
    """A checkpoint that cannot be read or resumed; the message names the file and the problem."""


def _fresh_running() -> dict:
    return {"loss_sum": 0.0, "correct": 0, "seen": 0}


@dataclass
class TrainingState:
    """Where a fit stands, enough to continue it exactly.

    epoch: epochs completed; batch: batches done in epoch `epoch + 1` (0 between epochs), whose image
    order is `order` (N,) int64; step: optimiser steps so far; running: that epoch's loss_sum, correct
    and seen so far; best: {"monitor", "value", "epoch"} of the best epoch so far, best_weights its
    state_dict (with keep_best); wait: epochs since the best one (early stopping); swa_count: epochs
    averaged so far (stochastic weight averaging), swa_weights their mean parameters, or None.
    """

    settings: dict
    rng: np.random.Generator
    history: dict
    epoch: int = 0
    batch: int = 0
    step: int = 0
    order: np.ndarray | None = None
    running: dict = field(default_factory=_fresh_running)
    best: dict | None = None
    best_weights: dict | None = None
    wait: int = 0
    swa_weights: dict | None = None
    swa_count: int = 0


def data_checksum(x: np.ndarray, y: np.ndarray) -> int:
    """CRC-32 of the training images (N, H, W, C) float32 and labels (N,): a resumed fit must see the same."""
    crc = zlib.crc32(np.ascontiguousarray(x, dtype=np.float32).data)
    return zlib.crc32(np.ascontiguousarray(y, dtype=np.int64).data, crc)


# writing


def _training_json(model, state: TrainingState) -> dict:
    optimizer = model.optimizer.state_dict()
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "progress": {"epoch": state.epoch, "batch": state.batch, "step": state.step},
        "settings": state.settings,
        "rng": state.rng.bit_generator.state,
        "history": state.history,
        "running": state.running if state.batch else None,
        "optimizer": {k: optimizer[k] for k in ("type", "hyperparameters", "steps")},
        "best": state.best,
        "wait": state.wait,
        "swa_count": state.swa_count,
    }


def _training_tensors(model, state: TrainingState) -> dict:
    tensors = {
        f"optimizer/{param}/{buffer}": value
        for param, buffers in model.optimizer.state_dict()["state"].items()
        for buffer, value in buffers.items()
    }
    if state.best_weights is not None:
        tensors.update({f"best/{name}": value for name, value in state.best_weights.items()})
    if state.swa_weights is not None:
        tensors.update({f"swa/{name}": value for name, value in state.swa_weights.items()})
    if state.batch:
        tensors["order"] = np.asarray(state.order, dtype=np.int64)
    return tensors


def save_checkpoint(path, model, state: TrainingState) -> None:
    """Write model, optimiser and training state to `path` atomically (temporary file, fsync, rename)."""
    members = model_members(model)
    members[TRAINING_NAME] = dump_json(_training_json(model, state))
    members[TRAINING_TENSORS_NAME] = save_tensors(_training_tensors(model, state))
    write_archive(path, members, compresslevel=1)


# reading


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _restored_rng(value) -> np.random.Generator:
    """A Generator in the saved PCG64 state; ValueError if `value` is not one."""
    state = value.get("state") if isinstance(value, dict) else None
    ok = isinstance(state, dict) and value.get("bit_generator") == "PCG64" and set(state) == {"state", "inc"}
    ok = ok and all(_is_count(v) and v < 2**128 for v in state.values())
    ok = ok and value.get("has_uint32") in (0, 1) and _is_count(value.get("uinteger"))
    if not ok or value["uinteger"] >= 2**32:
        raise ValueError(f"rng is not a PCG64 bit_generator state: {short(repr(value), 120)}")
    bit_generator = np.random.PCG64(0)
    try:
        bit_generator.state = value
    except (TypeError, ValueError, KeyError, OverflowError) as error:
        raise ValueError(f"rng is not a PCG64 bit_generator state ({short(error, 80)})") from None
    return np.random.Generator(bit_generator)


def _checked_history(history, epoch: int) -> dict:
    ok = isinstance(history, dict) and all(
        isinstance(k, str) and isinstance(v, list) and all(map(_is_number, v)) for k, v in history.items()
    )
    if not ok or len(history.get("loss", [])) != epoch:
        raise ValueError(f"history must hold a list of {epoch} finite numbers per metric")
    return history


def _checked_progress(progress, settings: dict):
    """(epoch, batch, step) of a saved `progress`, consistent with the batches of an epoch."""
    if not (
        isinstance(progress, dict) and all(_is_count(progress.get(k)) for k in ("epoch", "batch", "step"))
    ):
        raise ValueError(
            f"progress must hold whole numbers epoch, batch and step, got {short(repr(progress), 120)}"
        )
    epoch, batch, step = progress["epoch"], progress["batch"], progress["step"]
    batches = -(-settings["num_train"] // settings["batch_size"])
    if batch >= batches or step != epoch * batches + batch:
        raise ValueError(
            f"progress (epoch {epoch}, batch {batch}, step {step}) does not fit epochs of {batches} batches"
        )
    return epoch, batch, step


def _checked_running(running, batch: int, batch_size: int) -> dict:
    """The running sums of a checkpoint written mid-epoch (after `batch` batches), or fresh ones."""
    if batch == 0:
        return _fresh_running()
    ok = isinstance(running, dict) and set(running) == {"loss_sum", "correct", "seen"}
    ok = ok and _is_number(running["loss_sum"]) and _is_count(running["correct"])
    if not (ok and running["seen"] == batch * batch_size and running["correct"] <= running["seen"]):
        raise ValueError(f"running must hold loss_sum, correct and seen of {batch} batches mid-epoch")
    return running


def _checked_best(best, wait, epoch: int):
    if best is not None:
        ok = isinstance(best, dict) and set(best) == {"monitor", "value", "epoch"}
        ok = ok and isinstance(best["monitor"], str) and _is_number(best["value"])
        if not (ok and _is_count(best["epoch"]) and 1 <= best["epoch"] <= epoch):
            raise ValueError(f"best must hold monitor, value and an epoch done, got {short(repr(best), 120)}")
    if not _is_count(wait):
        raise ValueError(f"wait must be a whole number >= 0, got {short(repr(wait), 40)}")
    return best, wait


def _compare_settings(saved, settings: dict, path: str) -> None:
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: {TRAINING_NAME} has no settings")
    for key in RESUME_SETTINGS:
        now = settings.get(key, SETTING_DEFAULTS.get(key))
        if saved.get(key, SETTING_DEFAULTS.get(key)) != now:
            what = "training data" if key in ("num_train", "train_checksum") else key
            raise CheckpointError(
                f"{path}: was written by a fit with different {what} "
                f"({key}={short(repr(saved.get(key)), 60)}, now {now!r}); "
                "resume with the same data and settings, or start afresh"
            )


def _checked_swa_count(count, swa_weights, saved: dict) -> int:
    """The number of epochs averaged so far: as many as the saved run had past its schedule's epochs."""
    if not _is_count(count) or (count > 0) != (swa_weights is not None):
        raise ValueError(f"swa_count must be a whole number >= 0, > 0 with swa/ weights, got {count!r}")
    if count > saved.get("swa_epochs", 0):
        raise ValueError(f"swa_count {count} is more than the run's swa_epochs")
    return count


def _compare_averaging(saved: dict, settings: dict, epoch: int, batch: int, swa_count: int, path: str):
    """A run whose averaging has begun resumes only with the same schedule length and averaging rate;
    before that, swa_epochs and swa_lr may be added or changed (to add averaging to a finished run)."""
    settings = {**SETTING_DEFAULTS, **settings}
    if swa_count == 0:
        if settings["swa_epochs"] and (epoch, batch) > (settings["epochs"], 0):
            raise CheckpointError(
                f"{path}: is {_progress_text(epoch, batch)}, past the schedule's {settings['epochs']} "
                f"epochs: averaging can only start after it; give epochs >= {epoch + (batch > 0)}"
            )
        return
    for key in ("epochs", "swa_lr"):
        if saved.get(key) != settings[key]:
            raise CheckpointError(
                f"{path}: has averaged the weights of {swa_count} epochs after {saved.get('epochs')} at "
                f"swa_lr {saved.get('swa_lr')}; resume with the same {key} (now {settings[key]!r}), "
                "or start afresh"
            )
    if settings["swa_epochs"] < swa_count:
        raise CheckpointError(
            f"{path}: has averaged the weights of {swa_count} epochs already; give swa_epochs >= {swa_count}"
        )


def _progress_text(epoch: int, batch: int) -> str:
    return f"after epoch {epoch}" if batch == 0 else f"in epoch {epoch + 1}"


def _compare_models(saved_model, model, path: str) -> None:
    saved, own = saved_model.get_config(), model.get_config()
    for key in ("input_shape", "layers"):
        if saved[key] != own[key]:
            raise CheckpointError(
                f"{path}: was written for a different model ({key} {short(saved[key], 120)}, "
                f"this model has {short(own[key], 120)})"
            )


def _optimizer_for(model, record, path: str):
    """The model's optimiser (or, when it has none, a new one of the saved type), and the saved type."""
    kind = record.get("type") if isinstance(record, dict) else None
    classes = {cls.__name__: cls for cls in OPTIMIZERS.values()}
    if not isinstance(kind, str) or kind not in classes:
        raise CheckpointError(f"{path}: unknown optimizer type {short(repr(kind), 40)} in {TRAINING_NAME}")
    if model.optimizer is not None and type(model.optimizer).__name__ != kind:
        raise CheckpointError(
            f"{path}: was written with the {kind} optimizer, the model is compiled with "
            f"{type(model.optimizer).__name__}"
        )
    return model.optimizer if model.optimizer is not None else classes[kind]()


def _expected_tensor(name: str, params: dict, num_train: int):
    """(dtype code, shape) a tensor of training.safetensors must have, or None for an unknown name."""
    parts = name.split("/")
    if name == "order":
        return "I64", (num_train,)
    if len(parts) == 2 and parts[0] in ("best", "swa") and parts[1] in params:
        return "F32", params[parts[1]].shape
    if len(parts) == 3 and parts[0] == "optimizer" and parts[1] in params:
        return "F32", params[parts[1]].shape
    return None


def _check_training_header(header: dict, params: dict, trainable, num_train: int, path: str) -> None:
    """Every tensor's name, dtype and shape, before its data is read. params: the model's state_dict,
    trainable: the names of its parameters (those averaged)."""
    for name, info in header.items():
        expected = _expected_tensor(name, params, num_train)
        if expected is None:
            raise CheckpointError(
                f"{path}: unexpected tensor {short(repr(name), 80)} in {TRAINING_TENSORS_NAME}"
            )
        if (info.dtype, info.shape) != expected:
            raise CheckpointError(
                f"{path}: tensor {name!r} in {TRAINING_TENSORS_NAME} is {info.dtype} {info.shape}, "
                f"expected {expected[0]} {expected[1]}"
            )
    best = {name.partition("/")[2] for name in header if name.startswith("best/")}
    if best and best != set(params):
        raise CheckpointError(f"{path}: the best weights miss {sorted(set(params) - best)}")
    averaged = {name.partition("/")[2] for name in header if name.startswith("swa/")}
    if averaged and averaged != set(trainable):
        raise CheckpointError(
            f"{path}: the averaged weights are not the parameters {sorted(set(trainable) ^ averaged)}"
        )


def _split_tensors(tensors: dict):
    """Checked training tensors -> (optimizer buffers {param: {buffer: array}}, best weights or None,
    averaged weights or None, order or None)."""
    buffers, best, averaged = {}, {}, {}
    for name, value in tensors.items():
        parts = name.split("/")
        if parts[0] == "optimizer":
            buffers.setdefault(parts[1], {})[parts[2]] = value
        elif parts[0] == "best":
            best[parts[1]] = value
        elif parts[0] == "swa":
            averaged[parts[1]] = value
    return buffers, best or None, averaged or None, tensors.get("order")


def _checked_order(order, batch: int, num_train: int, path: str):
    if batch == 0:
        return None
    if order is None or order.dtype != np.int64 or order.shape != (num_train,):
        raise CheckpointError(f"{path}: mid-epoch, but no order of the {num_train} training images")
    if not np.array_equal(np.sort(order), np.arange(num_train)):
        raise CheckpointError(
            f"{path}: the saved order is not a permutation of the {num_train} training images"
        )
    return order


@dataclass
class _Loaded:
    model: object
    optimizer: object
    optimizer_state: dict
    state: TrainingState


def _read(path: str, model, settings: dict) -> _Loaded:
    required = (CONFIG_NAME, WEIGHTS_NAME, TRAINING_NAME, TRAINING_TENSORS_NAME)
    with ArchiveReader(path, MEMBER_LIMITS, required, error=CheckpointError, kind=KIND) as archive:
        saved_model = read_model(archive)
        training = archive.read_json(TRAINING_NAME)
        if not isinstance(training, dict) or training.get("format") != CHECKPOINT_FORMAT:
            raise archive.fail(f"not a {KIND} ({TRAINING_NAME} has no format '{CHECKPOINT_FORMAT}')")
        if training.get("format_version") != CHECKPOINT_VERSION:
            raise archive.fail(
                f"checkpoint format version {short(repr(training.get('format_version')), 40)} is not "
                f"supported (this convscope reads version {CHECKPOINT_VERSION})"
            )
        _compare_models(saved_model, model, path)
        _compare_settings(training.get("settings"), settings, path)
        optimizer = _optimizer_for(model, training.get("optimizer"), path)
        header = archive.tensor_header(TRAINING_TENSORS_NAME)
        _check_training_header(
            header, saved_model.state_dict(), saved_model.parameters(), settings["num_train"], path
        )
        tensors = archive.read_tensors(TRAINING_TENSORS_NAME)
        check_finite(tensors, archive, TRAINING_TENSORS_NAME)
    buffers, best_weights, swa_weights, order = _split_tensors(tensors)
    try:
        epoch, batch, step = _checked_progress(training.get("progress"), settings)
        running = _checked_running(training.get("running"), batch, settings["batch_size"])
        rng = _restored_rng(training.get("rng"))
        history = _checked_history(training.get("history"), epoch)
        best, wait = _checked_best(training.get("best"), training.get("wait"), epoch)
        swa_count = _checked_swa_count(training.get("swa_count", 0), swa_weights, training["settings"])
    except ValueError as error:
        raise CheckpointError(f"{path}: {TRAINING_NAME}: {error}") from None
    _compare_averaging(training["settings"], settings, epoch, batch, swa_count, path)
    if (best is None) != (best_weights is None) and settings["keep_best"]:
        raise CheckpointError(f"{path}: best epoch and best weights do not come together")
    state = TrainingState(
        settings=settings,
        rng=rng,
        history=history,
        epoch=epoch,
        batch=batch,
        step=step,
        order=_checked_order(order, batch, settings["num_train"], path),
        running=running,
        best=best,
        best_weights=best_weights,
        wait=wait,
        swa_weights=swa_weights,
        swa_count=swa_count,
    )
    return _Loaded(saved_model, optimizer, dict(training["optimizer"], state=buffers), state)


def load_checkpoint(path, model, settings: dict) -> TrainingState:
    """Restore `model` (weights, standardisation, optimiser with its state) from the checkpoint at `path`
    and return the TrainingState to continue from. `settings` are the new fit's; those in RESUME_SETTINGS
    must equal the saved ones. Nothing is changed unless everything checks out."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint")
    loaded = _read(path, model, settings)
    try:  # load_state_dict checks everything before it changes anything
        loaded.optimizer.load_state_dict(loaded.optimizer_state, model.parameters())
    except ValueError as error:
        raise CheckpointError(f"{path}: the optimizer state does not fit: {short(error)}") from None
    model.optimizer = loaded.optimizer
    model.load_state_dict(loaded.model.state_dict())
    model.standardization = loaded.model.standardization
    model.snapshots = loaded.model.snapshots
    return loaded.state
