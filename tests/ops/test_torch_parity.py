"""The ops, the seed CNN, small_vgg and the optimisers against PyTorch (CPU, float32)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from torch_helpers import (  # noqa: E402  (after the importorskip)
    conv_weight_from_torch,
    conv_weight_to_torch,
    images_from_torch,
    images_to_torch,
    seed_cnn_state_from_torch,
    to_torch_seed_cnn,
)

from convscope import ops  # noqa: E402
from convscope.interop.pytorch import to_torch  # noqa: E402
from convscope.losses import softmax_cross_entropy_backward, softmax_cross_entropy_forward  # noqa: E402
from convscope.models import seed_cnn, small_vgg  # noqa: E402
from convscope.optim import SGD, Adam  # noqa: E402

ATOL = 1e-5
RTOL = 1e-5


def assert_close(actual, expected, what=""):
    """Within 1e-5, absolute tolerance scaled by the largest expected value (float32 sums of many terms)."""
    actual = np.asarray(actual)
    expected = expected.detach().numpy() if isinstance(expected, torch.Tensor) else np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL * scale, err_msg=what)


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)


# ---------------------------------------------------------------- conv2d

CONV_CASES = {
    # name: (N, H, W, C_in, C_out, kernel, stride, padding)
    "3x3-same": (2, 8, 8, 4, 5, 3, 1, "same"),
    "3x3-valid": (2, 8, 7, 4, 5, 3, 1, "valid"),
    "3x3-pad1-c_in3": (3, 9, 9, 3, 6, 3, 1, 1),
    "3x3-stride2-pad1": (2, 9, 8, 3, 4, 3, 2, 1),
    "3x3-stride2-valid": (2, 10, 9, 2, 4, 3, 2, "valid"),
    "5x5-pad2": (2, 7, 7, 2, 3, 5, 1, 2),
    "2x2-same": (2, 6, 5, 2, 3, 2, 1, "same"),
    "3x5-same": (1, 7, 9, 2, 3, (3, 5), 1, "same"),
    "1x1": (2, 5, 5, 6, 3, 1, 1, "valid"),
}


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize("case", list(CONV_CASES.values()), ids=list(CONV_CASES))
def test_conv2d_matches_torch(case):
    n, h, w_, c_in, c_out, kernel, stride, padding = case
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    rng = np.random.default_rng(0)
    bound = 1.0 / np.sqrt(kh * kw * c_in)
    x = rng.uniform(-1, 1, (n, h, w_, c_in)).astype(np.float32)
    w = rng.uniform(-bound, bound, (kh, kw, c_in, c_out)).astype(np.float32)
    b = rng.uniform(-bound, bound, c_out).astype(np.float32)

    y, cache = ops.conv2d_forward(x, w, b, stride, padding)
    assert y.dtype == np.float32
    dy = rng.uniform(-1, 1, y.shape).astype(np.float32)
    dx, dw, db = ops.conv2d_backward(dy, cache)

    xt = images_to_torch(x).requires_grad_()
    wt = conv_weight_to_torch(w).requires_grad_()
    bt = torch.from_numpy(b).requires_grad_()
    yt = F.conv2d(xt, wt, bt, stride=stride, padding=padding)
    (yt * images_to_torch(dy)).sum().backward()

    assert_close(y, images_from_torch(yt), "y")
    assert_close(dx, images_from_torch(xt.grad), "dx")
    assert_close(dw, conv_weight_from_torch(wt.grad), "dw")
    assert_close(db, bt.grad, "db")


# name: (N, H, W, C_in, C_out, kernel, stride, padding, dilation, groups)
CONV_OPTION_CASES = {
    "dilation2-same": (2, 9, 9, 3, 4, 3, 1, "same", 2, 1),
    "dilation-1x3-pad": (2, 8, 11, 2, 3, 3, 1, (1, 3), (1, 3), 1),
    "dilation-even-same": (1, 7, 8, 2, 3, (2, 2), 1, "same", (1, 2), 1),
    "stride-2x1-3x5": (2, 9, 10, 3, 4, (3, 5), (2, 1), (1, 2), 1, 1),
    "stride-1x3-one-channel": (2, 8, 13, 1, 4, 3, (1, 3), 1, 1, 1),
    "asymmetric-padding": (2, 7, 6, 3, 4, 3, 1, ((0, 2), (1, 0)), 1, 1),
    "asymmetric-stride2-dilation2": (1, 10, 9, 2, 3, 3, 2, ((2, 1), (0, 3)), 2, 1),
    "groups2": (2, 8, 7, 4, 6, 3, 1, 1, 1, 2),
    "depthwise": (2, 8, 8, 6, 6, 3, 1, "same", 1, 6),
    "depthwise-multiplier3-stride2": (2, 9, 8, 4, 12, 3, 2, 1, 1, 4),
    "groups-dilation-rect-stride-asym": (1, 11, 10, 6, 9, (3, 2), (2, 1), ((1, 0), (2, 2)), (2, 1), 3),
}


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize("case", list(CONV_OPTION_CASES.values()), ids=list(CONV_OPTION_CASES))
def test_conv2d_options_match_torch(case):
    """Dilation, groups (depthwise with a channel multiplier), rectangular strides and asymmetric
    padding (torch: F.pad, then an unpadded conv) -- y, dx, dw, db."""
    n, h, w_, c_in, c_out, kernel, stride, padding, dilation, groups = case
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    rng = np.random.default_rng(8)
    bound = 1.0 / np.sqrt(kh * kw * c_in // groups)
    x = rng.uniform(-1, 1, (n, h, w_, c_in)).astype(np.float32)
    w = rng.uniform(-bound, bound, (kh, kw, c_in // groups, c_out)).astype(np.float32)
    b = rng.uniform(-bound, bound, c_out).astype(np.float32)

    y, cache = ops.conv2d_forward(x, w, b, stride, padding, dilation, groups)
    assert y.dtype == np.float32
    dy = rng.uniform(-1, 1, y.shape).astype(np.float32)
    dx, dw, db = ops.conv2d_backward(dy, cache)

    xt = images_to_torch(x).requires_grad_()
    wt = conv_weight_to_torch(w).requires_grad_()
    bt = torch.from_numpy(b).requires_grad_()
    if isinstance(padding, tuple) and isinstance(padding[0], tuple):
        (top, bottom), (left, right) = padding
        yt = F.conv2d(F.pad(xt, (left, right, top, bottom)), wt, bt, stride, 0, dilation, groups)
    else:
        yt = F.conv2d(xt, wt, bt, stride, padding, dilation, groups)
    (yt * images_to_torch(dy)).sum().backward()

    assert_close(y, images_from_torch(yt), "y")
    assert_close(dx, images_from_torch(xt.grad), "dx")
    assert_close(dw, conv_weight_from_torch(wt.grad), "dw")
    assert_close(db, bt.grad, "db")


# ---------------------------------------------------------------- max pooling

POOL_CASES = {
    # name: (N, H, W, C, kernel, stride)
    "2x2": (2, 8, 8, 3, 2, 2),
    "2x2-odd": (2, 9, 7, 3, 2, 2),
    "3x3-stride2": (2, 9, 8, 3, 3, 2),
    "3x3-stride3": (2, 10, 8, 2, 3, 3),
    "2x2-stride1": (1, 6, 6, 2, 2, 1),
}
VALUES = {
    "continuous": lambda rng, shape: rng.standard_normal(shape),
    "ties-1-decimal": lambda rng, shape: np.round(rng.uniform(0, 1, shape), 1),
    "ties-ints": lambda rng, shape: rng.integers(0, 3, shape),
    "ties-flat": lambda rng, shape: np.where(rng.random(shape) < 0.9, 0.0, 1.0),
}


@pytest.mark.parametrize("values", list(VALUES))
@pytest.mark.parametrize("case", list(POOL_CASES.values()), ids=list(POOL_CASES))
def test_maxpool2d_matches_torch(case, values):
    n, h, w, c, k, stride = case
    rng = np.random.default_rng(1)
    x = VALUES[values](rng, (n, h, w, c)).astype(np.float32)
    y, cache = ops.maxpool2d_forward(x, (k, k), stride)
    dy = rng.uniform(-1, 1, y.shape).astype(np.float32)
    dx = ops.maxpool2d_backward(dy, cache)

    xt = images_to_torch(x).requires_grad_()
    yt = F.max_pool2d(xt, k, stride)
    (yt * images_to_torch(dy)).sum().backward()

    # max pooling does no arithmetic on the forward pass, so the answers are exact; ties included,
    # both send each window's gradient to its first maximum in row-major order
    np.testing.assert_array_equal(y, images_from_torch(yt))
    np.testing.assert_allclose(dx, images_from_torch(xt.grad), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(dx != 0, images_from_torch(xt.grad) != 0)


# name: (N, H, W, C, kernel, stride, padding, ceil_mode)
POOL_OPTION_CASES = {
    "3x3-s2-pad1": (2, 9, 8, 3, 3, 2, 1, False),
    "2x2-ceil-odd": (2, 9, 7, 3, 2, 2, 0, True),
    "3x3-s2-pad1-ceil": (2, 8, 9, 2, 3, 2, 1, True),
    "2x2-s2-pad1-ceil-drops-last": (1, 5, 5, 2, 2, 2, 1, True),  # a window starting in padding: dropped
    "2x3-s-2x1-pad-1x1-ceil": (2, 7, 8, 2, (2, 3), (2, 1), (1, 1), True),
    "3x2-s-1x2-pad-1x0": (1, 6, 9, 3, (3, 2), (1, 2), (1, 0), False),
    "5x5-s3-pad2-ceil": (1, 11, 12, 2, 5, 3, 2, True),
}


@pytest.mark.parametrize("values", list(VALUES))
@pytest.mark.parametrize("case", list(POOL_OPTION_CASES.values()), ids=list(POOL_OPTION_CASES))
def test_maxpool2d_padding_and_ceil_mode_match_torch(case, values):
    n, h, w, c, k, stride, padding, ceil_mode = case
    rng = np.random.default_rng(9)
    x = (VALUES[values](rng, (n, h, w, c)) - 0.5).astype(np.float32)  # negative values beside the padding
    y, cache = ops.maxpool2d_forward(x, k, stride, padding, ceil_mode)
    dy = rng.uniform(-1, 1, y.shape).astype(np.float32)
    dx = ops.maxpool2d_backward(dy, cache)

    xt = images_to_torch(x).requires_grad_()
    yt = F.max_pool2d(xt, k, stride, padding, ceil_mode=ceil_mode)
    (yt * images_to_torch(dy)).sum().backward()

    np.testing.assert_array_equal(y, images_from_torch(yt))
    np.testing.assert_allclose(dx, images_from_torch(xt.grad), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(dx != 0, images_from_torch(xt.grad) != 0)


@pytest.mark.parametrize("count_include_pad", [True, False], ids=["count-pad", "skip-pad"])
@pytest.mark.parametrize(
    "case",
    [(2, 8, 8, 3, 2, 2, 0, False), (2, 9, 7, 2, 3, 1, 0, False), *POOL_OPTION_CASES.values()],
    ids=["2x2", "3x3-s1", *POOL_OPTION_CASES],
)
def test_avgpool2d_matches_torch(case, count_include_pad):
    n, h, w, c, k, stride, padding, ceil_mode = case
    rng = np.random.default_rng(10)
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    y, cache = ops.avgpool2d_forward(x, k, stride, padding, ceil_mode, count_include_pad)
    assert y.dtype == np.float32
    dy = rng.uniform(-1, 1, y.shape).astype(np.float32)
    dx = ops.avgpool2d_backward(dy, cache)
    assert dx.dtype == np.float32

    xt = images_to_torch(x).requires_grad_()
    yt = F.avg_pool2d(xt, k, stride, padding, ceil_mode=ceil_mode, count_include_pad=count_include_pad)
    (yt * images_to_torch(dy)).sum().backward()

    assert_close(y, images_from_torch(yt), "y")
    assert_close(dx, images_from_torch(xt.grad), "dx")


# ---------------------------------------------------------------- dense and the loss


def test_dense_matches_torch():
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (6, 50)).astype(np.float32)
    w = rng.uniform(-0.15, 0.15, (50, 7)).astype(np.float32)
    b = rng.uniform(-0.15, 0.15, 7).astype(np.float32)
    y, cache = ops.dense_forward(x, w, b)
    dy = rng.uniform(-1, 1, y.shape).astype(np.float32)
    dx, dw, db = ops.dense_backward(dy, cache)

    xt, wt, bt = (torch.from_numpy(a.copy()).requires_grad_() for a in (x, w.T, b))
    yt = F.linear(xt, wt, bt)
    (yt * torch.from_numpy(dy)).sum().backward()

    assert_close(y, yt, "y")
    assert_close(dx, xt.grad, "dx")
    assert_close(dw, wt.grad.T, "dw")
    assert_close(db, bt.grad, "db")


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("scale", [1.0, 30.0], ids=["moderate", "large-logits"])
def test_softmax_cross_entropy_matches_torch(scale, smoothing):
    rng = np.random.default_rng(3)
    logits = (rng.standard_normal((8, 10)) * scale).astype(np.float32)
    labels = rng.integers(0, 10, 8)
    loss, cache = softmax_cross_entropy_forward(logits, labels, label_smoothing=smoothing)
    dlogits = softmax_cross_entropy_backward(cache)
    assert dlogits.dtype == np.float32

    lt = torch.from_numpy(logits).requires_grad_()
    loss_t = F.cross_entropy(lt, torch.from_numpy(labels), label_smoothing=smoothing)
    loss_t.backward()

    assert_close(loss, loss_t, "loss")
    assert_close(dlogits, lt.grad, "dlogits")


# ---------------------------------------------------------------- the seed CNN, end to end


def batch(seed, n=8):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, n)
    return x, y


def torch_step(net, opt, x, y):
    opt.zero_grad()
    loss = F.cross_entropy(net(images_to_torch(x)), torch.from_numpy(y))
    loss.backward()
    opt.step()
    return loss.item()


def convscope_step(model, opt, x, y):
    loss, _ = model.loss_and_gradients(x, y)
    opt.step(model.state_dict(), model.gradients())
    return loss


def assert_same_weights(model, net, what):
    flat_hwc = model.layers[5].output_shape
    theirs = seed_cnn_state_from_torch(net.state_dict(), flat_hwc)
    ours = model.state_dict()
    assert set(ours) == set(theirs)
    for key in ours:
        assert ours[key].dtype == np.float32
        assert_close(ours[key], theirs[key], f"{what}: {key}")


def test_seed_cnn_layout_conversion_round_trips():
    model = seed_cnn((28, 28, 1), 10, seed=0)
    net = to_torch_seed_cnn(model)
    theirs = seed_cnn_state_from_torch(net.state_dict(), model.layers[5].output_shape)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, theirs[key], err_msg=key)


@pytest.mark.usefixtures("kernel_backend")
def test_seed_cnn_logits_and_gradients_match_torch():
    model = seed_cnn((28, 28, 1), 10, seed=0)
    net = to_torch_seed_cnn(model)
    x, y = batch(10)

    logits = model.forward_logits(x)
    assert_close(logits, net(images_to_torch(x)), "logits")
    np.testing.assert_allclose(
        model.predict_proba(x), F.softmax(net(images_to_torch(x)), dim=1).detach(), atol=1e-6
    )

    loss, _ = model.loss_and_gradients(x, y)
    loss_t = F.cross_entropy(net(images_to_torch(x)), torch.from_numpy(y))
    loss_t.backward()
    assert_close(loss, loss_t, "loss")
    flat_hwc = model.layers[5].output_shape
    grads_t = seed_cnn_state_from_torch({k: p.grad for k, p in net.named_parameters()}, flat_hwc)
    for key, grad in model.gradients().items():
        assert_close(grad, grads_t[key], f"grad {key}")


@pytest.mark.usefixtures("kernel_backend")
def test_seed_cnn_sgd_momentum_steps_match_torch():
    model = seed_cnn((28, 28, 1), 10, seed=0)
    net = to_torch_seed_cnn(model)
    opt = SGD(lr=0.1, momentum=0.9)
    model.compile(opt)
    opt_t = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)

    x, y = batch(11)
    assert_close(model.forward_logits(x), net(images_to_torch(x)), "logits before")
    for step, (xb, yb) in enumerate([(x, y), batch(12)], start=1):  # the second step uses the momentum buffer
        loss = convscope_step(model, opt, xb, yb)
        loss_t = torch_step(net, opt_t, xb, yb)
        assert_close(loss, loss_t, f"loss at step {step}")
        assert_same_weights(model, net, f"after step {step}")
    assert_close(model.forward_logits(x), net(images_to_torch(x)), "logits after")


@pytest.mark.usefixtures("kernel_backend")
def test_seed_cnn_adam_steps_match_torch():
    model = seed_cnn((28, 28, 1), 10, seed=0)
    net = to_torch_seed_cnn(model)
    opt = Adam(lr=1e-3, weight_decay=1e-4)
    model.compile(opt)
    opt_t = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)

    for step, (xb, yb) in enumerate([batch(13), batch(14)], start=1):
        loss = convscope_step(model, opt, xb, yb)
        loss_t = torch_step(net, opt_t, xb, yb)
        assert_close(loss, loss_t, f"loss at step {step}")
        assert_same_weights(model, net, f"after step {step}")


# ---------------------------------------------------------------- the optimisers alone, same gradients

OPTIMIZERS = {
    "sgd": (lambda: SGD(lr=0.1), lambda ps: torch.optim.SGD(ps, lr=0.1)),
    "sgd-momentum-wd": (
        lambda: SGD(lr=0.1, momentum=0.9, weight_decay=1e-2),
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-2),
    ),
    "sgd-nesterov": (
        lambda: SGD(lr=0.05, momentum=0.8, nesterov=True),
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.8, nesterov=True),
    ),
    "adam": (
        lambda: Adam(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-4),
        lambda ps: torch.optim.Adam(ps, lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-4),
    ),
}


@pytest.mark.usefixtures("kernel_backend")
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_update_rules_match_torch(name):
    make_ours, make_theirs = OPTIMIZERS[name]
    rng = np.random.default_rng(4)
    params = {
        "a": rng.standard_normal((3, 4)).astype(np.float32),
        "b": rng.standard_normal(5).astype(np.float32),
    }
    tparams = {k: torch.from_numpy(v.copy()).requires_grad_() for k, v in params.items()}
    ours, theirs = make_ours(), make_theirs(list(tparams.values()))
    for _ in range(3):
        grads = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
        ours.step(params, grads)
        for k, t in tparams.items():
            t.grad = torch.from_numpy(grads[k].copy())
        theirs.step()
        for k in params:
            assert params[k].dtype == np.float32
            assert_close(params[k], tparams[k], f"{name}: {k}")


# ---------------------------------------------------------------- batch normalisation, global average pooling


@pytest.mark.usefixtures("kernel_backend")
@pytest.mark.parametrize("shape", [(4, 5, 6, 3), (2, 1, 1, 8)], ids=["4x5x6x3", "1x1-spatial"])
def test_batchnorm2d_training_step_matches_torch(shape):
    """y, dx, dweight, dbias in training mode, then the running statistics after two updates."""
    rng = np.random.default_rng(5)
    c = shape[3]
    weight = rng.uniform(0.5, 1.5, c).astype(np.float32)
    bias = rng.uniform(-0.5, 0.5, c).astype(np.float32)
    running_mean, running_var = np.zeros(c, np.float32), np.ones(c, np.float32)
    running_mean_t, running_var_t = torch.zeros(c), torch.ones(c)
    for step in range(2):
        x = (rng.standard_normal(shape) * 3.0 + 2.0).astype(np.float32)
        y, cache = ops.batchnorm2d_forward(x, weight, bias, eps=1e-5)
        assert y.dtype == np.float32
        dy = rng.uniform(-1, 1, y.shape).astype(np.float32)
        dx, dweight, dbias = ops.batchnorm2d_backward(dy, cache)
        ops.update_running_statistics(running_mean, running_var, cache.statistics, momentum=0.1)

        xt = images_to_torch(x).requires_grad_()
        wt, bt = (torch.from_numpy(a.copy()).requires_grad_() for a in (weight, bias))
        yt = F.batch_norm(xt, running_mean_t, running_var_t, wt, bt, training=True, momentum=0.1, eps=1e-5)
        (yt * images_to_torch(dy)).sum().backward()

        assert_close(y, images_from_torch(yt), f"y at step {step}")
        assert_close(dx, images_from_torch(xt.grad), f"dx at step {step}")
        assert_close(dweight, wt.grad, f"dweight at step {step}")
        assert_close(dbias, bt.grad, f"dbias at step {step}")
        assert_close(running_mean, running_mean_t, f"running_mean after step {step}")
        assert_close(running_var, running_var_t, f"running_var after step {step}")  # unbiased


@pytest.mark.usefixtures("kernel_backend")
def test_batchnorm2d_inference_matches_torch():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 4, 5, 6)).astype(np.float32)
    mean, bias = (rng.uniform(-1, 1, 6).astype(np.float32) for _ in range(2))
    var, weight = (rng.uniform(0.2, 2, 6).astype(np.float32) for _ in range(2))
    y = ops.batchnorm2d(x, mean, var, weight, bias, eps=1e-3)
    assert y.dtype == np.float32
    yt = F.batch_norm(
        images_to_torch(x),
        *(torch.from_numpy(a) for a in (mean, var, weight, bias)),
        training=False,
        eps=1e-3,
    )
    assert_close(y, images_from_torch(yt), "y")


def test_global_avgpool2d_matches_torch():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 7, 5, 4)).astype(np.float32)
    y, cache = ops.global_avgpool2d_forward(x)
    dy = rng.uniform(-1, 1, y.shape).astype(np.float32)
    dx = ops.global_avgpool2d_backward(dy, cache)
    xt = images_to_torch(x).requires_grad_()
    yt = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())(xt)
    (yt * torch.from_numpy(dy)).sum().backward()
    assert y.dtype == dx.dtype == np.float32
    assert_close(y, yt, "y")
    assert_close(dx, images_from_torch(xt.grad), "dx")


def torch_small_vgg(model) -> torch.nn.Sequential:
    """small_vgg written out in torch by hand, with the model's weights and running statistics."""
    nn = torch.nn
    modules, c_in = [], model.input_shape[2]
    for width in (model.layers[0].filters * k for k in (1, 2, 4)):
        for c in (c_in, width):
            modules += [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        modules.append(nn.MaxPool2d(2))
        c_in = width
    modules += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(model.layers[-3].rate)]
    modules.append(nn.Linear(c_in, model.num_classes))
    net = nn.Sequential(*modules)
    net.load_state_dict(to_torch(model)[:-1].state_dict())
    return net


def small_vgg_state_from_torch(net) -> dict:
    """The torch small_vgg's parameters and running statistics by convscope name and layout."""
    state = {}
    for name, tensor in net.state_dict().items():
        index, kind = name.split(".")
        value = tensor.detach().numpy()
        if kind == "num_batches_tracked":
            continue
        if int(index) == len(net) - 1:  # the Linear: one index later than convscope's Dense
            state[f"{int(index) - 1}.{kind}"] = value.T if kind == "weight" else value
        else:
            state[name] = conv_weight_from_torch(tensor) if value.ndim == 4 else value
    return state


@pytest.mark.usefixtures("kernel_backend")
def test_small_vgg_sgd_steps_and_running_statistics_match_torch():
    """Two SGD steps in training mode (batch statistics; one thread, so one batch), then inference
    with the running statistics: the same losses, weights, running statistics and logits."""
    model = small_vgg((12, 12, 3), 4, seed=0, width=4, dropout=0.0)
    model.workers = 1
    net = torch_small_vgg(model)
    model.compile(SGD(lr=0.1, momentum=0.9))
    opt_t = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    rng = np.random.default_rng(8)
    for step in range(1, 3):
        x = rng.uniform(0, 1, (8, 12, 12, 3)).astype(np.float32)
        y = rng.integers(0, 4, 8)
        loss, _ = model.train_step(x, y)
        net.train()
        loss_t = torch_step(net, opt_t, x, y)
        assert_close(loss, loss_t, f"loss at step {step}")
        theirs = small_vgg_state_from_torch(net)
        assert set(theirs) == set(model.state_dict())
        for key, value in model.state_dict().items():
            assert_close(value, theirs[key], f"{key} after step {step}")
    net.eval()
    with torch.no_grad():
        assert_close(model.forward_logits(x), net(images_to_torch(x)), "inference logits")
