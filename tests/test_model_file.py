import json
import zipfile

import numpy as np
import pytest

import convscope
from convscope import ModelFileError
from convscope.model_file import CONFIG_NAME, WEIGHTS_NAME
from convscope.models import seed_cnn


@pytest.fixture
def saved(tmp_path):
    model = seed_cnn((8, 8, 1), 10, seed=3, class_names=[f"c{i}" for i in range(10)])
    path = tmp_path / "m.convscope"
    model.save(path)
    return model, path


def rewrite(path, config=None, weights=None):
    """Rewrite a model file with a changed config dict and/or weights bytes."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    if config is not None:
        members[CONFIG_NAME] = json.dumps(config).encode()
    if weights is not None:
        members[WEIGHTS_NAME] = weights
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def read_config(path):
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read(CONFIG_NAME))


def test_save_load_gives_identical_predictions(saved):
    model, path = saved
    loaded = convscope.load(path)
    x = np.random.default_rng(0).random((5, 8, 8, 1), dtype=np.float32)
    np.testing.assert_array_equal(model.predict_proba(x), loaded.predict_proba(x))
    assert loaded.class_names == model.class_names and loaded.input_shape == (8, 8, 1)
    config = read_config(path)
    assert config["format_version"] == 1 and config["convscope_version"] == convscope.__version__


def test_truncated_file(saved):
    _, path = saved
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelFileError, match="m.convscope: not a convscope model file or damaged"):
        convscope.load(path)


def test_tampered_weights_fail_the_checksum(saved):
    _, path = saved
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(WEIGHTS_NAME)
    offset = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size // 2
    raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="m.convscope"):
        convscope.load(path)


def test_foreign_files(tmp_path):
    (tmp_path / "notes.convscope").write_text("not a model")
    with pytest.raises(ModelFileError, match="notes.convscope: not a convscope model file"):
        convscope.load(tmp_path / "notes.convscope")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ModelFileError, match="no config.json inside"):
        convscope.load(tmp_path / "other.zip")
    with pytest.raises(FileNotFoundError, match="missing.convscope: no such model file"):
        convscope.load(tmp_path / "missing.convscope")


def test_unsupported_format_version(saved):
    _, path = saved
    config = read_config(path)
    config["format_version"] = 99
    rewrite(path, config=config)
    with pytest.raises(ModelFileError, match="format version 99 is not supported"):
        convscope.load(path)


def test_weights_that_do_not_match_the_architecture(saved):
    from safetensors.numpy import save

    model, path = saved
    tensors = dict(model.state_dict())
    tensors["9.weight"] = np.zeros((128, 11), dtype=np.float32)
    rewrite(path, weights=save(tensors))
    with pytest.raises(ModelFileError, match=r"tensor '9.weight' is float32 \(128, 11\), expected float32"):
        convscope.load(path)
    del tensors["9.weight"]
    tensors["extra"] = np.zeros(1, dtype=np.float32)
    rewrite(path, weights=save(tensors))
    with pytest.raises(ModelFileError, match=r"missing \['9.weight'\], unexpected \['extra'\]"):
        convscope.load(path)


def test_invalid_architecture(saved):
    _, path = saved
    config = read_config(path)
    config["layers"][0]["type"] = "Lambda"
    rewrite(path, config=config)
    with pytest.raises(ModelFileError, match="unknown layer type 'Lambda'"):
        convscope.load(path)


def test_failed_save_keeps_the_existing_file(saved, monkeypatch):
    model, path = saved
    before = path.read_bytes()

    def broken_save(tensors):
        raise RuntimeError("disk full")

    monkeypatch.setattr("safetensors.numpy.save", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        model.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]
