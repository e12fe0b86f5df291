"""Attribution on the engine's own backward pass: input gradients against torch autograd, occlusion
against a brute-force loop, maps that find a bright square, and the model-randomisation sanity check."""

from functools import partial

import numpy as np
import pytest

from convscope.explain import attribution
from convscope.models import resnet, seed_cnn, small_vgg

torch = pytest.importorskip("torch")


def _perturbed(model, seed=0):
    """The model with an input standardisation and batch norms whose running statistics and scales are
    not the identity, so that every part of the inference-mode backward pass matters."""
    rng = np.random.default_rng(seed)
    channels = model.input_shape[2]
    model.standardization = {"mean": [0.4] * channels, "std": [0.25] * channels}
    for layer in model.layers:
        if "running_mean" in layer.buffers:
            layer.buffers["running_mean"][:] = rng.normal(0, 0.2, layer.buffers["running_mean"].shape)
            layer.buffers["running_var"][:] = rng.uniform(0.5, 2.0, layer.buffers["running_var"].shape)
            layer.params["weight"][:] = rng.uniform(0.5, 1.5, layer.params["weight"].shape)
            layer.params["bias"][:] = rng.normal(0, 0.1, layer.params["bias"].shape)
    return model


def _torch_logits(model):
    from convscope.interop import to_torch

    net = to_torch(model).eval()
    return net[:-1] if isinstance(net[-1], torch.nn.Softmax) else net


@pytest.mark.parametrize(
    "build, shape",
    [(seed_cnn, (12, 12, 1)), (small_vgg, (16, 16, 3)), (partial(resnet, 8, width=4), (8, 8, 3))],
    ids=["seed_cnn", "small_vgg", "resnet8"],
)
def test_input_gradients_equal_torch_autograd(kernel_backend, build, shape):
    model = _perturbed(build(shape, 5, seed=1))
    images = np.random.default_rng(2).random((4, *shape)).astype(np.float32)
    targets = np.array([0, 3, 4, 1])
    gradients, logits = attribution.input_gradients(model, images, targets)

    net = _torch_logits(model)
    x = torch.tensor(images.transpose(0, 3, 1, 2), requires_grad=True)
    out = net(x)
    out[torch.arange(4), torch.from_numpy(targets)].sum().backward()
    expected = x.grad.numpy().transpose(0, 2, 3, 1)
    assert gradients.dtype == np.float32 and gradients.shape == images.shape
    scale = np.abs(expected).max()
    np.testing.assert_allclose(gradients, expected, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(logits, out.detach().numpy(), rtol=1e-5, atol=1e-5)


def test_layer_gradients_equal_torch_at_the_gradcam_layer(kernel_backend):
    model = _perturbed(seed_cnn((12, 12, 1), 5, seed=3))
    images = np.random.default_rng(4).random((3, 12, 12, 1)).astype(np.float32)
    index = attribution.default_gradcam_layer(model)
    assert model.layers[index].name == "relu_1"  # the last conv layer's rectified output
    activations, gradient, _ = attribution.layer_gradients(model, images, 2, index)

    net = _torch_logits(model)  # module 0 is the standardisation, so torch's relu_1 is module index + 1
    hidden = net[: index + 2](torch.tensor(images.transpose(0, 3, 1, 2)))
    hidden.retain_grad()
    net[index + 2 :](hidden)[:, 2].sum().backward()
    np.testing.assert_allclose(activations, hidden.detach().numpy().transpose(0, 2, 3, 1), atol=1e-5)
    expected = hidden.grad.numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(gradient, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_occlusion_equals_a_brute_force_loop(trained, digits):
    model = trained[0]
    image = digits[1].images[5]
    size, stride, fill = 3, 2, 0.25  # 8 pixels: patches start at rows 0, 2, 4 and, flush with the edge, 5
    values = attribution.occlusion_map(model, image, 4, size=size, stride=stride, fill=fill)
    original = model.predict_proba(image[None])[0, 4]
    total, count = np.zeros((8, 8)), np.zeros((8, 8))
    for top in (0, 2, 4, 5):
        for left in (0, 2, 4, 5):
            hidden = image.copy()
            hidden[top : top + size, left : left + size] = fill
            drop = original - model.predict_proba(hidden[None])[0, 4]
            total[top : top + size, left : left + size] += drop
            count[top : top + size, left : left + size] += 1
    np.testing.assert_allclose(values, total / count, rtol=1e-5, atol=1e-6)


def test_attribute_explains_the_predicted_class_and_states_its_scale(trained, digits):
    model = trained[0]
    image = digits[1].images[0]
    predicted = int(model.predict(image[None])[0])
    for method in attribution.METHODS:
        result = attribution.attribute(model, image, method)
        assert result.values.shape == (8, 8) and np.isfinite(result.values).all()
        assert result.target == result.predicted == predicted and result.seconds > 0
        assert result.scale and (result.values.min() >= 0 or result.signed)
    assert attribution.attribute(model, image, "gradcam", layer="relu").layer == "relu"
    assert attribution.attribute(model, image, "gradient", target="3").class_name == "3"
    with pytest.raises(ValueError, match="not one of the model's classes"):
        attribution.attribute(model, image, "gradient", target="cat")
    with pytest.raises(ValueError, match="flat output.*Grad-CAM needs feature maps"):
        attribution.attribute(model, image, "gradcam", layer="dense")
    with pytest.raises(ValueError, match="unknown attribution method"):
        attribution.attribute(model, image, "lime")


def bright_squares(count: int, seed: int, side=16, square=4):
    """Dim noise (0..0.3); class 1 images hold a 4x4 square of 1.0 at a random place, class 0 none.
    Returns images, labels and each square's top-left corner."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 0.3, (count, side, side, 1)).astype(np.float32)
    labels = rng.integers(0, 2, count)
    corners = rng.integers(0, side - square + 1, (count, 2))
    for i in np.flatnonzero(labels):
        top, left = corners[i]
        images[i, top : top + square, left : left + square] = 1.0
    return images, labels, corners


@pytest.fixture(scope="module")
def square_model():
    images, labels, _ = bright_squares(600, 0)
    model = seed_cnn((16, 16, 1), 2, seed=0, class_names=["none", "square"])
    model.fit(images, labels, epochs=2, batch_size=32, seed=0, verbose=0)
    return model


def _peaks_inside(maps, corners, square=4) -> float:
    inside = []
    for values, (top, left) in zip(maps, corners, strict=True):
        row, column = np.unravel_index(np.argmax(values), values.shape)
        inside.append(top <= row < top + square and left <= column < left + square)
    return float(np.mean(inside))


def test_gradient_and_gradcam_maps_peak_inside_the_bright_square(square_model):
    images, labels, corners = bright_squares(200, 1)
    assert square_model.evaluate(images, labels)[1] > 0.95
    chosen = np.flatnonzero(labels == 1)
    gradients = attribution.gradient_maps(square_model, images[chosen], 1)
    cams, _ = attribution.gradcam_maps(square_model, images[chosen], 1)
    assert _peaks_inside(gradients, corners[chosen]) >= 0.9
    assert _peaks_inside(cams, corners[chosen]) >= 0.9


def _rank_correlation(a, b) -> float:
    """Spearman's: the correlation of the values' ranks."""
    ranks = [np.argsort(np.argsort(v.ravel())).astype(np.float64) for v in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def test_maps_change_when_the_weights_are_reinitialised(square_model):
    """Adebayo et al.'s model-randomisation sanity check: a map that survives re-initialising every
    weight explains the image, not the model."""
    images, labels, _ = bright_squares(60, 2)
    chosen = images[labels == 1][:20]
    randomised = seed_cnn((16, 16, 1), 2, seed=7)
    for maps in (
        lambda model: attribution.gradient_maps(model, chosen, 1),
        lambda model: attribution.gradcam_maps(model, chosen, 1)[0],
    ):
        trained_maps, random_maps = maps(square_model), maps(randomised)
        pairs = zip(trained_maps, random_maps, strict=True)
        correlation = np.mean([_rank_correlation(a, b) for a, b in pairs])
        assert correlation < 0.5


def test_smoothgrad_is_seeded_and_upsampling_puts_values_at_receptive_field_centres(trained, digits):
    model = trained[0]
    image = digits[1].images[2]
    first = attribution.smoothgrad_map(model, image, 1, samples=8, seed=3)
    assert np.array_equal(first, attribution.smoothgrad_map(model, image, 1, samples=8, seed=3))
    assert not np.array_equal(first, attribution.smoothgrad_map(model, image, 1, samples=8, seed=4))
    field = attribution.receptive_fields(model)[4]  # relu_1: 4x4 on 8x8, centres at 0.5, 2.5, 4.5, 6.5
    maps = np.zeros((1, 4, 4), dtype=np.float32)
    maps[0, 1, 2] = 1.0
    up = attribution.upsample(maps, field, (8, 8))[0]
    np.testing.assert_allclose(up[2:4, 4:6], 0.75**2)  # a quarter of the way from each centre
    np.testing.assert_allclose(up[:, 0], 0.0)
