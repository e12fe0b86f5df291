"""The training slot across server restarts: a server killed while training or saving leaves no model,
half-written or otherwise, and the next one starts idle with the models folder as it was."""

import json
import signal
import subprocess
import sys
import time
import urllib.request

from test_api_designer import design, seed_layers
from web_helpers import _wait_for_url

import convscope


def post(url, path, body) -> dict:
    request = urllib.request.Request(
        url + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def get(url, path) -> dict:
    with urllib.request.urlopen(url + path, timeout=30) as answer:
        return json.loads(answer.read())


def serve(folder, models_dir, log_name):
    log_path = folder / log_name
    command = [sys.executable, "-m", "convscope", "serve", "--models-dir", str(models_dir), "--port", "0"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        return process, _wait_for_url(process, log_path)
    except BaseException:
        process.kill()
        process.wait()
        raise


def test_a_server_killed_while_training_or_saving_leaves_no_half_written_model(tmp_path, digits_model):
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    (models_dir / "kept.convscope").write_bytes(digits_model[0].read_bytes())
    process, url = serve(tmp_path, models_dir, "first.log")
    try:
        body = {"dataset": "digits", "epochs": 100, "architecture": design(seed_layers()), "client": "test"}
        assert post(url, "api/training", body)["id"] == 1
        deadline = time.monotonic() + 60
        while get(url, "api/training")["epochs_done"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert get(url, "api/training")["status"] == "running"
    finally:
        process.send_signal(signal.SIGKILL)  # no clean shutdown: a crash, a power cut
        process.wait()
    # what a kill between write_archive's first byte and its rename leaves behind
    (models_dir / ".tmp-k3j9x2-mine.convscope").write_bytes(b"PK\x03\x04 half a zip")

    process, url = serve(tmp_path, models_dir, "second.log")
    try:
        assert get(url, "api/training") == {"status": "idle", "events": []}
        assert [m["name"] for m in get(url, "api/models")["models"]] == ["kept"]
        assert sorted(p.name for p in models_dir.iterdir()) == ["kept.convscope"]
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=15)
    assert convscope.load(models_dir / "kept.convscope").count_params() == digits_model[1].count_params()
