"""examples/train_ddp.py under torchrun: two CPU processes (gloo) continue training an exported
model; the replicas must end identical, the loss must fall, and the result must come back to
convscope with the same numbers."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from convscope import load_model  # noqa: E402
from convscope.cli import main  # noqa: E402
from convscope.data import load  # noqa: E402
from convscope.models import seed_cnn  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train_ddp.py"


def run_torchrun(args, timeout=180):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    result = subprocess.run(
        command + [str(EXAMPLE), *args], capture_output=True, text=True, timeout=timeout, env=env
    )
    assert result.returncode == 0, f"torchrun failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    path = folder / "digits.convscope"
    seed_cnn((8, 8, 1), 10, seed=0, class_names=load("digits").class_names).save(path)
    return path


def test_two_replicas_train_an_exported_model_in_step(digits_model, tmp_path, capsys):
    export = tmp_path / "torch-export"
    assert main(["export", str(digits_model), "--format", "torch", "--out", str(export)]) == 0
    out = tmp_path / "ddp"
    printed = run_torchrun(
        [
            str(export),
            "--dataset",
            "digits",
            "--steps",
            "60",
            "--batch-size",
            "32",
            "--lr",
            "0.1",
            "--out",
            str(out),
        ]
    )
    assert "2 processes (gloo, cpu)" in printed

    from safetensors.numpy import load_file

    weights = [load_file(str(out / f"rank{rank}.safetensors")) for rank in (0, 1)]
    assert (
        sorted(weights[0])
        == sorted(weights[1])
        == ["0.bias", "0.weight", "3.bias", "3.weight", "7.bias", "7.weight", "9.bias", "9.weight"]
    )
    for key in weights[0]:
        np.testing.assert_array_equal(weights[0][key], weights[1][key], err_msg=key)
    results = [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["world_size"] for r in results] == [2, 2]
    assert results[0]["eval_loss_after"] < 0.7 * results[0]["eval_loss_before"]
    assert np.mean(results[0]["train_losses"][-10:]) < np.mean(results[0]["train_losses"][:10])
    assert results[0]["train_losses"] != results[1]["train_losses"]  # each rank saw its own shard

    trained = load_model(out / "model.convscope")  # back in convscope through from_torch
    assert trained.class_names == load("digits").class_names
    test = load("digits", split="test")
    loss, accuracy = trained.evaluate(test.images, test.labels)
    assert loss == pytest.approx(results[0]["eval_loss_after"], abs=1e-4)
    assert accuracy > 0.7


def test_a_convscope_file_is_converted_with_to_torch(digits_model):
    spec = importlib.util.spec_from_file_location("train_ddp_example", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    net, input_shape, class_names = example.load_network(str(digits_model))
    assert input_shape == (8, 8, 1) and class_names == load("digits").class_names
    assert [type(m).__name__ for m in net][-2:] == ["Linear", "Softmax"]
