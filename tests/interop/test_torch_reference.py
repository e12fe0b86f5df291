"""examples/torch_reference.py, the PyTorch twin of `convscope train`, on a tiny CIFAR folder."""

import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "torch_reference.py"


@pytest.fixture(scope="module")
def reference():
    """The script's functions, loaded without running main()."""
    return runpy.run_path(str(SCRIPT))


@pytest.fixture
def cifar_folder(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.arange(48, dtype=np.uint8) % 10
    records = np.concatenate([labels[:, None], rng.integers(0, 256, (48, 3072), np.uint8)], axis=1)
    (tmp_path / "data_batch_1.bin").write_bytes(records.tobytes())
    return tmp_path


def test_bn_shards_normalise_each_part_with_its_own_statistics(reference):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten()).train()
    x = torch.randn(8, 3, 5, 5)
    whole, halves = reference["_forward"](net, x, 1), reference["_forward"](net, x, 2)
    torch.testing.assert_close(halves, torch.cat([net(x[:4]), net(x[4:])]))
    assert not torch.allclose(whole, halves)  # the statistics of 8 images are not those of 4


def test_trains_with_cutout_and_reports_every_epoch(cifar_folder, monkeypatch, capsys):
    args = ["--dataset", "cifar10", "--data-dir", str(cifar_folder), "--model", "seed"]
    args += ["--recipe", "budget", "--epochs", "2", "--batch-size", "16", "--val-split", "last:8"]
    args += ["--cutout", "8", "--bn-shards", "2", "--eval-each-epoch", "--device", "cpu"]
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *args])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    printed = capsys.readouterr().out
    assert "on cpu" in printed and "batch norm in 2 part(s) of a batch" in printed
    assert "epoch 1/2" in printed and "validation (--val-split last:8, the last ones) accuracy=" in printed
    assert "torch validation (--val-split last:8, the last ones) accuracy with --tta:" in printed
