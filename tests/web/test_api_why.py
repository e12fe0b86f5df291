"""The network view's "why" API: attribution maps of an uploaded image, and the input a kernel wants."""

import numpy as np
import pytest
from web_helpers import assert_error, png_bytes

from convscope.explain import attribution

DIGIT = (np.pad(np.ones((6, 2)), ((1, 1), (3, 3))) * 255).astype(np.uint8)  # a "1" on 8x8


def post(client, name="digits", data=None, **form):
    return client.post(
        f"/api/models/{name}/attribution",
        files={"image": ("digit.png", png_bytes(DIGIT) if data is None else data, "image/png")},
        data=form,
    )


def test_options_list_methods_classes_and_the_gradcam_layers(client):
    options = client.get("/api/models/digits/attribution").json()
    assert options["methods"] == ["gradient", "smoothgrad", "gradcam", "occlusion"]
    assert options["class_names"] == [str(d) for d in range(10)]
    assert options["layers"] == ["conv2d", "relu", "maxpool2d", "conv2d_1", "relu_1", "maxpool2d_1"]
    assert options["default_layer"] == "relu_1" and set(options["scales"]) == set(options["methods"])


@pytest.mark.parametrize("method", attribution.METHODS)
def test_each_method_answers_a_map_at_the_input_resolution_on_its_scale(client, digits_model, method):
    answer = post(client, method=method).json()
    assert answer["method"] == method and answer["map"]["shape"] == [8, 8, 1]
    assert answer["map"]["colormap"] == ("RdBu_r" if method == "occlusion" else "magma")
    expected = int(digits_model[1].predict(DIGIT[None, :, :, None] / 255.0)[0])
    assert answer["target"] == answer["predicted"] == expected
    assert answer["layer"] == ("relu_1" if method == "gradcam" else None)
    assert 0 <= answer["peak"][0] < 8 and answer["elapsed_ms"] >= answer["method_ms"] > 0


def test_a_chosen_class_and_layer_and_the_errors(client):
    answer = post(client, method="gradcam", target="3", layer="conv2d").json()
    assert (answer["target"], answer["class_name"], answer["layer"]) == (3, "3", "conv2d")
    assert_error(post(client, method="gradcam", layer="dense"), 422, "Grad-CAM needs feature maps")
    assert_error(post(client, target="cat"), 422, "not one of the model's classes")
    assert_error(post(client, method="lime"), 422, "unknown attribution method")
    assert_error(post(client, data=b"not an image"), 415)
    rgb = post(client, name="rgb", data=png_bytes(np.zeros((32, 32, 3))), method="occlusion").json()
    assert rgb["map"]["shape"] == [32, 32, 1]


def test_the_maximized_input_of_a_feature_maps_kernel_is_seeded_and_cached(client):
    first = client.get("/api/models/digits/layers/2/maximized?channel=3").json()
    assert (first["conv_layer"], first["conv_name"], first["channel"]) == (0, "conv2d", 3)
    assert first["image"]["shape"] == [8, 8, 1] and first["field"]["size"] == [3, 3] and not first["cached"]
    again = client.get("/api/models/digits/layers/2/maximized?channel=3").json()
    assert again["cached"] and again["image"] == first["image"] and again["value"] == first["value"]
    assert_error(client.get("/api/models/digits/layers/6/maximized?channel=0"), 422, "not made by kernels")
    assert_error(client.get("/api/models/digits/layers/0/maximized?channel=16"), 422, "channels 0 to 15")
    assert_error(client.get("/api/models/digits/layers/40/maximized?channel=0"), 404)
