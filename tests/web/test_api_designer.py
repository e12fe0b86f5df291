"""The designer's API: architectures checked by the library's own build (every impossible setting is a 422
with the library's sentence, the size limits hold), designed networks trained with kernel snapshots,
stop/resume from the end of an epoch, the runs of the session for comparison, who holds the slot."""

import re

import numpy as np
import pytest
from test_api_training import wait_until_done
from web_helpers import assert_error

import convscope
from convscope.web import designer

QUICK = {"dataset": "digits", "epochs": 1, "max_images": 96, "batch_size": 32}


def conv(filters=16, kernel=3, stride=1, padding="same"):
    return {
        "type": "Conv2D",
        "config": {"filters": filters, "kernel_size": kernel, "stride": stride, "padding": padding},
    }


def layer(kind, **config):
    return {"type": kind, "config": config}


def seed_layers(classes=10):
    """The article's network, as the designer's buttons make it."""
    return [
        conv(16), layer("ReLU"), layer("MaxPool2D", pool_size=2, stride=2),
        conv(32), layer("ReLU"), layer("MaxPool2D", pool_size=2, stride=2),
        layer("Flatten"), layer("Dense", units=128), layer("ReLU"),
        layer("Dense", units=classes), layer("Softmax"),
    ]  # fmt: skip


def design(layers, name="mine"):
    return {"name": name, "layers": layers}


def test_presets_are_the_library_models_and_check_gives_every_shape_and_rule(make_client, digits28_root):
    client = make_client([digits28_root])
    answer = client.get("/api/designer/presets", params={"dataset": "mnist"}).json()
    assert answer["input_shape"] == [28, 28, 1] and len(answer["class_names"]) == 10
    presets = {p["name"]: p for p in answer["presets"]}
    resnets = [f"resnet{depth}" for depth in convscope.models.RESNET_DEPTHS]
    assert list(presets) == ["seed", "small-vgg", *resnets, "empty"] and presets["empty"]["layers"] == []
    request = {"dataset": "mnist", "architecture": design(presets["resnet20"]["layers"])}
    resnet = client.post("/api/designer/check", json=request).json()
    assert resnet["valid"] and resnet["params"] == convscope.models.resnet(20, (28, 28, 1), 10).count_params()
    assert "4,000,000" in answer["limits_text"] and answer["limits"]["max_layers"] == designer.MAX_LAYERS

    for layers in (presets["seed"]["layers"], seed_layers()):
        check = client.post("/api/designer/check", json={"dataset": "mnist", "architecture": design(layers)})
        body = check.json()
        assert check.status_code == 200 and body["valid"] and body["error"] is None
        shapes = [row["output_shape"] for row in body["rows"]]
        assert [shapes[i] for i in (0, 2, 3, 5, 6)] == [
            [28, 28, 16],
            [14, 14, 16],
            [14, 14, 32],
            [7, 7, 32],
            [1568],
        ]
        assert body["params"] == 206_922 == convscope.models.seed_cnn((28, 28, 1), 10).count_params()
        assert [row["params"] for row in body["rows"]][:4] == [160, 0, 0, 4640]
        assert body["rows"][0]["rule"] == ["height and width: floor((28 + 2·1 − 3) / 1) + 1 = 28"]
        assert body["rows"][2]["rule"] == ["height and width: floor((28 + 2·0 − 2) / 2) + 1 = 14"]
        assert [row["name"] for row in body["rows"]][3:5] == ["conv2d_1", "relu_1"]

    vgg = client.post(
        "/api/designer/check",
        json={"dataset": "digits", "architecture": design(presets["small-vgg"]["layers"])},
    )
    assert (
        vgg.json()["valid"] and vgg.json()["non_trainable"] == 896
    )  # running means and variances of 6 batch norms


def test_rectangular_settings_have_a_rule_per_axis(client):
    layers = [conv(4, [3, 1], [2, 1], "valid"), layer("Flatten"), layer("Dense", units=10)]
    body = client.post("/api/designer/check", json={"architecture": design(layers)}).json()
    assert body["rows"][0]["output_shape"] == [3, 8, 4]
    assert body["rows"][0]["rule"] == [
        "height: floor((8 + 2·0 − 3) / 2) + 1 = 3",
        "width: floor((8 + 2·0 − 1) / 1) + 1 = 8",
    ]


# every impossible setting: (layers, the library's sentence), on the bundled 8x8 digits
IMPOSSIBLE = {
    "kernel bigger than its input": (
        [conv(8, 11, padding="valid"), layer("Flatten"), layer("Dense", units=10)],
        "layer 0 (conv2d): Conv2D: kernel of size 11 does not fit in input of size 8 with padding 0+0",
    ),
    "kernel bigger than a pooled input": (
        [
            layer("MaxPool2D", pool_size=4),
            conv(8, 5, padding="valid"),
            layer("Flatten"),
            layer("Dense", units=10),
        ],
        "layer 1 (conv2d): Conv2D: kernel of size 5 does not fit in input of size 2",
    ),
    "same padding with stride 2": (
        [conv(8, 3, 2, "same"), layer("Flatten"), layer("Dense", units=10)],
        "layer 0 (conv2d): Conv2D: padding='same' needs stride 1, got stride=2",
    ),
    "dense before flatten": (
        [conv(8), layer("Dense", units=10)],
        "layer 1 (dense): Dense needs flat (D,) inputs, got shape (8, 8, 8): put a Flatten() before it",
    ),
    "conv after flatten": (
        [layer("Flatten"), conv(8), layer("Dense", units=10)],
        "layer 1 (conv2d): Conv2D needs (H, W, C) inputs, got shape (64,)",
    ),
    "pool window bigger than its input": (
        [layer("MaxPool2D", pool_size=16), layer("Flatten"), layer("Dense", units=10)],
        "layer 0 (maxpool2d): MaxPool2D:",
    ),
    "zero filters": (
        [conv(0), layer("Flatten"), layer("Dense", units=10)],
        "filters must be a positive int, got 0",
    ),
    "a kernel size that is not a number": (
        [conv(8, "3x"), layer("Flatten"), layer("Dense", units=10)],
        "Conv2D: kernel_size must be a positive int or a pair of them, got '3x'",
    ),
    "unknown padding": (
        [conv(8, 3, 1, "full"), layer("Flatten"), layer("Dense", units=10)],
        "padding must be 'same', 'valid' or an int >= 0",
    ),
    "dropout rate 1.5": (
        [layer("Flatten"), layer("Dropout", rate=1.5), layer("Dense", units=10)],
        "Dropout: rate must be a number in [0, 1), got 1.5",
    ),
    "an unknown setting": (
        [layer("Flatten"), layer("Dense", units=10, colour="red")],
        "unexpected keyword argument 'colour'",
    ),
    "an unknown layer type": ([layer("Attention"), layer("Flatten")], "unknown layer type 'Attention'"),
    "a block at the end": ([conv(8)], "the model must end with a flat (num_classes,) output, got (8, 8, 8)"),
    "the wrong number of outputs": (
        [layer("Flatten"), layer("Dense", units=128)],
        "the last layer gives 128 values, but the data set has 10 classes: end with Dense(10)",
    ),
    "no layers": ([], "the network has no layers"),
    "too many layers": (
        [layer("ReLU")] * 41 + [layer("Flatten"), layer("Dense", units=10)],
        "at most 40 layers",
    ),
    "too many parameters": (
        [layer("Flatten"), layer("Dense", units=100_000), layer("Dense", units=10)],
        "layer 1 (dense): Dense brings the network over 5,000,000 parameters, the designer's limit",
    ),
    "too many values in one layer": (
        [conv(65_536, 1), layer("GlobalAvgPool2D"), layer("Dense", units=10)],
        "layer 0 (conv2d): this layer would hold 4,194,304 values for one image, over the designer's limit",
    ),
    "too many values in all layers": (
        [conv(60_000, 1), layer("ReLU"), layer("ReLU"), layer("GlobalAvgPool2D"), layer("Dense", units=10)],
        "layer 2 (relu_1): the layers up to here hold 11,520,000 values for one image, over the designer's",
    ),
}


@pytest.mark.parametrize("case", list(IMPOSSIBLE))
def test_every_impossible_setting_is_a_422_with_the_library_sentence(client, case):
    layers, sentence = IMPOSSIBLE[case]
    body = client.post("/api/designer/check", json={"architecture": design(layers)}).json()
    assert not body["valid"] and sentence in body["error"]
    marked = [row for row in body["rows"] if row["error"]]
    if marked:  # the row carries the sentence without the "layer i (name): " the whole check adds
        assert body["error"] == f"layer {marked[0]['index']} ({marked[0]['name']}): {marked[0]['error']}"
    answer = client.post("/api/training", json={**QUICK, "architecture": design(layers)})
    assert_error(answer, 422, sentence)
    assert client.get("/api/training").json()["status"] == "idle"


def test_rows_after_an_error_have_no_shape_but_their_settings_are_still_checked(client):
    layers = [conv(8, 3, 2, "same"), layer("ReLU"), conv(0), layer("Flatten"), layer("Dense", units=10)]
    body = client.post("/api/designer/check", json={"architecture": design(layers)}).json()
    assert [row["output_shape"] for row in body["rows"]] == [None] * 5
    assert "needs stride 1" in body["rows"][0]["error"] and "filters must be" in body["rows"][2]["error"]
    assert body["rows"][1]["error"] is None


@pytest.mark.parametrize(
    ("architecture", "words"),
    [
        ({"layers": "conv"}, ['{"name": ..., "layers": [...]}']),
        ({"name": "", "layers": seed_layers()}, ["name must be 1 to 64 characters"]),
        ({"name": "x", "input_shape": [28, 28, 1], "layers": seed_layers()}, ["design for the data set"]),
    ],
)
def test_malformed_architectures_are_refused(client, architecture, words):
    assert_error(client.post("/api/training", json={**QUICK, "architecture": architecture}), 422, *words)


def test_the_batch_size_is_bounded_by_the_network_size(client):
    layers = [conv(16_384, 1), layer("GlobalAvgPool2D"), layer("Dense", units=10)]  # ~1.07M values per image
    assert client.post("/api/designer/check", json={"architecture": design(layers)}).json()["valid"]
    answer = client.post("/api/training", json={**QUICK, "batch_size": 256, "architecture": design(layers)})
    assert_error(answer, 422, "a batch of 256 images holds", "use a batch of at most 187")


def test_unknown_data_set(client):
    assert_error(client.get("/api/designer/presets", params={"dataset": "imagenet"}), 422, "no data set")
    answer = client.post("/api/designer/check", json={"dataset": "imagenet", "architecture": design([])})
    assert_error(answer, 422, "no data set called 'imagenet'")


# training a designed network


def weights_of(path):
    return convscope.load(path).state_dict()


def test_a_designed_network_trains_with_snapshots_and_saves_as_designed(client, models_dir):
    layers = [conv(4), layer("BatchNorm2D"), layer("ReLU"), layer("MaxPool2D", pool_size=2, stride=2)]
    layers += [layer("Flatten"), layer("Dropout", rate=0.2), layer("Dense", units=10)]
    body = {**QUICK, "epochs": 2, "architecture": design(layers, "tiny-bn"), "probe_index": 3, "flip": True}
    body.update(crop_padding=1, cutout=3, client="designer")
    assert client.post("/api/training", json=body).status_code == 202
    state = wait_until_done(client)
    assert state["status"] == "finished", state["events"][-1]
    assert state["owner"] == "testclient (designer)"
    events = state["events"]
    start = next(e for e in events if e["type"] == "start")
    assert (
        start["designed"]
        and start["recipe"] == "tiny-bn"
        and start["params"] == 4 * 10 + 8 + 8 + 64 * 10 + 10
    )
    assert start["augmentation"] == {"flip": True, "crop_padding": 1, "cutout": 3}
    probe = next(e for e in events if e["type"] == "probe")
    assert probe["index"] == 3 and probe["split"] == "test" and probe["image"]["shape"] == [8, 8, 1]
    shots = [e for e in events if e["type"] == "snapshot"]
    assert [s["epoch"] for s in shots] == [0, 1, 2]
    assert (
        shots[0]["kernels"]["shape"] == [3, 3, 1, 4] and shots[0]["kernels"]["block"]["colormap"] == "RdBu_r"
    )
    assert shots[0]["maps"]["shape"] == [8, 8, 4] and shots[0]["maps_layer"] == "conv2d + batchnorm2d + relu"
    assert len({s["kernels"]["block"]["data"] for s in shots}) == 3  # the kernels change every epoch
    assert client.post("/api/training/save", json={"name": "designed"}).status_code == 200
    model = convscope.load(models_dir / "designed.convscope")
    assert model.name == "tiny-bn" and [type(x).__name__ for x in model.layers][1] == "BatchNorm2D"
    assert model.augmentation is None  # the web job augments its batches itself; fit() records it
    assert client.get("/api/models/designed").json()["params"] == model.count_params()


def test_a_network_without_conv_layers_has_no_kernels_to_draw(client):
    client.post(
        "/api/training", json={**QUICK, "architecture": design([layer("Flatten"), layer("Dense", units=10)])}
    )
    shots = [e for e in wait_until_done(client)["events"] if e["type"] == "snapshot"]
    assert shots[0]["kernels"] is None and "no conv layer" in shots[0]["note"]


STEADY = {
    **QUICK,
    "max_images": 256,
    "schedule": "none",
    "optimizer": "sgd",
    "architecture": design(seed_layers()),
}


def test_resume_goes_on_as_if_never_stopped(client, models_dir):
    client.post("/api/training", json={**STEADY, "epochs": 2})
    wait_until_done(client)
    client.post("/api/training/save", json={"name": "straight"})

    client.post("/api/training", json={**STEADY, "epochs": 1})
    assert wait_until_done(client)["status"] == "finished"
    assert_error(client.post("/api/training/resume", json={}), 409, "has done 1 epochs already")
    resumed = client.post("/api/training/resume", json={"epochs": 2})
    assert resumed.status_code == 200 and resumed.json() == {
        "id": 2,
        "status": "running",
        "from_epoch": 1,
        "epochs": 2,
    }
    state = wait_until_done(client)
    assert state["status"] == "finished" and state["epochs_done"] == 2
    assert [e["type"] for e in state["events"]].count("resume") == 1
    assert [e["epoch"] for e in state["events"] if e["type"] == "snapshot"] == [0, 1, 2]
    client.post("/api/training/save", json={"name": "resumed"})
    straight, resumed = (
        weights_of(models_dir / "straight.convscope"),
        weights_of(models_dir / "resumed.convscope"),
    )
    assert all(np.array_equal(straight[k], resumed[k]) for k in straight)


def test_a_stop_rolls_back_to_the_last_epoch_and_resume_goes_on_from_there(client, models_dir):
    client.post("/api/training", json={**STEADY, "max_images": None, "epochs": 100})
    assert_error(client.post("/api/training/resume", json={"epochs": 5}), 409, "still running")
    while not any(e["type"] == "epoch" for e in client.get("/api/training").json()["events"]):
        pass
    client.post("/api/training/stop")
    state = wait_until_done(client)
    done = state["epochs_done"]
    assert state["status"] == "stopped" and 1 <= done < 100
    assert (
        f"as it was after epoch {done} of 100 (resume goes on from there)" in state["events"][-1]["message"]
    )
    client.post("/api/training/save", json={"name": "stopped"})

    client.post("/api/training/resume", json={"epochs": done + 1})
    state = wait_until_done(client)
    assert state["status"] == "finished" and state["epochs_done"] == done + 1
    resume = next(e for e in state["events"] if e["type"] == "resume")
    assert resume["from_epoch"] == done and resume["step"] == done * 45

    client.post(
        "/api/training", json={**STEADY, "max_images": None, "epochs": done}
    )  # the same run, unstopped
    wait_until_done(client)
    client.post("/api/training/save", json={"name": "reference"})
    stopped, reference = (
        weights_of(models_dir / "stopped.convscope"),
        weights_of(models_dir / "reference.convscope"),
    )
    assert all(np.array_equal(stopped[k], reference[k]) for k in stopped)


def test_a_stop_before_the_first_epoch_leaves_nothing_to_save(client):
    client.post("/api/training", json={**STEADY, "max_images": None, "epochs": 100})
    while client.get("/api/training").json()["steps_done"] == 0:
        pass
    client.post("/api/training/stop")
    state = wait_until_done(client)
    if state["epochs_done"] == 0:  # the stop came within the first epoch (45 steps of ~5 ms)
        assert state["events"][-1]["message"].endswith("before the first epoch ended")
        assert_error(client.post("/api/training/save", json={"name": "none"}), 409, "no epoch has finished")


def test_a_second_start_says_who_holds_the_slot(client):
    client.post("/api/training", json={**STEADY, "max_images": None, "epochs": 100, "client": "designer"})
    answer = client.post("/api/training", json={**QUICK, "recipe": "tiny_cnn"})
    assert_error(answer, 409, "already running: run 1 (mine on digits, epoch ", "of 100), started at ")
    assert "by testclient (designer): stop it before starting another" in answer.json()["error"]
    client.post("/api/training/stop")
    wait_until_done(client)


def test_runs_of_the_session_are_listed_for_comparison(client):
    assert client.get("/api/training/runs").json() == {"runs": []}
    client.post("/api/training", json={**QUICK, "recipe": "tiny_cnn", "epochs": 2})
    wait_until_done(client)
    client.post(
        "/api/training", json={**QUICK, "architecture": design(seed_layers()), "lr": 0.01, "flip": True}
    )
    wait_until_done(client)
    first, second = client.get("/api/training/runs").json()["runs"]
    assert (first["id"], second["id"]) == (1, 2)
    assert first["settings"]["network"] == "tiny_cnn" and first["settings"]["layers"] is None
    assert second["settings"]["network"] == "mine" and second["settings"]["flip"] and second["lr"] == 0.01
    assert (
        second["settings"]["layers"]
        == "conv16 relu pool conv32 relu pool flatten dense128 relu dense10 softmax"
    )
    assert first["curves"]["epoch"] == [1, 2] and len(first["curves"]["val_accuracy"]) == 2
    assert second["params"] == 22_602 and second["epochs_done"] == 1
    assert second["final"]["val_accuracy"] == second["curves"]["val_accuracy"][-1]
    # only the last run keeps its model and snapshots
    assert client.app.state.trainer.runs[0].model is None
    kinds = {e["type"] for e in client.app.state.trainer.runs[0].describe()["events"]}
    assert "snapshot" not in kinds and "epoch" in kinds


def test_snapshots_of_a_wide_first_layer_keep_64_channels():
    from convscope.layers import Conv2D, Dense, GlobalAvgPool2D, ReLU
    from convscope.web.evolution import snapshot

    model = convscope.Sequential(
        [Conv2D(100, 3), ReLU(), GlobalAvgPool2D(), Dense(10)], input_shape=(8, 8, 3)
    )
    shot = snapshot(model, 0, np.zeros((8, 8, 3), dtype=np.float32))
    assert shot["kernels"]["count"] == 100 and len(shot["kernels"]["tiles"]) == 64  # one RGB tile per kernel
    assert shot["kernels"]["tiles"][0]["shape"] == [3, 3, 3] and shot["kernels"]["kind"] == "rgb"
    assert shot["maps"]["shape"] == [8, 8, 64] and shot["channels"] == 100
    assert shot["maps_layer"] == "conv2d + relu"


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning", "ignore:overflow:RuntimeWarning")
def test_a_diverging_run_fails_with_the_step_and_keeps_its_last_good_epoch(client, models_dir):
    body = {**QUICK, "max_images": 300, "epochs": 3, "optimizer": "sgd", "schedule": "none"}
    client.post("/api/training", json={**body, "lr": 1e-3, "architecture": design(seed_layers())})
    wait_until_done(client)
    client.app.state.trainer.job.model.optimizer.lr = 1e30  # the next steps blow up
    client.post("/api/training/resume", json={"epochs": 4})
    state = wait_until_done(client)
    message = state["events"][-1]["message"]
    assert state["status"] == "failed" and re.match(
        r"training diverged at step \d+ of epoch 4: the ", message
    )
    assert "the learning rate 1e+30 is likely too high" in message and "as it was after epoch 3" in message
    assert client.post("/api/training/save", json={"name": "good"}).status_code == 200
    assert np.isfinite(weights_of(models_dir / "good.convscope")["0.weight"]).all()


def test_architecture_bodies_are_limited_to_a_config_json_size(client):
    huge = design([layer("ReLU", note="x" * 2_000_000)])
    for path in ("/api/designer/check", "/api/training"):
        assert_error(client.post(path, json={"architecture": huge}), 413, "at most 1,048,576 bytes")
    assert client.get("/api/training").json()["status"] == "idle"
