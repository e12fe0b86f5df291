"""Residual blocks across engines: a torch module of the same block trains to the same gradients,
to_torch/from_torch round-trip bit for bit, and `convscope export --check` agrees for both formats."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from interop_helpers import ARCHITECTURES, random_images  # noqa: E402

from convscope.cli import main  # noqa: E402
from convscope.interop import from_torch, load_torch_export, to_torch  # noqa: E402
from convscope.interop.pytorch import images_to_torch  # noqa: E402
from convscope.interop.torch_blocks import Residual as TorchResidual  # noqa: E402


@pytest.mark.usefixtures("kernel_backend")
@pytest.mark.parametrize("name", ["resnet-a-standardized", "resnet-b"])
def test_training_gradients_match_torch_autograd(name):
    """Training mode (batch statistics), cross-entropy on the logits: every block parameter's
    gradient from convscope's backward equals torch's autograd of the converted network."""
    model = ARCHITECTURES[name]()
    model.workers = 1
    x = random_images(model.input_shape, n=6)
    y = np.array([0, 1, 2, 3, 4, 0])
    net = to_torch(model)
    body = net[1:-1] if model.standardization is not None else net[:-1]  # no softmax; standardise below
    body.train()
    logits = body(images_to_torch(model.standardize(x)))
    torch.nn.functional.cross_entropy(logits, torch.from_numpy(y)).backward()
    loss, ours = model.loss_and_gradients(model.standardize(x), y)
    np.testing.assert_allclose(ours, logits.detach().numpy(), rtol=1e-4, atol=1e-5)
    theirs = dict(body.named_parameters())
    offset = 1 if model.standardization is not None else 0
    checked = 0
    for key, grad in model.gradients().items():
        index, _, rest = key.partition(".")
        if not rest.startswith(("body.", "shortcut.")):
            continue  # after the blocks the torch indices shift again (GlobalAvgPool2D is two modules)
        torch_grad = theirs[f"{int(index) + offset}.{rest}"].grad.numpy()  # slices keep torch's names
        if grad.ndim == 4:
            torch_grad = torch_grad.transpose(2, 3, 1, 0)
        np.testing.assert_allclose(grad, torch_grad, rtol=1e-3, atol=1e-5, err_msg=key)
        checked += 1
    assert checked >= 15


@pytest.mark.parametrize("name", ["resnet-a-standardized", "resnet-b"])
def test_to_torch_from_torch_round_trip_is_bit_identical(name):
    model = ARCHITECTURES[name]()
    net = to_torch(model)
    blocks = [module for module in net if isinstance(module, TorchResidual)]
    assert len(blocks) == 3
    state = net.state_dict()
    assert ("shortcut.0.weight" in "".join(state)) == (name == "resnet-b")
    back = from_torch(net, model.input_shape)
    assert set(back.state_dict()) == set(model.state_dict())
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[key], value, err_msg=key)
    x = random_images(model.input_shape)
    np.testing.assert_array_equal(back(x), model(x))


@pytest.mark.parametrize("name", ["resnet-a-standardized", "resnet-b"])
def test_export_check_agrees_for_torch_and_onnx(name, tmp_path, capsys):
    import onnx

    model = ARCHITECTURES[name]()
    path = tmp_path / "r.convscope"
    model.save(path)
    assert main(["export", str(path), "--format", "torch", "--out", str(tmp_path / "t"), "--check"]) == 0
    printed = capsys.readouterr().out
    assert "parity ok" in printed and "residual_1 (Residual)" in printed
    source = (tmp_path / "t" / "model.py").read_text()
    assert "class Residual(nn.Module)" in source and "import convscope" not in source
    net = load_torch_export(tmp_path / "t")
    x = random_images(model.input_shape, n=3)
    with torch.no_grad():
        np.testing.assert_allclose(net(images_to_torch(x)).numpy(), model(x), rtol=0, atol=1e-6)
    back = from_torch(net, model.input_shape)  # the exported file's own classes are read back too
    np.testing.assert_array_equal(back(x), model(x))
    out = tmp_path / "r.onnx"
    assert main(["export", str(path), "--format", "onnx", "--out", str(out), "--check"]) == 0
    assert "parity ok" in capsys.readouterr().out
    ops = {node.op_type for node in onnx.load(str(out)).graph.node}
    assert {"Add", "Relu", "Conv", "BatchNormalization"} <= ops
    assert ("Slice" in ops and "Pad" in ops) == (name == "resnet-a-standardized")
