"""The command line refuses bad arguments at parse time, in one line naming the flag, before any work;
and the results it prints are not silently wrong (empty classes, divergence, other class names)."""

import argparse
import struct

import numpy as np
import pytest

from convscope.cli import build_parser, main
from convscope.data import FASHION_MNIST_CLASSES


def parse_error(argv, capsys) -> str:
    """The one line `convscope ARGV` prints when it refuses its arguments (exit 2, nothing on stdout)."""
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no data loaded, no summary printed
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--epochs", "-1"], "argument --epochs: must be a whole number >= 1, got '-1'"),
        (["--epochs", "0"], "argument --epochs: must be a whole number >= 1, got '0'"),
        (["--batch-size", "0"], "argument --batch-size: must be a whole number >= 1, got '0'"),
        (["--lr", "-1"], "argument --lr: must be a number > 0, got '-1'"),
        (["--lr", "0"], "argument --lr: must be a number > 0, got '0'"),
        (["--val-split", "1.5"], "argument --val-split: must be a number between 0 and 1"),
        (["--keep-best", "val_accuracy"], "argument --keep-best: val_accuracy is measured on held-out"),
        (["--early-stop", "3"], "argument --early-stop: watches val_loss: give --val-split too"),
        (["--resume", "missing.ckpt"], "argument --resume: missing.ckpt: no such file"),
        (["--seed", "x"], "argument --seed: must be a whole number, got 'x'"),
        (["--val-fraction", "0"], "argument --val-fraction: must be a number between 0 and 1"),
    ],
)
def test_train_refuses_bad_arguments_at_parse_time(args, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    line = parse_error(["train", *args], capsys)
    assert line.startswith("convscope train: error: ") and expected in line
    assert line.endswith("(see convscope train --help)")


def test_checkpoint_and_out_must_differ(tmp_path, capsys):
    out = str(tmp_path / "m.convscope")
    line = parse_error(["train", "--out", out, "--checkpoint", out], capsys)
    assert "argument --checkpoint: must be another file than --out" in line


def test_train_refuses_to_overwrite_a_file_that_is_not_a_model(tmp_path, capsys):
    photo = tmp_path / "shoe.png"
    photo.write_bytes(b"\x89PNG not really")
    line = parse_error(["train", "--out", str(photo)], capsys)
    assert f"argument --out: {photo} exists and is not a convscope model: give --force" in line
    assert photo.read_bytes() == b"\x89PNG not really"
    assert "--checkpoint" in parse_error(["train", "--checkpoint", str(photo)], capsys)
    assert "is a folder" in parse_error(["train", "--out", str(tmp_path)], capsys)


def test_train_replaces_a_model_file_and_with_force_anything(tmp_path, capsys):
    out = tmp_path / "m.convscope"
    args = ["train", "--epochs", "1", "--out", str(out)]
    assert main(args) == 0
    assert "1 epoch," in capsys.readouterr().out  # not "1 epochs"
    assert main(args) == 0  # a model file may be replaced
    out.write_text("notes")
    assert main([*args, "--force"]) == 0
    assert out.read_bytes()[:2] == b"PK"


def test_predict_top_must_be_positive(tmp_path, capsys):
    for value in ("0", "-1"):
        line = parse_error(["predict", "m.convscope", "a.png", "--top", value], capsys)
        assert f"argument --top: must be a whole number >= 1, got '{value}'" in line


def test_explain_index_and_patch_images_are_checked(capsys):
    assert "argument --index" in parse_error(["explain", "m.convscope", "--index", "-2"], capsys)
    assert "argument --patch-images" in parse_error(["explain", "m.convscope", "--patch-images", "x"], capsys)


def test_serve_checks_its_port_models_folder_and_models_before_serving(tmp_path, capsys):
    assert "argument --port: must be a port number from 0 to 65535" in parse_error(
        ["serve", "--port", "99999"], capsys
    )
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    assert main(["serve", "--models-dir", str(a_file)]) == 2
    assert f"{a_file}: not a folder" in capsys.readouterr().err
    damaged = tmp_path / "damaged.convscope"
    damaged.write_bytes(b"PK\x03\x04 damaged")
    assert main(["serve", "--model", str(damaged), "--models-dir", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("convscope: error: ") and "damaged.convscope" in err and len(err.splitlines()) == 1


def _options(parser, name="convscope"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _options(sub, f"{name} {sub_name}")
        elif action.option_strings and action.dest not in ("help", "version"):
            yield name, action


def test_every_option_has_help_that_shows_its_default():
    for command, action in _options(build_parser()):
        flag = f"{command} {action.option_strings[-1]}"
        assert action.help, f"{flag} has no help"
        if action.default not in (None, False, []):
            assert "default" in action.help, f"{flag} does not show its default"


def test_train_help_does_not_pass_a_recipe_off_as_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--augment stays off unless given" in text
    assert "passes over the data (default: the recipe's; else 10)" in text


# silently wrong results


def write_cifar(folder, labels):
    """A CIFAR-10 folder whose training and test batches hold one random image per label."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    labels = np.asarray(labels, dtype=np.uint8)
    records = np.concatenate([labels[:, None], rng.integers(0, 256, (len(labels), 3072), np.uint8)], axis=1)
    for name in ("data_batch_1.bin", "test_batch.bin"):
        (folder / name).write_bytes(records.tobytes())
    return folder


def test_a_requested_class_without_images_is_an_error(tmp_path, capsys):
    folder = write_cifar(tmp_path / "catdog", [3, 5] * 8)  # cats and dogs only
    args = ["--data-dir", str(folder), "--epochs", "1", "--out", str(tmp_path / "m.convscope")]
    assert main(["train", "--dataset", "cifar10:cat,bird", *args]) == 2
    assert "no images of bird (its images are of cat, dog)" in capsys.readouterr().err
    assert main(["train", "--dataset", "cifar10", *args]) == 2
    err = capsys.readouterr().err
    empty = "airplane, automobile, bird, deer, frog, horse, ship, truck"
    assert f"no images of 8 of its 10 classes ({empty})" in err
    assert "--dataset cifar10:cat,dog" in err
    assert not (tmp_path / "m.convscope").exists()
    assert main(["train", "--dataset", "cifar10:cat,dog", *args]) == 0


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_a_loss_that_grew_by_orders_of_magnitude_stops_training_without_saving(tmp_path, capsys):
    out = tmp_path / "m.convscope"
    assert main(["train", "--lr", "1e6", "--epochs", "1", "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "training diverged at step" in error[0] and "the loss grew from" in error[0]
    assert not out.exists()


def write_idx(path, array):
    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.tobytes())


def test_evaluating_on_a_data_set_with_other_class_names_warns(tmp_path, capsys):
    from convscope.models import seed_cnn

    model_path = tmp_path / "fm.convscope"
    seed_cnn((28, 28, 1), 10, class_names=FASHION_MNIST_CLASSES).save(model_path)
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    write_idx(mnist / "t10k-images-idx3-ubyte", np.zeros((10, 28, 28)))
    write_idx(mnist / "t10k-labels-idx1-ubyte", np.arange(10))
    assert main(["evaluate", str(model_path), "--dataset", "mnist", "--data-dir", str(mnist)]) == 0
    captured = capsys.readouterr()
    assert "test accuracy:" in captured.out
    assert f"warning: {model_path} was trained on the classes T-shirt/top, Trouser," in captured.err
    assert "but data set 'mnist' names its classes 0, 1, 2" in captured.err
    assert main(["evaluate", str(model_path), "--dataset", "fashion-mnist", "--data-dir", str(mnist)]) == 0
    assert capsys.readouterr().err == ""  # the same files read as Fashion-MNIST: the names match
