"""`convscope train --model resnet20 --recipe paper|budget`: the recipes' settings, the step schedule,
and a short run of the command on a tiny CIFAR folder without a test batch."""

import numpy as np
import pytest

import convscope
from convscope.cli import main
from convscope.models import recipe_settings
from convscope.optim import Steps


def test_paper_recipe_is_the_papers_and_flags_override_it():
    paper = recipe_settings("resnet20")  # the ResNets' default recipe
    assert paper == recipe_settings("resnet56", "paper")
    assert (paper["optimizer"], paper["lr"], paper["weight_decay"], paper["batch_size"]) == (
        "sgd",
        0.1,
        1e-4,
        128,
    )
    assert (paper["schedule"], paper["epochs"], paper["augment"], paper["crop_padding"]) == (
        "steps",
        182,
        True,
        4,
    )
    assert paper["val_split"] == ("last", 5000) and paper["label_smoothing"] == 0.0 and not paper["nesterov"]
    assert -(-45_000 // 128) * 182 == 64_064  # iterations: the paper stops at 64k
    budget = recipe_settings("resnet20", "budget", epochs=30)
    assert budget["epochs"] == 30 and budget["schedule"] == "onecycle" and budget["label_smoothing"] == 0.1
    assert recipe_settings("seed")["optimizer"] == "adam" and recipe_settings("seed")["crop_padding"] == 2


def test_steps_schedule_divides_by_ten_at_half_and_three_quarters():
    schedule = Steps(0.1)
    lrs = [schedule(step, 64_064) for step in (0, 32_031, 32_032, 48_047, 48_048, 64_063)]
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    with pytest.raises(ValueError, match="milestones"):
        Steps(0.1, (0.75, 0.5))


def test_train_resnet20_with_the_paper_recipe_on_a_folder_without_test_batch(tmp_path, capsys):
    folder = tmp_path / "c10"
    folder.mkdir()
    rng = np.random.default_rng(0)
    labels = np.arange(40, dtype=np.uint8) % 10
    records = np.concatenate([labels[:, None], rng.integers(0, 256, (40, 3072), np.uint8)], axis=1)
    (folder / "data_batch_1.bin").write_bytes(records.tobytes())
    out = tmp_path / "r.convscope"
    args = ["train", "--dataset", "cifar10", "--data-dir", str(folder), "--model", "resnet20"]
    args += ["--epochs", "1", "--batch-size", "16", "--val-split", "last:8", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "recipe paper, sgd lr 0.1 (steps schedule), weight decay 0.0001, label smoothing 0.0" in printed
    assert (
        "flip + crop shifting up to 4 pixels" in printed and "8 of the 40 training images held out" in printed
    )
    assert "residual_8 (Residual)" in printed and "Trainable params: 269,722" in printed
    model = convscope.load(out)
    assert model.name == "resnet20" and model.augmentation["flip"]
    evaluate = ["evaluate", str(out), "--dataset", "cifar10", "--data-dir", str(folder)]
    assert main([*evaluate, "--split", "val", "--val-split", "last:8"]) == 0
    assert "accuracy" in capsys.readouterr().out


def test_the_recipes_split_on_a_small_data_set_says_what_to_give(tmp_path, capsys):
    args = ["train", "--model", "resnet20", "--epochs", "1", "--out", str(tmp_path / "d.convscope")]
    assert main(args) == 2  # the bundled digits: 1,437 training images
    error = capsys.readouterr().err
    assert "the paper recipe holds out the last 5,000 images" in error and "give --val-split" in error
