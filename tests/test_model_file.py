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


# hostile files: refused with a clear error before anything big is read or built


def zip_members(path, members, compression=zipfile.ZIP_DEFLATED):
    import warnings

    with warnings.catch_warnings(), zipfile.ZipFile(path, "w", compression) as archive:
        warnings.simplefilter("ignore", UserWarning)  # duplicate names, on purpose
        for name, data in members:
            archive.writestr(name, data)


def members_of(path):
    with zipfile.ZipFile(path) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


def test_duplicate_too_many_unknown_and_compressed_members(saved, tmp_path):
    _, path = saved
    members = members_of(path)
    zip_members(tmp_path / "dup.convscope", [*members, members[0]])
    with pytest.raises(ModelFileError, match="dup.convscope: member 'config.json' appears more than once"):
        convscope.load(tmp_path / "dup.convscope")
    zip_members(tmp_path / "many.convscope", members + [(f"x{i}", b"") for i in range(20)])
    with pytest.raises(ModelFileError, match="many.convscope: its zip directory declares 22 members"):
        convscope.load(tmp_path / "many.convscope")
    zip_members(tmp_path / "odd.convscope", [*members, ("model.pkl", b"\x80\x04")])
    with pytest.raises(ModelFileError, match="odd.convscope: unexpected member 'model.pkl'"):
        convscope.load(tmp_path / "odd.convscope")
    zip_members(tmp_path / "bz.convscope", members, zipfile.ZIP_BZIP2)
    with pytest.raises(
        ModelFileError, match="config.json uses zip compression method 12, not stored or deflate"
    ):
        convscope.load(tmp_path / "bz.convscope")


def patch_sizes(path, name, file_size):
    """Make the zip directory (and local header) declare `file_size` bytes for member `name`."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
    central = raw.find(b"PK\x01\x02")
    while raw[central + 46 : central + 46 + len(name)] != name.encode():
        central = raw.find(b"PK\x01\x02", central + 4)
    raw[central + 24 : central + 28] = file_size.to_bytes(4, "little")
    raw[info.header_offset + 22 : info.header_offset + 26] = file_size.to_bytes(4, "little")
    path.write_bytes(bytes(raw))


def test_zip_bomb_ratio_and_size_limits(saved):
    _, path = saved
    with zipfile.ZipFile(path) as archive:
        compressed = archive.getinfo(WEIGHTS_NAME).compress_size
    patch_sizes(path, WEIGHTS_NAME, compressed * 5000)
    with pytest.raises(
        ModelFileError, match="weights.safetensors declares .* more than its compression can produce"
    ):
        convscope.load(path)
    patch_sizes(path, CONFIG_NAME, 1 << 21)
    with pytest.raises(
        ModelFileError, match=r"config.json declares 2,097,152 bytes, over the 1,048,576 limit"
    ):
        convscope.load(path)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.update(input_shape=[8, 8, "1"]), "input_shape must be"),
        (lambda c: c.update(input_shape=[100000, 100000, 3]), "values per image, over the"),
        (lambda c: c.update(layers=[]), "layers must be a list of 1 to"),
        (lambda c: c["layers"].__setitem__(0, "Conv2D"), "layer 0 must be an object with a 'type'"),
        (lambda c: c["layers"][0]["config"].update(filters=10**9), "needs far more parameters .* than"),
        (lambda c: c["layers"][7]["config"].update(units=2**40), "needs far more parameters"),
        (
            lambda c: c["layers"][0]["config"].update(padding=20000),
            "layer 0 would hold .* values for one image",
        ),
        (lambda c: c["layers"][0]["config"].update(bogus=1), "unexpected keyword argument 'bogus'"),
        (lambda c: c.update(class_names=["a", "b"]), "config.json names 2 classes, but the model has 10"),
        (lambda c: c.update(class_names="0123456789"), "class_names must be a list of strings"),
        (lambda c: c.update(seed=-1), "seed a whole number"),
        (lambda c: c.update(standardization={"mean": [0.0], "std": [0.0]}), "positive stds"),
        (lambda c: c.update(augmentation={"flip": 1, "crop_padding": 4}), "augmentation must be"),
        (lambda c: c.update(augmentation={"flip": True, "crop_padding": -1}), "augmentation must be"),
        (lambda c: c.update(augmentation={"flip": True, "crop_padding": 4, "cutout": 0}), "cutout"),
    ],
)
def test_invalid_configs_fail_before_building(saved, change, message):
    _, path = saved
    config = read_config(path)
    change(config)
    rewrite(path, config=config)
    with pytest.raises(ModelFileError, match=message) as caught:
        convscope.load(path)
    assert str(caught.value).startswith(str(path)) and len(str(caught.value)) < 600


@pytest.mark.parametrize(
    "text, message",
    [
        ("[" * 100000 + "]" * 100000, "not valid JSON"),
        ('{"a": ' * 40 + "1" + "}" * 40, "nests lists and objects more than 32 levels"),
        ('{"format": "convscope-model", "format": "x"}', "duplicate key 'format'"),
        ('{"format": NaN}', "NaN is not a JSON number"),
        ('{"format": 1e999}', "out of range"),
        ('{"format": ' + "9" * 5000 + "}", "not valid JSON"),
        ("\xff\xfe", "not valid JSON"),
    ],
)
def test_hostile_json(saved, text, message):
    _, path = saved
    members = dict(members_of(path))
    members[CONFIG_NAME] = text.encode("latin-1") if text.startswith("\xff") else text.encode()
    zip_members(path, members.items())
    with pytest.raises(ModelFileError, match=message):
        convscope.load(path)


def safetensors_with_header(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + data


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda t: {**t, "0.bias": {**t["0.bias"], "data_offsets": [4, 68]}}, "do not tile its data"),
        (lambda t: {**t, "0.bias": {**t["0.bias"], "dtype": "F16"}}, "has .* bytes of data for shape"),
        (lambda t: {**t, "0.bias": {**t["0.bias"], "shape": [-16]}}, "not a list of sizes"),
        (lambda t: {**t, "0.bias": {**t["0.bias"], "dtype": "BF16"}}, "has dtype 'BF16', not one of"),
        (
            lambda t: {**t, "0.bias": {**t["0.bias"], "extra": 1}},
            "must have exactly dtype, shape and data_offsets",
        ),
        (lambda t: {**t, "__metadata__": {"a": 1}}, "__metadata__ of weights.safetensors must map"),
    ],
)
def test_hostile_safetensors_headers(saved, make, message):
    _, path = saved
    members = dict(members_of(path))
    weights = members[WEIGHTS_NAME]
    length = int.from_bytes(weights[:8], "little")
    header = json.loads(weights[8 : 8 + length])
    members[WEIGHTS_NAME] = safetensors_with_header(make(header), weights[8 + length :])
    zip_members(path, members.items())
    with pytest.raises(ModelFileError, match=message):
        convscope.load(path)


def test_header_declaring_more_data_than_the_member_holds(saved):
    _, path = saved
    members = dict(members_of(path))
    members[WEIGHTS_NAME] = members[WEIGHTS_NAME][:-4]
    zip_members(path, members.items())
    with pytest.raises(ModelFileError, match="weights.safetensors declares .* but its header describes"):
        convscope.load(path)


def test_non_finite_and_wrong_dtype_weights(saved):
    from safetensors.numpy import save

    model, path = saved
    tensors = {k: v.copy() for k, v in model.state_dict().items()}
    tensors["3.weight"][0, 0, 0, 0] = np.inf
    rewrite(path, weights=save(tensors))
    with pytest.raises(
        ModelFileError, match="tensor '3.weight' in weights.safetensors holds NaN or infinite"
    ):
        convscope.load(path)
    tensors["3.weight"] = tensors["3.weight"].astype(np.float64)
    rewrite(path, weights=save(tensors))
    with pytest.raises(
        ModelFileError, match=r"tensor '3.weight' is float64 \(3, 3, 16, 32\), expected float32"
    ):
        convscope.load(path)


def test_atomic_save_leaves_no_temporary_file_and_keeps_the_mode(saved):
    model, path = saved
    path.chmod(0o640)
    model.save(path)
    assert [p.name for p in path.parent.iterdir()] == [path.name] and path.stat().st_mode & 0o777 == 0o640
