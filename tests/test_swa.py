"""Stochastic weight averaging: the running mean, batch norm statistics measured afresh (as torch's
update_bn), fit's averaged epochs, and resuming them from checkpoints."""

import numpy as np
import pytest

import convscope
from convscope import SGD, BatchNorm2D, Conv2D, Dense, GlobalAvgPool2D, ReLU, Sequential, Softmax
from convscope.checkpoint import CheckpointError
from convscope.cli import main
from convscope.data import load
from convscope.models import resnet
from convscope.swa import average_into, batchnorm_layers, recompute_batchnorm


@pytest.fixture(scope="module")
def digits():
    train = load("digits", split="train")
    return train.images[:96], train.labels[:96]


def bn_net(seed=0, workers=1):
    """conv + batch norm + ReLU, twice, then global average pooling and a softmax head, on 8x8 digits."""
    model = Sequential(
        [
            Conv2D(6, 3, padding="same"),
            BatchNorm2D(),
            ReLU(),
            Conv2D(8, 3, padding="same"),
            BatchNorm2D(),
            ReLU(),
            GlobalAvgPool2D(),
            Dense(10),
            Softmax(),
        ],
        input_shape=(8, 8, 1),
        seed=seed,
        workers=workers,
    )
    return model.compile(SGD(lr=0.05, momentum=0.9))


def params_of(model) -> dict:
    return {k: v.copy() for k, v in model.parameters().items()}


def test_average_into_keeps_the_running_mean():
    rng = np.random.default_rng(0)
    sets = [{"w": rng.normal(size=(3, 4)).astype(np.float32)} for _ in range(5)]
    average = {"w": sets[0]["w"].copy()}
    for count, params in enumerate(sets[1:], start=1):
        average_into(average, params, count)
    np.testing.assert_allclose(average["w"], np.mean([s["w"] for s in sets], axis=0), rtol=1e-6, atol=1e-7)


def test_batchnorm_layers_include_those_inside_residual_blocks():
    model = resnet(8, (8, 8, 3), 10)
    # the stem's, then two per block (body) over three stages of one block
    assert len(batchnorm_layers(model)) == 1 + 2 * 3
    model = bn_net()
    assert batchnorm_layers(model) == [model.layers[1], model.layers[4]]


def test_recompute_batchnorm_matches_torch_update_bn(digits):
    torch = pytest.importorskip("torch")
    from torch.optim.swa_utils import update_bn

    from convscope.interop.pytorch import images_to_torch, to_torch

    x, _ = digits
    model = bn_net()
    model.fit(*digits, epochs=1, batch_size=32, verbose=0)  # running statistics away from their init
    net = to_torch(model).double()
    batches = [images_to_torch(x[i : i + 40]).double() for i in range(0, len(x), 40)]  # 40, 40, 16
    update_bn(batches, net)
    assert recompute_batchnorm(model, [x[i : i + 40] for i in range(0, len(x), 40)]) == 2
    torch_bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for ours, theirs in zip(batchnorm_layers(model), torch_bns, strict=True):
        np.testing.assert_allclose(ours.buffers["running_mean"], theirs.running_mean.numpy(), atol=2e-5)
        np.testing.assert_allclose(ours.buffers["running_var"], theirs.running_var.numpy(), rtol=1e-4)
        assert ours.momentum == 0.1  # put back afterwards


def test_recompute_batchnorm_combines_the_shards_of_two_workers(digits):
    """The first batch norm sees the same inputs with one worker or two: the same statistics. Deeper
    ones see activations each shard normalised on its own (as in training; convscope.parallel)."""
    x, _ = digits
    one, two = bn_net(workers=1), bn_net(workers=2)
    recompute_batchnorm(one, [x[:48], x[48:]])
    recompute_batchnorm(two, [x[:48], x[48:]])
    (a, b), (deep_a, deep_b) = zip(batchnorm_layers(one), batchnorm_layers(two), strict=True)
    np.testing.assert_allclose(a.buffers["running_mean"], b.buffers["running_mean"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.buffers["running_var"], b.buffers["running_var"], rtol=1e-5)
    np.testing.assert_allclose(deep_a.buffers["running_var"], deep_b.buffers["running_var"], rtol=1e-2)


def brighter(batch, rng):
    """An 'augmentation' that moves every pixel: batch norm statistics of augmented images differ."""
    return batch + 0.5


def test_fit_ends_with_the_mean_of_the_averaged_epochs(digits, tmp_path):
    """Two epochs, then three averaged at swa_lr: the result is the mean of the weights after epochs 3,
    4 and 5 of the same run (read from checkpoints of it), with batch norm measured for that mean on the
    training batches as augmented in training (in order here: shuffle=False)."""
    path = tmp_path / "run.ckpt"
    same = {"batch_size": 32, "verbose": 0, "swa_lr": 0.01, "shuffle": False, "augment": brighter}
    averaged = bn_net()
    history = averaged.fit(*digits, epochs=2, swa_epochs=3, validation_data=digits, **same)
    assert history.epochs == 5 and history.averaged["epochs"] == 3
    assert history.averaged["val_accuracy"] == averaged.evaluate(*digits)[1]

    weights = []
    for epochs in (3, 4, 5):  # the same run, stopped after each epoch: resuming is bit-identical
        model = bn_net()
        resume = path if epochs > 3 else None
        model.fit(*digits, epochs=2, swa_epochs=epochs - 2, checkpoint=path, resume=resume, **same)
        weights.append(params_of(convscope.load(path)))  # SGD's weights, not the average
    mean = {k: np.mean([w[k] for w in weights], axis=0) for k in weights[0]}
    for key, value in mean.items():
        np.testing.assert_allclose(averaged.parameters()[key], value, rtol=1e-5, atol=1e-6)
    x = digits[0]
    batches = {"augmented": [x[i : i + 32] + 0.5 for i in range(0, len(x), 32)], "clean": [x[:32], x[32:]]}
    means = {}
    for kind, images in batches.items():
        expected = bn_net()
        expected.load_state_dict({**expected.state_dict(), **averaged.parameters()})
        recompute_batchnorm(expected, images)
        means[kind] = batchnorm_layers(expected)[0].buffers["running_mean"]
    np.testing.assert_array_equal(batchnorm_layers(averaged)[0].buffers["running_mean"], means["augmented"])
    assert not np.allclose(means["augmented"], means["clean"])


def test_the_lr_is_swa_lr_in_the_averaged_epochs(digits):
    seen = []

    def schedule(step, total):
        seen.append((step, total))
        return 0.1

    model = bn_net()
    model.fit(*digits, epochs=2, batch_size=32, verbose=0, lr_schedule=schedule, swa_epochs=1, swa_lr=0.003)
    assert seen == [(step, 6) for step in range(6)]  # the schedule spans the 2 epochs of 3 steps only
    assert model.optimizer.lr == 0.003


def test_resuming_mid_averaging_is_bit_identical(digits, tmp_path):
    path = tmp_path / "run.ckpt"
    straight = bn_net()
    straight.fit(*digits, epochs=1, batch_size=32, verbose=0, swa_epochs=3, swa_lr=0.01)
    stopped = bn_net()
    stopped.fit(*digits, epochs=1, batch_size=32, verbose=0, swa_epochs=1, swa_lr=0.01, checkpoint=path)
    resumed = bn_net()
    resumed.fit(*digits, epochs=1, batch_size=32, verbose=0, swa_epochs=3, swa_lr=0.01, resume=path)
    for key, value in straight.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[key], value)


def test_a_finished_run_resumes_with_averaging_added(digits, tmp_path):
    path = tmp_path / "run.ckpt"
    straight = bn_net()
    straight.fit(*digits, epochs=2, batch_size=32, verbose=0, swa_epochs=2, swa_lr=0.01)
    finished = bn_net()
    finished.fit(*digits, epochs=2, batch_size=32, verbose=0, checkpoint=path)
    extended = bn_net()
    history = extended.fit(
        *digits, epochs=2, batch_size=32, verbose=0, swa_epochs=2, swa_lr=0.01, resume=path
    )
    assert history.averaged == {"epochs": 2}
    for key, value in straight.state_dict().items():
        np.testing.assert_array_equal(extended.state_dict()[key], value)


def test_resuming_averaging_with_other_settings_names_them(digits, tmp_path):
    path = tmp_path / "run.ckpt"
    bn_net().fit(*digits, epochs=1, batch_size=32, verbose=0, swa_epochs=2, swa_lr=0.01, checkpoint=path)
    with pytest.raises(CheckpointError, match=r"averaged the weights of 2 epochs .*same swa_lr"):
        bn_net().fit(*digits, epochs=1, batch_size=32, verbose=0, swa_epochs=3, swa_lr=0.02, resume=path)
    with pytest.raises(CheckpointError, match="same epochs"):
        bn_net().fit(*digits, epochs=2, batch_size=32, verbose=0, swa_epochs=3, swa_lr=0.01, resume=path)
    with pytest.raises(CheckpointError, match="give swa_epochs >= 2"):
        bn_net().fit(*digits, epochs=1, batch_size=32, verbose=0, swa_epochs=1, swa_lr=0.01, resume=path)
    plain = tmp_path / "plain.ckpt"
    bn_net().fit(*digits, epochs=3, batch_size=32, verbose=0, checkpoint=plain)
    with pytest.raises(CheckpointError, match="past the schedule's 2 epochs.*give epochs >= 3"):
        bn_net().fit(*digits, epochs=2, batch_size=32, verbose=0, swa_epochs=2, swa_lr=0.01, resume=plain)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"swa_epochs": -1, "swa_lr": 0.1}, "swa_epochs must be a whole number"),
        ({"swa_epochs": 2}, "swa_epochs needs swa_lr"),
        ({"swa_epochs": 2, "swa_lr": float("nan")}, "swa_epochs needs swa_lr"),
        ({"swa_lr": 0.1}, "give swa_epochs too"),
        ({"swa_epochs": 2, "swa_lr": 0.1, "keep_best": "loss"}, "keep_best and swa_epochs exclude"),
        ({"swa_epochs": 2, "swa_lr": 0.1, "early_stop": 2}, "early_stop and swa_epochs exclude"),
    ],
)
def test_fit_rejects_unusable_averaging_options(digits, options, message):
    with pytest.raises(ValueError, match=message):
        bn_net().fit(*digits, epochs=1, verbose=0, **options)


def test_train_averages_and_says_so(tmp_path, capsys):
    out = tmp_path / "m.convscope"
    args = ["train", "--epochs", "1", "--swa-epochs", "2", "--val-split", "0.2", "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "then stochastic weight averaging: 2 more epochs at lr 0.0003" in text
    assert "epoch 3/3" in text and "(averaged 2)" in text
    assert "averaged the weights of the last 2 epochs  val_loss=" in text


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--swa-lr", "0.01"], "--swa-lr: is the learning rate of the averaged epochs: give --swa-epochs"),
        (["--swa-epochs", "2", "--keep-best", "loss"], "--keep-best: and --swa-epochs exclude each other"),
    ],
)
def test_train_rejects_unusable_averaging_flags(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit):
        main(["train", "--out", str(tmp_path / "m.convscope"), *flags])
    assert message in capsys.readouterr().err
