"""The round trips on real data: a seed CNN trained briefly on Fashion-MNIST, then converted to
torch, back to convscope and to ONNX, must give the same logits and the same predicted class for
every one of the 10,000 test images."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnxruntime = pytest.importorskip("onnxruntime")

from interop_helpers import assert_logits_close  # noqa: E402

from convscope import data  # noqa: E402
from convscope.cli import main  # noqa: E402
from convscope.interop import from_torch, to_onnx, to_torch  # noqa: E402
from convscope.interop.pytorch import images_to_torch  # noqa: E402
from convscope.models import seed_cnn  # noqa: E402
from convscope.optim import Adam  # noqa: E402

TRAIN_IMAGES = 6400  # 200 steps of 32: about 75% test accuracy, so the classes are varied


@pytest.fixture(scope="module")
def trained(shared_data):
    folder = shared_data / "fashion-mnist"
    train = data.load("fashion-mnist", folder, split="train")
    test = data.load("fashion-mnist", folder, split="test")
    model = seed_cnn((28, 28, 1), 10, seed=0, class_names=train.class_names)
    model.compile(Adam(1e-3))
    model.fit(train.images[:TRAIN_IMAGES], train.labels[:TRAIN_IMAGES], epochs=1, batch_size=32, verbose=0)
    return model, test, model._batched_logits(test.images, 1000)


@pytest.mark.slow
def test_trained_model_is_not_trivial(trained):
    model, test, logits = trained
    predicted = logits.argmax(axis=1)
    assert (predicted == test.labels).mean() > 0.6
    assert len(np.unique(predicted)) == 10


@pytest.mark.slow
def test_torch_and_back_agree_on_every_test_image(trained):
    model, test, logits = trained
    net = to_torch(model).eval()
    with torch.no_grad():
        torch_logits = np.concatenate(
            [
                net[:-1](images_to_torch(test.images[i : i + 2000])).numpy()
                for i in range(0, len(test.labels), 2000)
            ]
        )
    assert_logits_close(torch_logits, logits, "torch logits")
    np.testing.assert_array_equal(torch_logits.argmax(axis=1), logits.argmax(axis=1))
    back = from_torch(net, model.input_shape, class_names=model.class_names)
    back_logits = back._batched_logits(test.images, 1000)
    np.testing.assert_array_equal(back_logits, logits)  # the same weights, exactly
    assert back.class_names == model.class_names


@pytest.mark.slow
def test_onnx_agrees_on_every_test_image(trained):
    model, test, logits = trained
    session = onnxruntime.InferenceSession(
        to_onnx(model).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    onnx_logits = session.run(["logits"], {"images": test.images})[0]
    assert_logits_close(onnx_logits, logits, "onnx logits")
    np.testing.assert_array_equal(onnx_logits.argmax(axis=1), logits.argmax(axis=1))


@pytest.mark.slow
def test_export_check_on_the_trained_model(trained, tmp_path, capsys):
    path = tmp_path / "fm.convscope"
    trained[0].save(path)
    assert (
        main(["export", str(path), "--out", str(tmp_path / "fm.onnx"), "--check", "--check-batch", "16"]) == 0
    )
    out = capsys.readouterr().out
    assert "6 flatten (Flatten)" in out and "(c,h,w) -> (h,w,c) order" in out
    assert "logits" in out and "16/16" in out and "parity ok" in out
