"""`convscope export`: the files it writes, the parity table, and its errors."""

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from interop_helpers import ARCHITECTURES, random_images  # noqa: E402

from convscope.cli import main  # noqa: E402
from convscope.interop import load_torch_export  # noqa: E402
from convscope.interop.pytorch import images_to_torch  # noqa: E402
from convscope.interop.torch_export import import_torch_export  # noqa: E402


@pytest.fixture
def saved(tmp_path):
    model = ARCHITECTURES["strided-rgb"]()
    model.class_names = ["cat", "dog", "owl", "fox", "elk", "yak", "emu"]
    path = tmp_path / "m.convscope"
    model.save(path)
    return model, path


def test_onnx_export_writes_a_checked_file_and_the_parity_table(saved, tmp_path, capsys):
    import onnx

    model, path = saved
    out = tmp_path / "m.onnx"
    assert (
        main(["export", str(path), "--format", "onnx", "--layout", "nchw", "--out", str(out), "--check"]) == 0
    )
    printed = capsys.readouterr().out
    assert f"wrote {out}: ONNX opset 13, input images NCHW ('N', 3, 13, 11)" in printed
    assert "0 conv2d (Conv2D)" in printed and "1 ReLU" in printed  # the fused ReLU is torch module 1
    assert "parity ok" in printed
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["class_names"]) == model.class_names and meta["input_layout"] == "NCHW"


def test_torch_export_writes_source_and_weights_that_load_without_convscope_objects(saved, tmp_path, capsys):
    model, path = saved
    out = tmp_path / "torch-export"
    assert main(["export", str(path), "--format", "torch", "--out", str(out)]) == 0
    assert "torch.nn.Sequential on (N, 3, 13, 11) inputs" in capsys.readouterr().out
    source = (out / "model.py").read_text()
    compile(source, "model.py", "exec")
    exported = import_torch_export(out)
    assert exported.INPUT_SHAPE == (3, 13, 11) and exported.CLASS_NAMES == model.class_names
    net = load_torch_export(out)
    assert not net.training
    x = random_images(model.input_shape)
    with torch.no_grad():
        np.testing.assert_allclose(net(images_to_torch(x)).numpy(), model(x), rtol=0, atol=1e-6)
    from safetensors.numpy import load_file

    weights = load_file(str(out / "model.safetensors"))
    assert weights["0.weight"].shape == (6, 3, 3, 3)  # torch layout (C_out, C_in, kh, kw)
    assert sorted(weights) == sorted(exported.build_model().state_dict())
    mask = os.umask(0o022)
    os.umask(mask)
    for name in ("model.py", "model.safetensors"):  # readable by others' tools, as model.py always was
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


def test_torch_export_check_runs_the_written_files(saved, tmp_path, capsys):
    _, path = saved
    assert main(["export", str(path), "--format", "torch", "--out", str(tmp_path / "t"), "--check"]) == 0
    assert "parity ok" in capsys.readouterr().out


def test_check_alone_writes_nothing(saved, tmp_path, capsys):
    _, path = saved
    assert main(["export", str(path), "--check", "--check-batch", "3", "--seed", "5"]) == 0
    assert "parity on 3 random images (seed 5)" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.convscope"]


def errors_of(argv, capsys) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_a_file_that_is_not_ours_is_refused_with_a_hint(tmp_path, capsys):
    foreign = tmp_path / "resnet.onnx"
    foreign.write_bytes(b"\x08\x07\x12\x07pytorch")
    err = errors_of(["export", str(foreign), "--out", str(tmp_path / "x.onnx")], capsys)
    assert err.startswith(f"convscope: error: {foreign}: not a convscope model file")
    assert "export reads .convscope files" in err and "from_torch" in err
    err = errors_of(["export", str(tmp_path / "missing.convscope"), "--check"], capsys)
    assert "no such model file" in err


def test_bad_option_combinations_are_refused(saved, tmp_path, capsys):
    _, path = saved
    assert "give --out PATH" in errors_of(["export", str(path)], capsys)
    err = errors_of(
        ["export", str(path), "--format", "torch", "--layout", "nhwc", "--out", str(tmp_path)], capsys
    )
    assert "--layout applies to --format onnx" in err
    err = errors_of(["export", str(path), "--format", "torch", "--out", str(path)], capsys)
    assert "--out must be a folder" in err
    assert "--check-batch must be >= 1, got 0" in errors_of(
        ["export", str(path), "--check", "--check-batch", "0"], capsys
    )


def test_exports_of_a_standardised_batchnorm_model_check_out(tmp_path, capsys):
    model = ARCHITECTURES["small-vgg-standardized"]()
    path = tmp_path / "vgg.convscope"
    model.save(path)
    assert main(["export", str(path), "--format", "torch", "--out", str(tmp_path / "t"), "--check"]) == 0
    printed = capsys.readouterr().out
    assert "- standardization" in printed and "0 BatchNorm2d" in printed and "parity ok" in printed
    assert "21 globalavgpool2d (GlobalAvgPool2D)" in printed and "23 Flatten" in printed
    source = (tmp_path / "t" / "model.py").read_text()
    assert "nn.BatchNorm2d(3, eps=0.0, momentum=0.0, affine=False),  # 0: input standardisation" in source
    assert "nn.AdaptiveAvgPool2d(1),  # 22: globalavgpool2d" in source
    assert main(["export", str(path), "--format", "onnx", "--out", str(tmp_path / "v.onnx"), "--check"]) == 0
    assert "parity ok" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize("name", ["depthwise-dilated", "grouped-avgpool"])
def test_exports_of_dilated_grouped_padded_pooled_models_check_out(name, tmp_path, capsys):
    """The written model.py spells every new setting (a ZeroPad2d for asymmetric padding) and its
    numbers, and the ONNX graph's, agree with convscope's under --check."""
    model = ARCHITECTURES[name]()
    path = tmp_path / f"{name}.convscope"
    model.save(path)
    assert main(["export", str(path), "--format", "torch", "--out", str(tmp_path / "t"), "--check"]) == 0
    assert "parity ok" in capsys.readouterr().out
    source = (tmp_path / "t" / "model.py").read_text()
    if name == "depthwise-dilated":
        assert "dilation=(2, 2)" in source and "groups=6" in source
        assert "nn.ZeroPad2d((2, 1, 0, 1)),  # 2: conv2d_1's padding (left, right, top, bottom)" in source
        assert "padding=(1, 1), ceil_mode=True" in source and "count_include_pad=False" in source
    else:
        assert "padding='same'" in source and "dilation=(1, 2)" in source and "groups=2" in source
    net = load_torch_export(tmp_path / "t")
    x = random_images(model.input_shape, n=3)
    with torch.no_grad():
        logits = net[:-1](images_to_torch(x)) if name == "grouped-avgpool" else net(images_to_torch(x))
    np.testing.assert_allclose(logits.numpy(), model.forward_logits(x), rtol=0, atol=1e-5)
    assert main(["export", str(path), "--format", "onnx", "--out", str(tmp_path / "m.onnx"), "--check"]) == 0
    assert "parity ok" in capsys.readouterr().out
