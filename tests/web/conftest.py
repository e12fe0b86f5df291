"""Shared fixtures of the web explorer's tests: small models saved to files, data folders, the app."""

import warnings

import numpy as np
import pytest
from web_helpers import write_idx

from convscope.data import load
from convscope.models import seed_cnn
from convscope.web.datasets import build_recipe

with warnings.catch_warnings():
    # starlette's test client asks for httpx2 over httpx; both work
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from fastapi.testclient import TestClient


@pytest.fixture(scope="session")
def digits_model(tmp_path_factory):
    """(path, model): the seed CNN after 2 quick epochs on 300 bundled digits (about a second)."""
    train = load("digits", split="train")
    model = seed_cnn((8, 8, 1), 10, seed=0, class_names=train.class_names)
    model.fit(train.images[:300], train.labels[:300], epochs=2, batch_size=32, seed=0, verbose=0)
    path = tmp_path_factory.mktemp("models") / "digits.convscope"
    model.save(path)
    return path, model


@pytest.fixture(scope="session")
def gray28_model_file(tmp_path_factory):
    """An untrained one-conv model for 28x28 gray images, standardised like `convscope train` does."""
    model = build_recipe("tiny_cnn", (28, 28, 1), 10, 0, [f"class {i}" for i in range(10)])
    model.standardization = {"mean": [0.2], "std": [0.3]}
    path = tmp_path_factory.mktemp("models") / "gray28.convscope"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def rgb_model_file(tmp_path_factory):
    model = build_recipe("tiny_cnn", (32, 32, 3), 2, 0, ["cat", "dog"])
    path = tmp_path_factory.mktemp("models") / "rgb.convscope"
    model.save(path)
    return path


@pytest.fixture
def models_dir(tmp_path):
    folder = tmp_path / "models-folder"
    folder.mkdir()
    return folder


@pytest.fixture
def make_client(digits_model, gray28_model_file, rgb_model_file, models_dir):
    """make_client(data_dirs=()) -> a TestClient over an app with the three models and `models_dir`."""
    from convscope.web import create_app

    clients = []

    def make(data_dirs=()):
        files = [digits_model[0], gray28_model_file, rgb_model_file]
        client = TestClient(create_app(files, models_dir, data_dirs))
        client.__enter__()  # runs the lifespan, so shutdown stops a training job
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client):
    return make_client()


@pytest.fixture
def data_root(tmp_path):
    """A --data-dir folder: a tiny fashion-mnist (IDX, train and test) and a cats-and-dogs CIFAR subset."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    fashion = root / "fashion-mnist"
    fashion.mkdir(parents=True)
    for split, count in (("train", 64), ("t10k", 32)):
        write_idx(fashion / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28)))
        write_idx(fashion / f"{split}-labels-idx1-ubyte", np.arange(count) % 10)
    cifar = root / "cifar10-catdog"
    cifar.mkdir()
    (cifar / "batches.meta.txt").write_text(
        "\n".join(["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"])
    )
    for name, count in (("data_batch_1.bin", 40), ("test_batch.bin", 10)):
        labels = np.where(np.arange(count) % 2 == 0, 3, 5).astype(np.uint8)
        pixels = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
        (cifar / name).write_bytes(np.concatenate([labels[:, None], pixels], axis=1).tobytes())
    (root / "notes").mkdir()  # a folder without a data set is ignored
    return root


def digits_28(images: np.ndarray) -> np.ndarray:
    """Bundled 8x8 digits (N, 8, 8, 1) in [0, 1] as MNIST-like 28x28 bytes: each pixel 2x2, padded by 6."""
    big = np.kron(images[..., 0], np.ones((2, 2)))
    return np.round(np.pad(big, ((0, 0), (6, 6), (6, 6))) * 255).astype(np.uint8)


@pytest.fixture(scope="session")
def digits28_root(tmp_path_factory):
    """A --data-dir holding `mnist/`: 1,000 training and 200 test bundled digits, drawn at 28x28 (IDX)."""
    root = tmp_path_factory.mktemp("digits28")
    folder = root / "mnist"
    folder.mkdir()
    for split, prefix, count in (("train", "train", 1000), ("test", "t10k", 200)):
        data = load("digits", split=split)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", digits_28(data.images[:count]))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", data.labels[:count])
    return root
