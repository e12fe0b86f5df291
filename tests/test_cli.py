import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from convscope.cli import main
from convscope.data import load


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out-dir", str(out), "--epochs", "30"]) == 0
    return out / "model.convscope"


def test_demo_report_shows_why_and_how_the_kernels_grew(demo_model):
    import convscope

    html = (demo_model.parent / "report.html").read_text()
    for anchor in ("why", "classes", "health", "growth"):
        assert f'<section id="{anchor}"' in html
    assert len(convscope.load(demo_model).snapshots.steps) == 31  # before training, then every epoch


def test_demo_prints_test_accuracy_and_saves(demo_model, capsys):
    assert demo_model.is_file()
    assert main(["evaluate", str(demo_model)]) == 0
    accuracy = float(capsys.readouterr().out.split("test accuracy:")[1])
    assert accuracy >= 0.95


def test_train_then_evaluate(tmp_path, capsys):
    out = tmp_path / "d.convscope"
    assert (
        main(
            [
                "train",
                "--dataset",
                "digits",
                "--epochs",
                "1",
                "--batch-size",
                "64",
                "--optimizer",
                "sgd",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert f"saved model to {out}" in capsys.readouterr().out
    assert main(["evaluate", str(out), "--split", "train"]) == 0
    assert "train accuracy:" in capsys.readouterr().out


def test_predict_reads_converts_and_names_classes(demo_model, tmp_path, capsys):
    test = load("digits", split="test")
    paths = []
    for i in range(3):
        pixels = (test.images[i, :, :, 0] * 255).astype(np.uint8)
        path = tmp_path / f"digit{i}.png"
        Image.fromarray(np.stack([pixels] * 3, axis=-1)).resize((32, 32), Image.NEAREST).save(path)
        paths.append(str(path))
    assert main(["predict", str(demo_model), *paths]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(str(tmp_path))]
    predicted = [int(line.split(": ")[1].split()[0]) for line in lines]
    assert sum(p == t for p, t in zip(predicted, test.labels[:3], strict=True)) >= 2


def test_predict_says_what_it_did(demo_model, tmp_path, capsys):
    Image.fromarray(np.full((16, 16, 3), 250, dtype=np.uint8)).save(tmp_path / "paper.jpg")
    assert main(["predict", str(demo_model), str(tmp_path / "paper.jpg")]) == 0
    out = capsys.readouterr().out
    assert "converted RGB to grayscale" in out and "try --invert" in out
    assert "resized 16x16 to 8x8 (height x width)" in out


def test_errors_are_one_clear_line(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "none.convscope")]) == 2
    assert "convscope: error:" in capsys.readouterr().err
    (tmp_path / "bad.png").write_text("not an image")
    (tmp_path / "bad.convscope").write_bytes(b"PK\x03\x04broken")
    assert main(["predict", str(tmp_path / "bad.convscope"), str(tmp_path / "bad.png")]) == 2
    assert "bad.convscope" in capsys.readouterr().err
    assert main(["train", "--dataset", "mnist", "--out", str(tmp_path / "m.convscope")]) == 2
    assert "needs data_dir" in capsys.readouterr().err


def test_console_script_help_lists_only_working_commands():
    result = subprocess.run(
        [sys.executable, "-m", "convscope", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("demo", "train", "evaluate", "predict"):
        assert command in result.stdout


def test_train_standardises_and_takes_recipe_options(tmp_path, capsys):
    import convscope

    out = tmp_path / "a.convscope"
    args = ["train", "--epochs", "1", "--augment", "--schedule", "cosine", "--lr", "0.002", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "cosine schedule" in printed and "crop shifting up to 2 pixels" in printed  # the seed recipe
    assert convscope.load(out).standardization is not None
    assert convscope.load(out).augmentation == {"flip": True, "crop_padding": 2}
    assert main(["train", "--epochs", "1", "--no-standardize", "--out", str(out)]) == 0
    assert convscope.load(out).standardization is None


def test_train_takes_crop_padding_label_smoothing_and_weight_decay(tmp_path, capsys):
    import convscope

    out = tmp_path / "b.convscope"
    args = ["train", "--epochs", "1", "--augment", "--crop-padding", "3", "--label-smoothing", "0.2"]
    assert main([*args, "--weight-decay", "5e-4", "--cutout", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "weight decay 0.0005, label smoothing 0.2" in printed and "up to 3 pixels + cutout 4x4" in printed
    assert convscope.load(out).augmentation == {"flip": True, "crop_padding": 3, "cutout": 4}
    for flag, value, complaint in [
        ("--cutout", "-1", "a whole number >= 0"),
        ("--label-smoothing", "1", "up to (not including) 1"),
        ("--weight-decay", "-0.1", "a number >= 0"),
        ("--crop-padding", "two", "a whole number >= 0"),
        ("--cutout", "8", "--cutout: shapes the augmentation, which is off here: give --augment too"),
        ("--crop-padding", "3", "--crop-padding: shapes the augmentation, which is off here"),
    ]:
        with pytest.raises(SystemExit) as stopped:
            main(["train", flag, value, "--out", str(out)])
        assert stopped.value.code == 2
        assert complaint in capsys.readouterr().err


def test_tta_averages_mirror_images_only_for_models_trained_with_flips(tmp_path, capsys):
    flipped, plain = tmp_path / "flipped.convscope", tmp_path / "plain.convscope"
    assert main(["train", "--epochs", "1", "--augment", "--out", str(flipped)]) == 0
    assert main(["train", "--epochs", "1", "--out", str(plain)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(flipped), "--tta"]) == 0
    assert "(averaged with mirror images, --tta)" in capsys.readouterr().out
    assert main(["evaluate", str(plain), "--tta"]) == 2
    assert "plain.convscope was not" in capsys.readouterr().err
    image = tmp_path / "digit.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(image)
    assert main(["predict", str(flipped), str(image), "--tta"]) == 0
    assert str(image) in capsys.readouterr().out
