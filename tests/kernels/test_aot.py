"""The ahead-of-time kernel library: what it is built from, when it is used, and that its kernels
compute exactly what Numba's JIT builds of the same kernels compute."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from convscope.kernels import aot, conv
from convscope.kernels.compile import argument_type

TRAIN = (
    "import sys, json, numpy as np\n"
    "from convscope.models import seed_cnn\n"
    "from convscope.optim import SGD\n"
    "rng = np.random.default_rng(0)\n"
    "model = seed_cnn((8, 8, 1), 10, seed=1).compile(SGD(lr=0.05, momentum=0.9))\n"
    "x, y = rng.random((64, 8, 8, 1), dtype=np.float32), rng.integers(0, 10, 64)\n"
    "for _ in range(3):\n"
    "    model.train_step(x, y, rng=rng)\n"
    "logits = model.forward_logits(x[:40])\n"
    "values = [logits.ravel()] + [p.ravel() for p in model.parameters().values()]\n"
    "np.save(sys.argv[1], np.concatenate(values))\n"
    "print(json.dumps({'numba': 'numba' in sys.modules, 'llvmlite': 'llvmlite' in sys.modules}))\n"
)


def _python(code, *args, **environment):
    env = {**os.environ, **environment}
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """A library of the seed CNN's kernels for 8x8 gray images, built by the module's command."""
    folder = tmp_path_factory.mktemp("library")
    done = subprocess.run(
        [sys.executable, "-m", "convscope.kernels.aot", "--folder", str(folder), "--case", "seed:8x8x1"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return folder


def test_a_process_with_the_library_never_loads_numba_and_matches_the_jit(library, tmp_path):
    loaded = json.loads(_python(TRAIN, str(tmp_path / "aot.npy"), CONVSCOPE_KERNEL_LIBRARY=str(library)))
    assert loaded == {"numba": False, "llvmlite": False}
    jitted = json.loads(_python(TRAIN, str(tmp_path / "jit.npy"), CONVSCOPE_KERNEL_LIBRARY="none"))
    assert jitted["numba"]
    np.testing.assert_array_equal(np.load(tmp_path / "aot.npy"), np.load(tmp_path / "jit.npy"))


def test_the_manifest_names_each_kernel_with_its_source_and_argument_types(library):
    manifest = json.loads((library / aot.MANIFEST).read_text())
    assert manifest["platform"]["processor"] == aot.processor_key()
    keys = list(manifest["kernels"])
    first_conv = 'convscope.kernels.conv.direct_conv_pool[1, 16, 3, 3, 2, {"dtype": "float32"}]'
    assert any(k.startswith(first_conv) for k in keys)
    assert any(k.startswith("convscope.kernels.optim.sgd_update(float32[::1]") for k in keys)
    assert all(set(entry) == {"export", "source"} for entry in manifest["kernels"].values())


def test_an_edited_kernel_or_another_processor_is_not_taken_from_the_library(library, tmp_path):
    manifest = json.loads((library / aot.MANIFEST).read_text())
    kernel = conv.direct_conv_pool(1, 16, 3, 3, 2, np.float32)
    types = tuple(_split_types(key) for key in manifest["kernels"] if "direct_conv_pool[" in key)[0]
    assert aot.Library(library, manifest).function(kernel.origin, types) is not None
    edited = json.loads(json.dumps(manifest))
    for entry in edited["kernels"].values():
        entry["source"] = "0" * 16
    assert aot.Library(library, edited).function(kernel.origin, types) is None
    elsewhere = json.loads(json.dumps(manifest))
    elsewhere["platform"]["processor"] = "another"
    (tmp_path / aot.MANIFEST).write_text(json.dumps(elsewhere))
    (tmp_path / manifest["file"]).write_bytes(b"")
    assert aot.Library.open(tmp_path) is None
    assert aot.Library.open(tmp_path / "missing") is None


def _split_types(key: str) -> tuple:
    """The argument types at the end of a manifest key: '...(float32[:, ::1], int64)' -> tuple."""
    inside = key[key.rindex("](") + 2 : -1] if "](" in key else key[key.index("(") + 1 : -1]
    types, depth, current = [], 0, ""
    for char in inside:
        depth += char == "["
        depth -= char == "]"
        if char == "," and depth == 0:
            types.append(current.strip())
            current = ""
        else:
            current += char
    return tuple(types + [current.strip()])


@pytest.mark.parametrize(
    "value, expected",
    [
        (np.zeros((2, 3), np.float32), "float32[:, ::1]"),
        (np.zeros((4, 6), np.float64)[:, ::2], "float64[:, :]"),
        (np.zeros((2, 2, 2), np.uint8), "uint8[:, :, ::1]"),
        (np.zeros(3, bool), "boolean[::1]"),
        (3, "int64"),
        (True, "boolean"),
        (0.5, "float64"),
        (np.float32(1), "float32"),
    ],
)
def test_argument_types_are_spelt_as_numba_signatures(value, expected):
    assert argument_type(value) == expected


def test_an_unsupported_argument_is_a_clear_error():
    with pytest.raises(TypeError, match="unsupported kernel argument of type str"):
        argument_type("x")


def test_a_bad_case_is_refused_by_the_command():
    done = subprocess.run(
        [sys.executable, "-m", "convscope.kernels.aot", "--case", "resnet:8x8"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "a case is MODEL:HxWxC" in done.stderr


def test_a_closure_made_outside_a_factory_is_never_looked_up(library, monkeypatch):
    from convscope.kernels.compile import jit

    def make(scale):
        def scaled(x):
            for i in range(x.size):
                x[i] *= scale

        return jit(scaled)

    kernel = make(3.0)
    assert kernel.origin is None
    monkeypatch.setattr(aot, "_opened", [aot.Library.open(library)])
    assert aot.lookup(kernel, ("float32[::1]",)) is None
    dense = ("float32[:, ::1]", "float32[::1]", "boolean")
    assert aot.lookup(conv.bias_relu(128, np.float32), dense) is not None  # the seed CNN's hidden layer


@pytest.mark.parametrize(
    "lines, expected",
    [
        (
            ["cpu family\t: 25", "model\t\t: 17", "model name\t: AMD EPYC", "flags\t: avx2 avx512f"],
            "AMD EPYC (family 25, model 17; AVX-512)",
        ),
        (["model name\t: Some CPU", "flags\t\t: sse2 avx2"], "Some CPU (AVX2)"),
        (["Features\t: fp asimd"], None),
    ],
)
def test_the_processor_is_named_with_its_generation_and_vector_width(monkeypatch, lines, expected):
    monkeypatch.setattr(aot, "_cpuinfo_lines", lambda: lines)
    monkeypatch.setattr(aot.platform, "processor", lambda: "")
    monkeypatch.setattr(aot.platform, "machine", lambda: "aarch64")
    assert aot.processor_name() == (expected or "aarch64")
