import numpy as np
import pytest
from PIL import Image

import convscope
from convscope.cli import main
from convscope.data import DataFormatError, SkippedImagesWarning, load
from convscope.data.folder import folder_files
from convscope.data.images import ImageFileError

COLOURS = {"cats": (220, 60, 40), "dogs": (40, 80, 220), "owls": (60, 200, 60)}
SIZES = [(20, 30), (32, 32), (40, 24), (16, 16), (33, 27)]  # (height, width)
MODES = ["RGB", "RGBA", "L", "RGB", "P"]


def _photo(colour, size, mode, rng):
    """A noisy image of one colour, (height, width), in a pillow mode."""
    pixels = np.clip(np.array(colour) + rng.integers(-25, 25, (*size, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels).convert(mode)


def make_class(folder, colour, rng, count=5):
    folder.mkdir(parents=True)
    for i in range(count):
        size, mode = SIZES[i % len(SIZES)], MODES[i % len(MODES)]
        suffix = ".jpg" if mode == "RGB" and i % 2 else ".png"
        _photo(colour, size, mode, rng).save(folder / f"{i:02d}{suffix}")


@pytest.fixture
def pets(tmp_path):
    """pets/{cats,dogs,owls}/ with 5 images each: PNG and JPEG; RGB, RGBA, gray, palette; five sizes."""
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        make_class(tmp_path / "pets" / name, colour, rng)
    return tmp_path / "pets"


def test_load_gives_resized_images_labels_and_sorted_class_names(pets):
    train = load(f"folder:{pets}")
    assert train.images.shape == (12, 32, 32, 3) and train.images.dtype == np.float32
    assert 0 <= train.images.min() and train.images.max() <= 1
    assert train.labels.dtype == np.int64 and np.bincount(train.labels).tolist() == [4, 4, 4]
    assert train.class_names == ["cats", "dogs", "owls"]
    test = load("folder", pets, split="test")  # the same folder given as data_dir
    assert test.images.shape == (3, 32, 32, 3) and sorted(test.labels.tolist()) == [0, 1, 2]
    gray = load(f"folder:{pets}", image_size=(16, 24), grayscale=True)
    assert gray.images.shape == (12, 16, 24, 1)
    colour_images = train.images[train.images.std(axis=3).mean(axis=(1, 2)) > 0.1]  # not the gray ones
    reds = colour_images[..., 0].mean(axis=(1, 2)) > colour_images[..., 2].mean(axis=(1, 2))
    assert reds.sum() >= 2  # the cats stay red after RGBA, palette and JPEG decoding


def test_seeded_split_is_reproducible_disjoint_and_complete(pets):
    names, train, train_labels = folder_files(pets, "train")
    _, test, test_labels = folder_files(pets, "test")
    assert set(train).isdisjoint(test) and len(set(train) | set(test)) == 15
    assert (train, test) == (folder_files(pets, "train")[1], folder_files(pets, "test")[1])
    assert folder_files(pets, "val")[1] == test
    assert [names[label] for label in test_labels] == [p.split("/")[-2] for p in test]
    other_seeds = [tuple(folder_files(pets, "test", seed=seed)[1]) for seed in range(1, 6)]
    assert any(t != tuple(test) for t in other_seeds)
    assert len(folder_files(pets, "test", val_fraction=0.4)[1]) == 6
    assert len(folder_files(pets, "train", val_fraction=0)[1]) == 15
    with pytest.raises(ValueError, match="no test split"):
        folder_files(pets, "test", val_fraction=0)
    with pytest.raises(ValueError, match="val_fraction must be"):
        folder_files(pets, "train", val_fraction=1.0)
    twice = [load(f"folder:{pets}", split="test").images for _ in range(2)]
    assert np.array_equal(*twice)


def test_a_folder_with_train_and_test_subfolders_keeps_its_split(tmp_path):
    rng = np.random.default_rng(1)
    for split, count in (("train", 3), ("test", 2)):
        for name in ("ants", "bees"):
            make_class(tmp_path / split / name, COLOURS["cats" if name == "ants" else "dogs"], rng, count)
    train, test = load(f"folder:{tmp_path}"), load(f"folder:{tmp_path}", split="val", val_fraction=0.9)
    assert train.class_names == test.class_names == ["ants", "bees"]
    assert len(train.labels) == 6 and len(test.labels) == 4
    make_class(tmp_path / "test" / "wasps", COLOURS["owls"], rng, 1)
    with pytest.raises(DataFormatError, match="wasps have no counterpart"):
        load(f"folder:{tmp_path}", split="test")


def test_unreadable_image_is_named_or_skipped_and_reported(pets):
    (pets / "cats" / "broken.png").write_text("not a picture")
    (pets / "dogs" / "cut.jpg").write_bytes((pets / "dogs" / "03.jpg").read_bytes()[:40])
    with pytest.raises(ImageFileError, match=r"broken\.png: not an image file.*--skip-bad"):
        load(f"folder:{pets}", val_fraction=0)
    with pytest.warns(SkippedImagesWarning, match=r"skipped 2 unreadable.*cats/broken\.png.*cut\.jpg"):
        train = load(f"folder:{pets}", val_fraction=0, skip_bad=True)
    assert np.bincount(train.labels).tolist() == [5, 5, 5]
    for name in ("a", "b", "c", "d", "e", "f"):
        (pets / "owls" / f"{name}.png").write_bytes(b"")
    with pytest.warns(SkippedImagesWarning, match=r"skipped 8 .* and 3 more"):
        load(f"folder:{pets}", val_fraction=0, skip_bad=True)


def test_class_whose_images_are_all_unreadable_is_an_error(tmp_path):
    make_class(tmp_path / "cats", COLOURS["cats"], np.random.default_rng(0), 2)
    (tmp_path / "dogs").mkdir()
    (tmp_path / "dogs" / "x.png").write_text("no")
    with pytest.raises(DataFormatError, match=r"dogs: none of the 1 images of class 'dogs'"):
        load(f"folder:{tmp_path}", val_fraction=0, skip_bad=True)


def test_folder_layout_errors_name_the_folder(pets, tmp_path):
    (pets / "empty").mkdir()
    with pytest.raises(DataFormatError, match=r"pets/empty: empty class folder"):
        load(f"folder:{pets}")
    (pets / "empty" / "notes.txt").write_text("cats are nice")
    with pytest.raises(DataFormatError, match=r"empty class folder.*it holds notes\.txt"):
        load(f"folder:{pets}")
    lonely = tmp_path / "lonely"
    make_class(lonely / "cats", COLOURS["cats"], np.random.default_rng(0), 2)
    Image.new("RGB", (4, 4)).save(lonely / "stray.png")
    with pytest.raises(DataFormatError, match=r"at least 2 class subfolders.*found only 'cats' \(1 images"):
        load(f"folder:{lonely}")
    with pytest.raises(FileNotFoundError, match="nowhere: no such folder"):
        load(f"folder:{tmp_path / 'nowhere'}")
    with pytest.raises(ValueError, match="give the folder once"):
        load(f"folder:{pets}", data_dir=pets)
    with pytest.raises(ValueError, match="image_size must be"):
        load(f"folder:{pets}", image_size=(0, 4))
    with pytest.raises(ValueError, match="apply to folder:PATH data sets"):
        load("digits", image_size=(8, 8))


def test_cli_trains_on_a_folder_and_predicts_class_names(pets, tmp_path, capsys):
    (pets / "dogs" / "broken.png").write_text("not a picture")
    model = tmp_path / "pets.convscope"
    train = [
        "train",
        "--dataset",
        f"folder:{pets}",
        *"--epochs 2 --batch-size 4".split(),
        "--out",
        str(model),
    ]
    assert main(train) == 2
    assert "broken.png" in capsys.readouterr().err
    assert main([*train, "--skip-bad"]) == 0
    captured = capsys.readouterr()
    assert "skipped 1 unreadable image(s)" in captured.err and "dogs/broken.png" in captured.err
    assert "training images of 32x32x3, 3 classes" in captured.out
    assert convscope.load(model).class_names == ["cats", "dogs", "owls"]
    assert main(["evaluate", str(model), "--dataset", f"folder:{pets}", "--skip-bad"]) == 0
    assert "test accuracy:" in capsys.readouterr().out
    photo = tmp_path / "some.jpg"
    _photo(COLOURS["owls"], (50, 40), "RGB", np.random.default_rng(5)).save(photo)
    assert main(["predict", str(model), str(photo)]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    predicted = line.split(": ")[1].split()[0]
    assert line.startswith(str(photo)) and predicted in ("cats", "dogs", "owls")
    assert all(name in line for name in ("cats", "dogs", "owls"))  # the top 3 are listed by name


def test_cli_folder_options_grayscale_and_size(pets, tmp_path, capsys):
    model = tmp_path / "gray.convscope"
    args = ["train", "--dataset", f"folder:{pets}", "--epochs", "1", "--out", str(model)]
    assert main([*args, "--grayscale", "--image-size", "12x16", "--val-fraction", "0.4"]) == 0
    assert "9 training images of 12x16x1" in capsys.readouterr().out
    assert convscope.load(model).input_shape == (12, 16, 1)
    assert main(["evaluate", str(model), "--dataset", f"folder:{pets}", "--val-fraction", "0.4"]) == 0
    assert "test accuracy:" in capsys.readouterr().out  # size and mode taken from the model
    with pytest.raises(SystemExit):
        main([*args, "--image-size", "0x3"])
