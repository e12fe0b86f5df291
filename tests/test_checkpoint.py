"""Checkpoints, resuming bit for bit, best epoch, early stopping, the NaN guard, determinism."""

import json
import os
import signal
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

import convscope
from convscope import SGD, Adam, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Sequential, Softmax
from convscope.checkpoint import CheckpointError
from convscope.cli import main
from convscope.data import load
from convscope.data.augment import Augmentation
from convscope.models import seed_cnn
from convscope.optim import Cosine, NonFiniteGradient, OneCycle
from convscope.train import TrainingDiverged, validation_split

WORKER = Path(__file__).with_name("checkpoint_worker.py")


@pytest.fixture(autouse=True)
def python_handles_ctrl_c():
    """Python's own Ctrl-C handler, as in a terminal: a process started in the background (`cmd &`)
    inherits SIGINT ignored, and then no KeyboardInterrupt would ever come."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="module")
def digits():
    return load("digits", split="train"), load("digits", split="test")


def small_net(seed=1, optimizer=None):
    """A small CNN with dropout, so the Generator drives shuffling, augmentation and dropout."""
    model = Sequential(
        [
            Conv2D(8, 3),
            ReLU(),
            MaxPool2D(2),
            Flatten(),
            Dropout(0.3),
            Dense(32),
            ReLU(),
            Dense(10),
            Softmax(),
        ],
        input_shape=(8, 8, 1),
        seed=seed,
    )
    return model.compile(optimizer or Adam(1e-3))


def assert_same_weights(a, b):
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert np.array_equal(state_a[key], state_b[key]), key


def training_json(path):
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("training.json"))


# resuming, bit for bit


def run_worker(args, pause_at=None):
    env = dict(os.environ, CONVSCOPE_TEST_PAUSE_AT=str(pause_at or ""))
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=WORKER.parent.parent,
    )


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    """`convscope train --checkpoint` killed with SIGKILL in epoch 2, then resumed, saves the same weights
    as an uninterrupted run: Adam, one-cycle schedule, augmentation, validation split, keep-best."""
    args = ["train", "--epochs", "3", "--batch-size", "32", "--augment", "--seed", "3"]
    args += ["--val-split", "0.2", "--keep-best", "val_accuracy"]
    batches_per_epoch = -(-(1437 - round(0.2 * 1437)) // 32)

    reference = run_worker([*args, "--out", str(tmp_path / "reference.convscope")])
    output, _ = reference.communicate(timeout=300)
    assert reference.returncode == 0, output

    checkpoint = tmp_path / "run.convscope"
    killed = run_worker(
        [*args, "--checkpoint", str(checkpoint), "--out", str(tmp_path / "never.convscope")],
        pause_at=batches_per_epoch + 10,
    )
    seen = []
    watchdog = threading.Timer(240, killed.kill)  # a child that never pauses must not hang the suite
    watchdog.start()
    try:
        for line in killed.stdout:
            seen.append(line)
            if line.startswith("PAUSED"):
                break
        assert any(line.startswith("epoch 1/3") for line in seen), "".join(seen)
        assert not any(line.startswith("epoch 2/3") for line in seen)
    finally:
        watchdog.cancel()
        killed.send_signal(signal.SIGKILL)
        killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert training_json(checkpoint)["progress"] == {"epoch": 1, "batch": 0, "step": batches_per_epoch}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reference.convscope", "run.convscope"]

    resumed = run_worker([*args, "--resume", str(checkpoint), "--out", str(tmp_path / "resumed.convscope")])
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    assert f"resumed from {checkpoint}: 1 of 3 epochs done" in output
    assert "epoch 1/3" not in output and "epoch 3/3" in output
    assert_same_weights(
        convscope.load(tmp_path / "reference.convscope"), convscope.load(tmp_path / "resumed.convscope")
    )
    assert training_json(checkpoint)["progress"]["epoch"] == 3


def interrupt_at(call: int, augment):
    """An augmentation that sends this process SIGINT (Ctrl-C) at its `call`-th batch."""
    calls = [0]

    def augmenting(batch, rng):
        calls[0] += 1
        if calls[0] == call:
            signal.raise_signal(signal.SIGINT)
        return augment(batch, rng)

    return augmenting


@pytest.mark.parametrize(
    "make_optimizer, schedule",
    [(lambda: Adam(1e-3), OneCycle(3e-3)), (lambda: SGD(0.05, momentum=0.9, nesterov=True), Cosine(0.05))],
)
def test_ctrl_c_mid_epoch_checkpoints_and_resume_is_bit_identical(digits, tmp_path, make_optimizer, schedule):
    train, test = digits
    augment = Augmentation(flip=False, crop_padding=1)
    options = dict(
        epochs=3,
        batch_size=64,
        seed=5,
        verbose=0,
        lr_schedule=schedule,
        validation_data=(test.images, test.labels),
        keep_best="val_loss",
    )
    reference = small_net(optimizer=make_optimizer())
    expected = reference.fit(train.images, train.labels, augment=augment, **options)

    path = tmp_path / "ck.convscope"
    stopped = small_net(optimizer=make_optimizer())
    with pytest.raises(KeyboardInterrupt):
        stopped.fit(train.images, train.labels, augment=interrupt_at(30, augment), checkpoint=path, **options)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    saved = training_json(path)
    assert saved["progress"] == {"epoch": 1, "batch": 30 - 23, "step": 30}
    assert saved["running"]["seen"] == 7 * 64

    resumed = small_net(optimizer=make_optimizer())
    history = resumed.fit(train.images, train.labels, augment=augment, resume=path, **options)
    assert_same_weights(reference, resumed)
    assert history.history == expected.history and history.best_epoch == expected.best_epoch
    own, theirs = reference.optimizer.state_dict(), resumed.optimizer.state_dict()
    assert own["steps"] == theirs["steps"] == 69 and own["hyperparameters"] == theirs["hyperparameters"]
    for name, buffers in own["state"].items():
        for key, value in buffers.items():
            assert np.array_equal(value, theirs["state"][name][key])


def test_resume_without_compile_takes_the_saved_optimizer(digits, tmp_path):
    train, _ = digits
    path = tmp_path / "ck.convscope"
    first = small_net(optimizer=SGD(0.05, momentum=0.9))
    first.fit(train.images[:256], train.labels[:256], epochs=2, batch_size=64, verbose=0, checkpoint=path)
    again = Sequential.from_config(first.get_config())
    again.fit(train.images[:256], train.labels[:256], epochs=2, batch_size=64, verbose=0, resume=path)
    assert isinstance(again.optimizer, SGD) and again.optimizer.momentum == 0.9
    assert_same_weights(first, again)  # a finished run resumes to its end at once


def test_checkpoint_loads_as_a_model(digits, tmp_path):
    train, test = digits
    model = small_net()
    model.fit(
        train.images[:128], train.labels[:128], epochs=1, verbose=0, checkpoint=tmp_path / "c.convscope"
    )
    loaded = convscope.load(tmp_path / "c.convscope")
    np.testing.assert_array_equal(loaded.predict_proba(test.images), model.predict_proba(test.images))


def test_resume_refuses_a_different_run(digits, tmp_path):
    train, _ = digits
    x, y = train.images[:256], train.labels[:256]
    path = tmp_path / "ck.convscope"
    small_net().fit(x, y, epochs=1, batch_size=32, verbose=0, checkpoint=path)
    with pytest.raises(CheckpointError, match="ck.convscope: was written by a fit with different batch_size"):
        small_net().fit(x, y, epochs=2, batch_size=64, verbose=0, resume=path)
    with pytest.raises(CheckpointError, match="different training data"):
        small_net().fit(x[::-1], y[::-1], epochs=2, batch_size=32, verbose=0, resume=path)
    with pytest.raises(CheckpointError, match="was written for a different model"):
        seed_cnn((8, 8, 1), 10).fit(x, y, epochs=2, batch_size=32, verbose=0, resume=path)
    with pytest.raises(
        CheckpointError, match="written with the Adam optimizer, the model is compiled with SGD"
    ):
        small_net(optimizer=SGD(0.1)).fit(x, y, epochs=2, batch_size=32, verbose=0, resume=path)
    model = small_net()
    model.save(tmp_path / "plain.convscope")
    with pytest.raises(CheckpointError, match="plain.convscope: not a convscope checkpoint"):
        small_net().fit(x, y, epochs=2, verbose=0, resume=tmp_path / "plain.convscope")
    with pytest.raises(FileNotFoundError, match="none.convscope: no such checkpoint"):
        small_net().fit(x, y, epochs=2, verbose=0, resume=tmp_path / "none.convscope")


def rewrite_training(path, change):
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    training = json.loads(members["training.json"])
    change(training)
    members["training.json"] = json.dumps(training).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t["rng"].update(bit_generator="MT19937"), "rng is not a PCG64 bit_generator state"),
        (lambda t: t["rng"]["state"].update(state=-1), "rng is not a PCG64"),
        (lambda t: t["progress"].update(epoch=-1), "progress must hold whole numbers"),
        (
            lambda t: t["progress"].update(batch=99),
            r"progress \(epoch 1, batch 99, step 8\) does not fit epochs of 8",
        ),
        (lambda t: t["progress"].update(step=3), "does not fit epochs of 8 batches"),
        (lambda t: t["history"]["loss"].append(1.0), "history must hold a list of 1 finite numbers"),
        (lambda t: t["optimizer"].update(steps="many"), "steps must be a whole number"),
        (lambda t: t["optimizer"]["hyperparameters"].update(lr=-1), "lr must be a number > 0"),
        (lambda t: t.update(format_version=7), "checkpoint format version 7 is not supported"),
        (lambda t: t.update(wait=None), "wait must be a whole number"),
    ],
)
def test_damaged_training_state_is_refused_and_changes_nothing(digits, tmp_path, change, message):
    train, _ = digits
    x, y = train.images[:256], train.labels[:256]
    path = tmp_path / "ck.convscope"
    small_net().fit(x, y, epochs=1, batch_size=32, verbose=0, checkpoint=path)
    rewrite_training(path, change)
    model = small_net()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=message) as caught:
        model.fit(x, y, epochs=2, batch_size=32, verbose=0, resume=path)
    assert str(path) in str(caught.value)
    for key, value in model.state_dict().items():
        assert np.array_equal(value, before[key])
    assert model.optimizer.steps == 0


# best epoch, early stopping


def test_keep_best_and_early_stop(digits):
    """Validating on shuffled labels, val_loss is best after epoch 1 and then grows: early stopping ends
    the run after `patience` more epochs and keep_best puts epoch 1's weights back."""
    train, test = digits
    wrong = np.random.default_rng(0).permutation(test.labels)
    options = dict(batch_size=32, seed=2, verbose=0, validation_data=(test.images, wrong))
    model = seed_cnn((8, 8, 1), 10).compile(Adam(3e-3))
    history = model.fit(train.images, train.labels, epochs=10, keep_best="val_loss", early_stop=2, **options)
    assert history.stopped_early and history.epochs == 3 and history.best_epoch == 1
    assert np.argmin(history["val_loss"]) == 0
    first_epoch = seed_cnn((8, 8, 1), 10).compile(Adam(3e-3))
    first_epoch.fit(train.images, train.labels, epochs=1, **options)
    assert_same_weights(model, first_epoch)


def test_monitoring_needs_validation_data(digits):
    train, _ = digits
    with pytest.raises(ValueError, match="keep_best='val_accuracy' watches val_accuracy, which needs"):
        small_net().fit(train.images[:64], train.labels[:64], verbose=0, keep_best="val_accuracy")
    with pytest.raises(ValueError, match="early_stop watches val_loss"):
        small_net().fit(train.images[:64], train.labels[:64], verbose=0, early_stop=3)
    with pytest.raises(ValueError, match="keep_best must be one of"):
        small_net().fit(train.images[:64], train.labels[:64], verbose=0, keep_best="precision")
    with pytest.raises(ValueError, match="early_stop must be a patience of at least 1"):
        small_net().fit(train.images[:64], train.labels[:64], verbose=0, early_stop=0, keep_best="loss")
    with pytest.raises(ValueError, match="validation_data must be a pair"):
        small_net().fit(train.images[:64], train.labels[:64], verbose=0, validation_data=train.images)


def test_validation_split_is_seeded_and_disjoint():
    x, y = np.arange(100, dtype=np.float32).reshape(100, 1, 1, 1), np.arange(100) % 10
    (x_train, y_train), (x_val, y_val) = validation_split(x, y, 0.2, seed=4)
    assert len(x_val) == 20 and len(x_train) == 80
    assert set(x_train.ravel()) | set(x_val.ravel()) == set(range(100))
    np.testing.assert_array_equal(validation_split(x, y, 0.2, seed=4)[1][0], x_val)
    assert not np.array_equal(validation_split(x, y, 0.2, seed=5)[1][0], x_val)
    for bad in (0, 1, 1.5, 0.001):
        with pytest.raises(ValueError, match="validation fraction"):
            validation_split(x, y, bad)


# the NaN guard


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_divergence_names_step_layer_and_learning_rate(digits, tmp_path):
    train, _ = digits
    model = seed_cnn((8, 8, 1), 10).compile(SGD(lr=1e4))
    with pytest.raises(TrainingDiverged) as caught:
        model.fit(train.images * 255, train.labels, epochs=2, verbose=0, checkpoint=tmp_path / "c.convscope")
    message = str(caught.value)
    assert caught.value.step == 2 and caught.value.layer is None  # the loss grew a million times at once
    assert message.startswith(
        "training diverged at step 2 (epoch 1, batch 2 of 45): the loss grew from 12.18 to "
    )
    assert "the learning rate 1e+04 is likely too high, try 1e+03" in message and "\n" not in message
    assert "no checkpoint was written yet" in message and not (tmp_path / "c.convscope").exists()


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_a_loss_grown_by_orders_of_magnitude_is_divergence_and_the_last_good_weights_stay(digits):
    train, _ = digits
    model = small_net().compile(SGD(lr=0.05))
    doubling = lambda step, total: 0.05 * 2.0**step  # noqa: E731 (the loss climbs, finite, for a few steps)
    seen = []

    def remember(batch, rng):
        seen.append({k: v.copy() for k, v in model.state_dict().items()})
        return batch

    with pytest.raises(TrainingDiverged, match=r"the loss grew from .* over 100 times where it started"):
        model.fit(train.images, train.labels, epochs=5, verbose=0, augment=remember, lr_schedule=doubling)
    assert len(seen) > 3  # it trained for a few steps first
    # the weights from before the last step whose loss was under the limit: those before the failing one
    for key, value in model.state_dict().items():
        assert np.array_equal(value, seen[-2][key]), key


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_divergence_keeps_the_last_good_checkpoint_and_weights(digits, tmp_path):
    train, _ = digits
    path = tmp_path / "c.convscope"

    def poison(batch, rng):  # the 10th batch of epoch 2 turns to NaN
        poison.calls += 1
        return batch * np.float32("nan") if poison.calls == 23 + 10 else batch

    poison.calls = 0
    model = small_net()
    snapshot = {}

    def remember(batch, rng):
        snapshot.update({k: v.copy() for k, v in model.state_dict().items()})
        return poison(batch, rng)

    with pytest.raises(
        TrainingDiverged, match=r"at step 33 \(epoch 2, batch 10 of 23\): the gradient of layer 0"
    ):
        model.fit(
            train.images, train.labels, epochs=3, batch_size=64, verbose=0, checkpoint=path, augment=remember
        )
    for key, value in model.state_dict().items():
        assert np.array_equal(value, snapshot[key]), key  # the failing step changed nothing
    assert training_json(path)["progress"]["epoch"] == 1
    assert all(np.isfinite(v).all() for v in convscope.load(path).state_dict().values())


def test_optimizer_refuses_non_finite_gradients_before_updating():
    params = {"a": np.ones(3, dtype=np.float32), "b": np.ones(2, dtype=np.float32)}
    grads = {"a": np.ones(3, dtype=np.float32), "b": np.array([1, np.inf], dtype=np.float32)}
    optimizer = Adam(0.1)
    with pytest.raises(NonFiniteGradient, match="the gradient of b holds NaN or infinite values"):
        optimizer.step(params, grads)
    assert optimizer.steps == 0 and params["a"].tolist() == [1, 1, 1] and not optimizer.state


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_cli_divergence_is_one_line_and_exit_2(tmp_path, capsys):
    args = ["train", "--epochs", "1", "--optimizer", "sgd", "--lr", "1e9", "--schedule", "none"]
    assert main([*args, "--no-standardize", "--out", str(tmp_path / "m.convscope")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("convscope: error: training diverged at step")


# optimiser state


@pytest.mark.parametrize("make", [lambda: SGD(0.1, momentum=0.9, weight_decay=1e-3), lambda: Adam(1e-2)])
def test_optimizer_state_round_trip_continues_bit_for_bit(make):
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((3, 4)).astype(np.float32)}
    steps = [{"w": rng.standard_normal((3, 4)).astype(np.float32)} for _ in range(6)]
    straight = make()
    p1 = {"w": params["w"].copy()}
    for grads in steps:
        straight.step(p1, grads)
    first = make()
    p2 = {"w": params["w"].copy()}
    for grads in steps[:3]:
        first.step(p2, grads)
    second = make()
    second.load_state_dict(first.state_dict(), p2)
    for grads in steps[3:]:
        second.step(p2, grads)
    np.testing.assert_array_equal(p1["w"], p2["w"])


def test_optimizer_state_errors():
    adam = Adam()
    params = {"w": np.zeros(2, dtype=np.float32)}
    state = Adam().state_dict()
    with pytest.raises(ValueError, match="optimizer state is for 'Adam', this optimizer is SGD"):
        SGD().load_state_dict(state)
    with pytest.raises(ValueError, match="buffers for 'v', which the model does not have"):
        adam.load_state_dict(
            dict(state, state={"v": {"exp_avg": np.zeros(2), "exp_avg_sq": np.zeros(2)}}), params
        )
    bad = {"w": {"exp_avg": np.zeros(3, dtype=np.float32), "exp_avg_sq": np.zeros(3, dtype=np.float32)}}
    with pytest.raises(ValueError, match=r"exp_avg is float32 \(3,\), expected float32 \(2,\)"):
        adam.load_state_dict(dict(state, state=bad), params)
    with pytest.raises(ValueError, match="expected \\['exp_avg', 'exp_avg_sq'\\]"):
        adam.load_state_dict(dict(state, state={"w": {"exp_avg": np.zeros(2, dtype=np.float32)}}), params)


# determinism


def test_same_seed_bit_identical_with_dropout_and_augmentation(digits):
    train, _ = digits
    augment = Augmentation(flip=True, crop_padding=2)
    runs = []
    for seed in (7, 7, 8):
        model = small_net(seed=4)
        model.fit(
            train.images[:512],
            train.labels[:512],
            epochs=2,
            batch_size=64,
            seed=seed,
            verbose=0,
            augment=augment,
        )
        runs.append(model)
    assert_same_weights(runs[0], runs[1])
    assert not np.array_equal(runs[0].state_dict()["5.weight"], runs[2].state_dict()["5.weight"])


# the command line


def test_cli_checkpoint_val_split_keep_best_early_stop_resume(tmp_path, capsys):
    checkpoint, out = tmp_path / "ck.convscope", tmp_path / "m.convscope"
    args = [
        "train",
        "--epochs",
        "2",
        "--val-split",
        "0.1",
        "--keep-best",
        "val_accuracy",
        "--early-stop",
        "3",
    ]
    assert main([*args, "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "validation: 144 of the 1437 training images held out (--val-split 0.1, seed 0)" in printed
    assert "val_accuracy=" in printed and "kept the weights of epoch" in printed
    assert training_json(checkpoint)["progress"]["epoch"] == 2
    first = convscope.load(out)
    assert main([*args, "--resume", str(checkpoint), "--out", str(out)]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert_same_weights(first, convscope.load(out))
    for bad, expected in (
        (["--keep-best", "val_loss"], "argument --keep-best: val_loss is measured on held-out images"),
        (["--val-split", "1.5"], "argument --val-split: must be a number between 0 and 1"),
    ):
        with pytest.raises(SystemExit):  # refused at parse time, before any data is read
            main(["train", *bad, "--out", str(out)])
        assert expected in capsys.readouterr().err


def test_resume_keeps_batch_norm_running_statistics(digits, tmp_path):
    """Buffers (BatchNorm2D's running mean and variance) travel in the checkpoint with the weights."""
    from convscope import layers

    if not hasattr(layers, "BatchNorm2D"):
        pytest.skip("no BatchNorm2D layer in this convscope")

    def make():
        stack = [Conv2D(8, 3), layers.BatchNorm2D(), ReLU(), layers.GlobalAvgPool2D(), Dense(10), Softmax()]
        return Sequential(stack, input_shape=(8, 8, 1), seed=1).compile(Adam(1e-2))

    train, _ = digits
    options = dict(epochs=2, batch_size=64, seed=5, verbose=0)
    reference = make()
    reference.fit(train.images, train.labels, **options)
    path = tmp_path / "bn.convscope"
    with pytest.raises(KeyboardInterrupt):
        make().fit(
            train.images, train.labels, checkpoint=path, augment=interrupt_at(30, lambda b, r: b), **options
        )
    resumed = make()
    resumed.fit(train.images, train.labels, resume=path, augment=lambda b, r: b, **options)
    assert "1.running_var" in resumed.state_dict()
    assert_same_weights(reference, resumed)
