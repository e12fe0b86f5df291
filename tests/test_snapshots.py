"""Snapshots of how the first layer's kernels grew: recorded by fit, bounded, saved with the model,
identical after a resume, and a damaged member is a clear error."""

import json
import zipfile

import numpy as np
import pytest

import convscope
from convscope.archive import ModelFileError
from convscope.checkpoint import CheckpointError
from convscope.data import load
from convscope.models import seed_cnn
from convscope.snapshots import MAX_SNAPSHOTS


@pytest.fixture(scope="module")
def data():
    train = load("digits", split="train")
    return train.images[:200], train.labels[:200]  # 7 batches of 32 per epoch


def fresh():
    return seed_cnn((8, 8, 1), 10, seed=0)


def assert_same_snapshots(a, b):
    assert a.steps == b.steps and a.epochs == b.epochs and a.stride == b.stride
    assert all(np.array_equal(p, q) for p, q in zip(a.kernels, b.kernels, strict=True))
    assert all(np.array_equal(p, q) for p, q in zip(a.feature_maps, b.feature_maps, strict=True))
    assert np.array_equal(a.image, b.image)


def test_fit_records_kernels_and_feature_maps_every_epoch_or_every_n_steps(data):
    x, y = data
    model = fresh()
    initial = model.layers[0].params["weight"].copy()
    model.fit(x, y, epochs=2, batch_size=32, seed=0, verbose=0, snapshots="epoch")
    snapshots = model.snapshots
    assert snapshots.steps == [0, 7, 14] and snapshots.epochs == [0.0, 1.0, 2.0]
    assert np.array_equal(snapshots.kernels[0], initial)
    assert np.array_equal(snapshots.kernels[-1], model.layers[0].params["weight"])
    assert snapshots.feature_maps[0].shape == (8, 8, 16) and np.array_equal(snapshots.image, x[0])
    expected = model.feature_maps(x[:1])[0][0]
    np.testing.assert_allclose(snapshots.feature_maps[-1], expected, rtol=1e-6, atol=1e-6)

    stepped = fresh()
    stepped.fit(x, y, epochs=1, batch_size=32, seed=0, verbose=0, snapshots=3)
    assert stepped.snapshots.steps == [0, 3, 6]
    assert stepped.snapshots.epochs == pytest.approx([0, 3 / 7, 6 / 7])


def test_the_record_is_bounded_and_stays_evenly_spread(data):
    x, y = data
    model = fresh()
    model.fit(x[:64], y[:64], epochs=80, batch_size=32, seed=0, verbose=0, snapshots=1)  # 160 steps
    snapshots = model.snapshots
    assert 2 <= len(snapshots.steps) <= MAX_SNAPSHOTS and snapshots.stride == 4
    assert snapshots.steps == list(range(0, 161, 4))[: len(snapshots.steps)]


def test_a_resumed_run_records_the_same_snapshots(data, tmp_path):
    x, y = data
    whole = fresh()
    whole.fit(x, y, epochs=3, batch_size=32, seed=0, verbose=0, snapshots=2)
    first = fresh()
    first.fit(x, y, epochs=1, batch_size=32, seed=0, verbose=0, snapshots=2, checkpoint=tmp_path / "run.ckpt")
    resumed = fresh()
    resumed.fit(x, y, epochs=3, batch_size=32, seed=0, verbose=0, snapshots=2, resume=tmp_path / "run.ckpt")
    assert_same_snapshots(whole.snapshots, resumed.snapshots)
    with pytest.raises(CheckpointError, match="different snapshots"):
        fresh().fit(
            x, y, epochs=3, batch_size=32, seed=0, verbose=0, snapshots=3, resume=tmp_path / "run.ckpt"
        )


def test_snapshots_are_saved_with_the_model(data, tmp_path):
    x, y = data
    model = fresh()
    model.fit(x, y, epochs=1, batch_size=32, seed=0, verbose=0, snapshots="epoch")
    model.save(tmp_path / "model.convscope")
    assert_same_snapshots(convscope.load(tmp_path / "model.convscope").snapshots, model.snapshots)
    plain = fresh()
    plain.save(tmp_path / "plain.convscope")
    assert convscope.load(tmp_path / "plain.convscope").snapshots is None
    with zipfile.ZipFile(tmp_path / "plain.convscope") as archive:
        assert sorted(archive.namelist()) == ["config.json", "weights.safetensors"]


def rewrite_member(source, target, name, change):
    with zipfile.ZipFile(source) as archive:
        members = {item: archive.read(item) for item in archive.namelist()}
    members[name] = change(members[name])
    with zipfile.ZipFile(target, "w") as archive:
        for item, data in members.items():
            archive.writestr(item, data)
    return target


def _retagged(raw: bytes) -> bytes:
    record = json.loads(raw)
    record["format_version"] = 99
    return json.dumps(record).encode()


def _short_steps(raw: bytes) -> bytes:
    record = json.loads(raw)
    record["steps"], record["epochs"] = record["steps"][:1], record["epochs"][:1]
    return json.dumps(record).encode()


@pytest.mark.parametrize(
    "name, change, message",
    [
        ("snapshots.safetensors", lambda raw: raw[: len(raw) // 2], "snapshots.safetensors"),
        ("snapshots.safetensors", lambda raw: raw[:8] + b"{" * 10 + raw[18:], "snapshots.safetensors"),
        ("snapshots.json", lambda raw: raw[:-5], "snapshots.json is not valid JSON"),
        ("snapshots.json", _retagged, "snapshots.json is damaged: format version 99 is not supported"),
        ("snapshots.json", _short_steps, "snapshots.safetensors is damaged or does not fit the model"),
    ],
    ids=["truncated-tensors", "garbled-header", "truncated-json", "future-version", "count-mismatch"],
)
def test_a_damaged_snapshot_member_is_a_clear_error(data, tmp_path, name, change, message):
    x, y = data
    model = fresh()
    model.fit(x, y, epochs=1, batch_size=32, seed=0, verbose=0, snapshots="epoch")
    model.save(tmp_path / "model.convscope")
    broken = rewrite_member(tmp_path / "model.convscope", tmp_path / "broken.convscope", name, change)
    with pytest.raises(ModelFileError, match=message) as caught:
        convscope.load(broken)
    assert str(broken) in str(caught.value)


def test_snapshots_need_a_conv_layer_and_a_valid_schedule(data):
    x, y = data
    with pytest.raises(ValueError, match="'epoch' or a whole number of steps"):
        fresh().fit(x, y, epochs=1, verbose=0, snapshots=0)
    dense_only = convscope.Sequential([convscope.Flatten(), convscope.Dense(10)], input_shape=(8, 8, 1))
    with pytest.raises(ValueError, match="no conv layer"):
        dense_only.fit(x, y, epochs=1, verbose=0, snapshots="epoch")
