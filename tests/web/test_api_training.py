"""The training view's API: one job at a time off the request thread, live events, stop, save."""

import json
import time

import pytest
from web_helpers import assert_error

from convscope.web.datasets import discover_sources, load_source

QUICK = {"recipe": "tiny_cnn", "dataset": "digits", "epochs": 1, "max_images": 96, "batch_size": 32}


def wait_until_done(client, timeout=30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get("/api/training").json()
        if state["status"] in ("finished", "stopped", "failed"):
            return state
        time.sleep(0.05)
    raise AssertionError(f"training did not end within {timeout} s: {state['status']}")


def test_options_list_recipes_and_the_bundled_digits(client, models_dir):
    options = client.get("/api/training/options").json()
    assert {"seed_cnn", "tiny_cnn"} <= {r["name"] for r in options["recipes"]}
    assert [d["name"] for d in options["datasets"]] == ["digits"]
    assert options["models_dir"] == str(models_dir)


def test_idle_state_and_events(client):
    assert client.get("/api/training").json() == {"status": "idle", "events": []}
    with client.stream("GET", "/api/training/events") as stream:
        assert json.loads(next(line for line in stream.iter_lines() if line.startswith("data:"))[5:]) == {
            "type": "idle"
        }
    assert_error(client.post("/api/training/stop"), 409, "no training job")
    assert_error(client.post("/api/training/save", json={"name": "x"}), 409, "no training job")


def test_a_job_trains_publishes_events_and_saves_into_the_models_folder(client, models_dir):
    started = client.post("/api/training", json={**QUICK, "epochs": 2})
    assert started.status_code == 202 and started.json()["id"] == 1
    state = wait_until_done(client)
    assert state["status"] == "finished", state["events"][-1]
    kinds = [event["type"] for event in state["events"]]
    assert kinds[:2] == ["status", "start"] and kinds[-1] == "end"
    assert kinds.count("epoch") == 2 and kinds.count("step") >= 2
    start = state["events"][1]
    assert start["train_images"] == 96 and start["steps_per_epoch"] == 3 and start["input_shape"] == [8, 8, 1]
    epochs = [event for event in state["events"] if event["type"] == "epoch"]
    assert 0 <= epochs[-1]["val_accuracy"] <= 1 and epochs[-1]["val_loss"] > 0
    assert state["steps_done"] == 6

    with client.stream("GET", "/api/training/events", params={"since": 1}) as stream:
        lines = [line for line in stream.iter_lines() if line]
    ids = [int(line[4:]) for line in lines if line.startswith("id: ")]
    assert ids == list(range(1, len(state["events"])))
    assert json.loads(lines[-1][6:])["type"] == "end"

    saved = client.post("/api/training/save", json={"name": "my-digits"}).json()
    assert saved == {"name": "my-digits", "file": "my-digits.convscope", "steps": 6}
    assert (models_dir / "my-digits.convscope").is_file()
    names = [m["name"] for m in client.get("/api/models").json()["models"]]
    assert "my-digits" in names
    detail = client.get("/api/models/my-digits").json()
    assert detail["standardized"] and [layer["type"] for layer in detail["layers"]][0] == "Conv2D"
    assert_error(client.post("/api/training/save", json={"name": "my-digits"}), 409, "already exists")
    assert_error(client.post("/api/training/save", json={"name": "digits"}), 409, "already exists")


@pytest.mark.parametrize("name", ["../evil", "a/b", ".hidden", "x.convscope", "", "a" * 65, "bad name"])
def test_save_refuses_names_that_are_not_plain(client, name, models_dir):
    client.post("/api/training", json=QUICK)
    wait_until_done(client)
    assert_error(client.post("/api/training/save", json={"name": name}), 422, "not a usable model name")
    assert list(models_dir.iterdir()) == []


def test_one_job_at_a_time_and_stop(client):
    client.post("/api/training", json={**QUICK, "epochs": 100, "max_images": None})
    assert_error(client.post("/api/training", json=QUICK), 409, "already running")
    assert_error(client.post("/api/training/save", json={"name": "early"}), 409, "still running")
    deadline = time.monotonic() + 20
    while client.get("/api/training").json()["steps_done"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    stopping = client.post("/api/training/stop").json()
    assert stopping["id"] == 1
    state = wait_until_done(client)
    assert state["status"] == "stopped" and 0 < state["steps_done"] < 100 * 45
    assert state["events"][-1]["message"].startswith("training stopped after")
    assert client.post("/api/training", json=QUICK).json()["id"] == 2  # the slot is free again
    wait_until_done(client)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"dataset": "imagenet"}, ["no data set called 'imagenet'", "digits"]),
        ({"recipe": "resnet"}, ["no recipe called 'resnet'", "tiny_cnn"]),
        ({"epochs": 0}, ["epochs"]),
        ({"batch_size": 5000}, ["batch_size"]),
        ({"optimizer": "lbfgs"}, ["optimizer"]),
        ({"lr": -1}, ["lr"]),
    ],
)
def test_bad_training_settings_are_422(client, body, words):
    assert_error(client.post("/api/training", json={**QUICK, **body}), 422, *words)
    assert client.get("/api/training").json()["status"] == "idle"


def test_a_failing_job_reports_its_error(client, monkeypatch):
    import convscope.web.jobs as jobs

    def broken(source):
        raise ValueError("the data files are unreadable")

    monkeypatch.setattr(jobs, "load_source", broken)
    client.post("/api/training", json=QUICK)
    state = wait_until_done(client)
    assert state["status"] == "failed"
    assert "the data files are unreadable" in state["events"][-1]["message"]
    assert_error(client.post("/api/training/save", json={"name": "nothing"}), 409, "no model to save")


def test_data_folders_are_discovered_and_trained_on(make_client, data_root):
    sources = discover_sources([data_root])
    assert list(sources) == ["digits", "cifar10-catdog", "fashion-mnist"]
    assert sources["fashion-mnist"].kind == "fashion-mnist" and sources["cifar10-catdog"].kind == "cifar10"
    train, test = load_source(sources["cifar10-catdog"])
    assert train.class_names == ["cat", "dog"] and set(train.labels.tolist()) == {0, 1}
    assert test.images.shape == (10, 32, 32, 3)
    with pytest.raises(FileNotFoundError, match="no such data folder"):
        discover_sources([data_root / "missing"])

    client = make_client([data_root])
    assert [d["name"] for d in client.get("/api/training/options").json()["datasets"]] == [
        "digits",
        "cifar10-catdog",
        "fashion-mnist",
    ]
    client.post("/api/training", json={**QUICK, "dataset": "fashion-mnist", "max_images": None})
    state = wait_until_done(client)
    assert state["status"] == "finished", state["events"][-1]
    start = state["events"][1]
    assert start["input_shape"] == [28, 28, 1] and start["train_images"] == 64 and start["test_images"] == 32
    assert start["class_names"][0] == "T-shirt/top"


def test_event_streams_end_when_the_server_closes(client):
    client.post("/api/training", json={**QUICK, "epochs": 100, "max_images": None})
    client.app.state.closing.set()
    with client.stream("GET", "/api/training/events") as stream:
        lines = list(stream.iter_lines())  # ends although the job is still running
    assert any(line.startswith("data:") for line in lines)
    client.post("/api/training/stop")
    assert wait_until_done(client)["status"] == "stopped"
