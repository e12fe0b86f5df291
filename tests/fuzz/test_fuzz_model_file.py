"""Fuzz the model-file and checkpoint loaders: mutated zips, mutated config.json and safetensors headers,
odd members. Only ModelFileError (CheckpointError is one) may come out, quickly, with no big allocation."""

import io
import json
import struct
import warnings
import zipfile

import numpy as np
import pytest
from fuzz_helpers import fuzz_settings, mutated, run_case, secondary_settings
from hypothesis import given
from hypothesis import strategies as st

from convscope import Adam, Conv2D, Dense, Flatten, MaxPool2D, ModelFileError, ReLU, Sequential, load_model
from convscope.checkpoint import CheckpointError, data_checksum

SETTINGS = {
    "epochs": 1,
    "batch_size": 4,
    "shuffle": True,
    "num_train": 8,
    "keep_best": None,
    "label_smoothing": 0.0,
    "seed": 0,
    "swa_epochs": 1,
    "swa_lr": 0.01,
}
X = np.random.default_rng(0).random((8, 4, 4, 1), dtype=np.float32)
Y = np.arange(8) % 3


def tiny_model():
    return Sequential(
        [Conv2D(2, 3), ReLU(), MaxPool2D(2), Flatten(), Dense(3)], input_shape=(4, 4, 1), seed=0
    )


def seed_files(folder):
    """(model file bytes, checkpoint bytes) of a tiny model; the checkpoint holds averaged weights too."""
    model = tiny_model().compile(Adam(1e-2))
    model.save(folder / "seed.convscope")
    checkpoint = folder / "seed-ck.convscope"
    model.fit(X, Y, epochs=1, batch_size=4, verbose=0, checkpoint=checkpoint, swa_epochs=1, swa_lr=0.01)
    return (folder / "seed.convscope").read_bytes(), (folder / "seed-ck.convscope").read_bytes()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz-model")


@pytest.fixture(scope="module")
def seeds(folder):
    return seed_files(folder)


def members_of(data: bytes) -> dict:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def zip_of(members: list, compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", compression) as archive:
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name": wanted here
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.sampled_from([0, 1, -1, 3, 2**31, 10**9, 2**64, 0.5, 1e308, -0.0])
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=6,
)


def paths(value, prefix=()):
    """Every path to a node of a parsed JSON value."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from paths(child, (*prefix, index))


@st.composite
def mutated_json(draw, raw: bytes) -> bytes:
    """A JSON document with 1-3 nodes replaced, deleted or given a new key; sometimes as raw bytes."""
    value = json.loads(raw)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(paths(value))))
        if not path:
            value = draw(json_values)
            continue
        parent = value
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(json_values)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(json_values)
        else:
            parent.append(draw(json_values))
        if not isinstance(value, (dict, list)):
            break
    text = json.dumps(value).encode()
    return draw(st.sampled_from([text, text[: len(text) // 2], text.replace(b"1", b"NaN", 1)]))


@st.composite
def mutated_safetensors(draw, data: bytes) -> bytes:
    """A safetensors file with its JSON header mutated (and its length prefix fixed up, or not)."""
    length = int.from_bytes(data[:8], "little")
    header = draw(mutated_json(data[8 : 8 + length]))
    prefix = struct.pack("<Q", len(header)) if draw(st.booleans()) else data[:8]
    return prefix + header + data[8 + length :]


@st.composite
def structural(draw, seed: bytes) -> bytes:
    """The seed's members with one of them mutated at the JSON / safetensors-header level, or (a third of
    the time) members dropped, doubled, added or recompressed."""
    members = list(members_of(seed).items())
    if draw(st.integers(0, 2)):
        index = draw(st.integers(0, len(members) - 1))
        name, data = members[index]
        members[index] = (
            name,
            draw(mutated_json(data) if name.endswith(".json") else mutated_safetensors(data)),
        )
        return zip_of(members)
    out = []
    for name, data in members:
        choice = draw(st.sampled_from(["keep", "keep", "keep", "bytes", "drop", "double"]))
        data = draw(mutated(data)) if choice == "bytes" else data
        out += [(name, data)] * {"drop": 0, "double": 2}.get(choice, 1)
    if draw(st.booleans()):
        name = draw(st.sampled_from(["extra.bin", "config.json", "../evil", "dir/"]))
        out.append((name, draw(st.binary(max_size=8))))
    compression = draw(st.sampled_from([zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED, zipfile.ZIP_BZIP2]))
    return zip_of(out, compression)


def write_case(folder, data: bytes):
    path = folder / "case.convscope"
    path.write_bytes(data)
    return path


@fuzz_settings
@given(data=st.data())
def test_load_model(folder, seeds, data):
    model_bytes, checkpoint_bytes = seeds
    seed = data.draw(st.sampled_from([model_bytes, checkpoint_bytes]))
    case = data.draw(
        st.one_of(
            st.binary(max_size=256),
            st.binary(max_size=256).map(lambda b: b"PK\x03\x04" + b),
            mutated(seed, max_ops=3),
            structural(seed),
            structural(seed),
        )
    )
    path = write_case(folder, case)
    model = run_case("model file", lambda: load_model(path), (ModelFileError,))
    if model is not None:
        assert all(np.isfinite(v).all() for v in model.state_dict().values())
        assert model.predict(X[:2]).shape == (2,)


@secondary_settings
@given(data=st.data())
def test_resume_checkpoint(folder, seeds, data):
    from convscope.checkpoint import load_checkpoint

    seed = seeds[1]
    case = data.draw(
        st.one_of(mutated(seed, max_ops=3), structural(seed), structural(seed), structural(seed))
    )
    path = write_case(folder, case)
    settings = dict(SETTINGS, train_checksum=data_checksum(X, Y))
    model = tiny_model()
    run_case("checkpoint", lambda: load_checkpoint(path, model, settings), (CheckpointError,))
