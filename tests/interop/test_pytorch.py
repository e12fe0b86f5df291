"""convscope <-> PyTorch: to_torch, from_torch and the round trip, on every supported layer."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from interop_helpers import assert_logits_close, model_logits, random_images  # noqa: E402

from convscope import Conv2D, Flatten, Sequential, Softmax  # noqa: E402
from convscope.interop import from_torch, to_torch  # noqa: E402
from convscope.interop.pytorch import images_to_torch, torch_positions  # noqa: E402
from convscope.models import seed_cnn  # noqa: E402


def torch_logits(net, x):
    """The torch model's output before a final Softmax module, for (N, H, W, C) images."""
    body = net[:-1] if isinstance(net[-1], nn.Softmax) else net
    with torch.no_grad():
        return body.eval()(images_to_torch(x)).numpy()


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
def test_round_trip_through_torch_keeps_the_function(architecture):
    x = random_images(architecture.input_shape)
    net = to_torch(architecture)
    assert_logits_close(torch_logits(net, x), model_logits(architecture, x), "to_torch")
    back = from_torch(net, architecture.input_shape, class_names=architecture.class_names)
    assert_logits_close(model_logits(back, x), model_logits(architecture, x), "to_torch -> from_torch")
    np.testing.assert_allclose(back(x), architecture(x), rtol=0, atol=1e-6)


def test_seed_cnn_round_trip_gives_back_the_same_weights_exactly():
    model = seed_cnn((28, 28, 1), 10, seed=0)
    back = from_torch(to_torch(model), (28, 28, 1))
    assert [type(layer) for layer in back.layers] == [type(layer) for layer in model.layers]
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[key], value, err_msg=key)
    assert torch_positions(model) == list(range(len(model.layers)))


def test_fused_activations_shift_the_torch_positions():
    model = Sequential(
        [Conv2D(2, 3, padding="valid", activation="relu"), Flatten(), Softmax()],
        input_shape=(3, 3, 1),
        seed=0,
    )
    assert torch_positions(model) == [1, 2, 3]
    assert [type(m).__name__ for m in to_torch(model)] == ["Conv2d", "ReLU", "Flatten", "Softmax"]


def test_from_torch_of_a_torch_built_model_keeps_the_flatten_order():
    """A native torch model on non-square RGB images: the first Linear reads torch's (c, h, w)
    flattening, which convscope must see in (h, w, c) order."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 6, (3, 5), padding="same", bias=False),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(6 * 5 * 6, 20),
        nn.ReLU(),
        nn.Linear(20, 4),
        nn.Softmax(dim=1),
    ).eval()
    model = from_torch(net, (10, 12, 3), class_names=list("abcd"))
    x = random_images((10, 12, 3), n=5, seed=1)
    with torch.no_grad():
        expected = net(images_to_torch(x)).numpy()
    np.testing.assert_allclose(model(x), expected, rtol=0, atol=1e-6)
    assert_logits_close(model.forward_logits(x), torch_logits(net, x))
    assert model.layers[3].padding_arg == "same" and not model.layers[3].use_bias
    assert sorted(model.state_dict()) == sorted(net.state_dict())
    assert model.class_names == list("abcd")


def test_from_torch_of_torch_built_dilated_grouped_padded_pooled_layers():
    """Dilation, a depthwise conv with a channel multiplier, rectangular strides, a ZeroPad2d before a
    conv (one Conv2D with the summed padding), max and average pooling with padding and ceil_mode."""
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(3, 6, (3, 2), stride=(1, 2), padding=(2, 1), dilation=(2, 1)),
        nn.ReLU(),
        nn.ZeroPad2d((1, 0, 2, 1)),
        nn.Conv2d(6, 12, 3, padding=1, groups=6, bias=False),
        nn.MaxPool2d(3, stride=(2, 1), padding=1, ceil_mode=True),
        nn.AvgPool2d((2, 3), stride=2, padding=(1, 1), ceil_mode=True, count_include_pad=False),
        nn.AvgPool2d(2, stride=1, padding=1),
        nn.Flatten(),
        nn.Linear(12 * 6 * 5, 4),
    ).eval()
    model = from_torch(net, (11, 9, 3))
    conv, depthwise, maxpool, avgpool = (model.layers[i] for i in (0, 2, 3, 4))
    assert (conv.stride, conv.dilation, conv.padding) == ((1, 2), (2, 1), ((2, 2), (1, 1)))
    assert (depthwise.groups, depthwise.padding, depthwise.params["weight"].shape) == (
        6,
        ((3, 2), (2, 1)),
        (3, 3, 1, 12),
    )
    assert (maxpool.stride, maxpool.padding, maxpool.ceil_mode) == ((2, 1), ((1, 1), (1, 1)), True)
    assert (avgpool.pool_size, avgpool.count_include_pad, avgpool.ceil_mode) == ((2, 3), False, True)
    assert sorted(model.state_dict()) == ["0.bias", "0.weight", "2.weight", "7.bias", "7.weight"]
    x = random_images((11, 9, 3), n=4, seed=2)
    assert_logits_close(model.forward_logits(x), torch_logits(net, x))
    again = to_torch(model)
    assert [type(m).__name__ for m in again][1:4] == ["ReLU", "ZeroPad2d", "Conv2d"]
    assert_logits_close(torch_logits(again, x), torch_logits(net, x), "from_torch -> to_torch")


UNSUPPORTED = {
    "batchnorm-not-affine-inside": (
        lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, affine=False)),
        "layer 1 (BatchNorm2d): affine=False is supported only as the first module",
    ),
    "batchnorm-no-running-stats": (
        lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, track_running_stats=False)),
        "layer 1 (BatchNorm2d): track_running_stats=False is not supported",
    ),
    "batchnorm-cumulative": (
        lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, momentum=None)),
        "layer 1 (BatchNorm2d): momentum=None (a cumulative average) is not supported",
    ),
    "batchnorm-no-bias": (
        lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, bias=False)),
        "layer 1 (BatchNorm2d): bias=False is not supported",
    ),
    "batchnorm-1d": (
        lambda: nn.Sequential(nn.Flatten(), nn.BatchNorm1d(64)),
        "layer 1 (BatchNorm1d): not supported",
    ),
    "adaptive-pool-size": (
        lambda: nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten()),
        "layer 0 (AdaptiveAvgPool2d): output_size=2 is not supported",
    ),
    "adaptive-pool-without-flatten": (
        lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1)),
        "layer 1 (AdaptiveAvgPool2d): AdaptiveAvgPool2d(1) is supported when an nn.Flatten() follows it",
    ),
    "padding-mode": (
        lambda: nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect")),
        "layer 0 (Conv2d): padding_mode='reflect'",
    ),
    "pool-dilation": (
        lambda: nn.Sequential(nn.MaxPool2d(2, dilation=2)),
        "layer 0 (MaxPool2d): dilation=2 is not supported",
    ),
    "pool-indices": (
        lambda: nn.Sequential(nn.MaxPool2d(2, return_indices=True)),
        "layer 0 (MaxPool2d): return_indices=True is not supported",
    ),
    "avgpool-divisor": (
        lambda: nn.Sequential(nn.AvgPool2d(2, divisor_override=3)),
        "layer 0 (AvgPool2d): divisor_override=3 is not supported",
    ),
    "pool-padding-over-half": (
        lambda: nn.Sequential(nn.MaxPool2d(3, padding=2)),
        "layer 0 (MaxPool2d): MaxPool2D: padding must be at most half the window",
    ),
    "zero-pad-alone": (
        lambda: nn.Sequential(nn.ZeroPad2d(1), nn.ReLU()),
        "layer 0 (ZeroPad2d): ZeroPad2d is supported right before an nn.Conv2d",
    ),
    "zero-pad-crops": (
        lambda: nn.Sequential(nn.ZeroPad2d((0, -1, 0, 0)), nn.Conv2d(1, 2, 3)),
        "layer 0 (ZeroPad2d): negative padding (0, -1, 0, 0) (cropping) is not supported",
    ),
    "other-layer": (
        lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sigmoid()),
        "layer 1 (Sigmoid): not supported; convscope has Conv2d, ReLU",
    ),
    "flatten-dims": (lambda: nn.Sequential(nn.Flatten(start_dim=2)), "layer 0 (Flatten): start_dim=2"),
    "softmax-dim": (lambda: nn.Sequential(nn.Flatten(), nn.Softmax(dim=0)), "layer 1 (Softmax): dim=0"),
    "nested": (lambda: nn.Sequential(nn.Sequential(nn.ReLU())), "layer 0 (Sequential): not supported"),
    "not-sequential": (lambda: nn.Conv2d(1, 2, 3), "from_torch needs a torch.nn.Sequential"),
}


@pytest.mark.parametrize("case", list(UNSUPPORTED))
def test_from_torch_refuses_what_convscope_cannot_compute(case):
    build, message = UNSUPPORTED[case]
    with pytest.raises(ValueError) as error:
        from_torch(build(), (8, 8, 1))
    assert message in str(error.value)


def test_from_torch_says_when_the_input_shape_looks_channels_first():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 28 * 28, 3))
    with pytest.raises(
        ValueError, match=r"layer 0 \(Conv2d\): in_channels=1 but its input has 28.*\(28, 28, 1\)"
    ):
        from_torch(net, (1, 28, 28))
    with pytest.raises(ValueError, match=r"layer 2 \(Linear\): in_features=3136 but its input has 784"):
        from_torch(
            nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Flatten(), nn.Linear(3136, 3)), (28, 28, 1)
        )


def test_a_flattened_block_with_no_dense_after_it_is_refused_not_permuted():
    model = Sequential([Conv2D(3, 1), Flatten(), Softmax()], input_shape=(2, 2, 1), seed=0)
    with pytest.raises(ValueError, match="to_torch: the output is a flattened 2x2x3 block with no Dense"):
        to_torch(model)
    with pytest.raises(ValueError, match="from_torch: the output is a flattened 2x2x3 block"):
        from_torch(nn.Sequential(nn.Conv2d(1, 3, 1), nn.Flatten(), nn.Softmax(dim=1)), (2, 2, 1))


def test_standardisation_becomes_a_leading_non_affine_batchnorm_and_comes_back():
    model = seed_cnn((8, 8, 1), 10).adapt(np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32))
    net = to_torch(model).eval()
    first = net[0]
    assert isinstance(first, nn.BatchNorm2d) and not first.affine
    assert (first.eps, first.momentum) == (0.0, 0.0)  # exact (x - mean) / std; statistics kept fixed
    assert torch_positions(model) == list(range(1, len(model.layers) + 1))
    assert sorted(net.state_dict()) == sorted(
        ["0.running_mean", "0.running_var", "0.num_batches_tracked"]
        + [f"{int(k.split('.')[0]) + 1}.{k.split('.')[1]}" for k in model.state_dict()]
    )
    x = random_images((8, 8, 1), n=5)
    with torch.no_grad():
        np.testing.assert_allclose(net(images_to_torch(x)).numpy(), model(x), rtol=0, atol=1e-6)
        np.testing.assert_allclose(
            first(images_to_torch(x)).numpy().transpose(0, 2, 3, 1),
            model.standardize(x),
            rtol=1e-6,
            atol=1e-6,
        )
    back = from_torch(net, (8, 8, 1))
    assert len(back.layers) == len(model.layers)
    for key in ("mean", "std"):  # float32 in torch: the same float32 numbers
        np.testing.assert_array_equal(
            np.float32(back.standardization[key]), np.float32(model.standardization[key])
        )
    np.testing.assert_array_equal(back.state_dict()["0.weight"], model.state_dict()["0.weight"])
    np.testing.assert_allclose(back(x), model(x), rtol=0, atol=1e-7)


def test_from_torch_reads_a_torch_built_batchnorm_network():
    """A native torch network: leading non-affine BatchNorm2d (eps 1e-5, the standardisation),
    Conv2d + BatchNorm2d (its own eps and momentum, trained running statistics), global average
    pooling; layer indices shift, errors and state names follow."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.BatchNorm2d(3, affine=False),
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6, eps=1e-3, momentum=0.2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d((1, 1)),
        nn.Flatten(),
        nn.Linear(6, 4),
    )
    net.train()
    for _ in range(3):
        net(torch.rand(8, 3, 9, 7) * 2 + 1)  # moves every running statistic
    net.eval()
    model = from_torch(net, (9, 7, 3))
    assert [type(layer).__name__ for layer in model.layers] == [
        "Conv2D",
        "BatchNorm2D",
        "ReLU",
        "GlobalAvgPool2D",
        "Dense",
    ]
    assert (model.layers[1].eps, model.layers[1].momentum) == (1e-3, pytest.approx(0.2))
    mean, var = net[0].running_mean.numpy(), net[0].running_var.numpy()
    np.testing.assert_allclose(model.standardization["mean"], mean, rtol=1e-7)
    np.testing.assert_allclose(
        model.standardization["std"], np.sqrt(var.astype(np.float64) + 1e-5), rtol=1e-7
    )
    np.testing.assert_array_equal(model.state_dict()["1.running_var"], net[2].running_var.numpy())
    x = random_images((9, 7, 3), n=5, seed=2)
    assert_logits_close(model_logits(model, x), torch_logits(net, x))
    assert torch_positions(from_torch(net, (9, 7, 3))) == [1, 2, 3, 5, 6]


def test_global_average_pooling_is_two_torch_modules():
    from convscope import GlobalAvgPool2D

    model = Sequential([Conv2D(3, 3), GlobalAvgPool2D(), Softmax()], input_shape=(5, 5, 2), seed=0)
    net = to_torch(model)
    assert [type(m).__name__ for m in net] == ["Conv2d", "AdaptiveAvgPool2d", "Flatten", "Softmax"]
    assert torch_positions(model) == [0, 2, 3]
    x = random_images((5, 5, 2))
    with torch.no_grad():
        np.testing.assert_allclose(net(images_to_torch(x)).numpy(), model(x), rtol=0, atol=1e-6)
