"""`convscope explain --why` end to end, and network health (dead ReLU units, the warning)."""

import re

import numpy as np
import pytest

from convscope.cli import main
from convscope.explain.health import health_warnings, network_health

SECTION = re.compile(r'<section id="([^"]+)" class="kind-(\w+)">(.*?)</section>', re.S)


@pytest.fixture(scope="module")
def why_run(trained, digits, tmp_path_factory):
    """`convscope explain MODEL --index 3 --why` on a model trained with snapshots; its output."""
    train, _ = digits
    folder = tmp_path_factory.mktemp("why")
    from convscope.models import seed_cnn

    grown = seed_cnn((8, 8, 1), 10, seed=0, class_names=train.class_names)
    grown.fit(
        train.images[:200], train.labels[:200], epochs=2, batch_size=32, seed=0, verbose=0, snapshots="epoch"
    )
    grown.save(folder / "grown.convscope")
    out = folder / "report"
    arguments = ["explain", str(folder / "grown.convscope"), "--index", "3", "--why", "--patch-images", "100"]
    return out, arguments + ["--maximize-steps", "16", "--smoothgrad-samples", "8", "--out", str(out)]


def test_explain_why_adds_attribution_maximisation_health_and_growth(why_run, capsys):
    out, arguments = why_run
    assert main(arguments) == 0
    printed = capsys.readouterr().out
    for method in ("gradient", "smoothgrad", "gradcam on relu_1", "occlusion"):
        assert re.search(rf"  {method}: [\d.]+ ms, peak at row \d, column \d", printed)
    assert "maximize conv2d_1:" in printed and "network health:" in printed and "snapshots: 3" in printed
    html = (out / "report.html").read_text()
    sections = {anchor: (kind, body) for anchor, kind, body in SECTION.findall(html)}
    assert {"why", "classes", "health", "growth"} <= set(sections)
    assert sections["why"][1].count("<img") == 1 and "magma" in sections["why"][1]
    assert "what each kernel wants to see" in sections["conv2d"][1]
    assert "what each kernel wants to see" in sections["conv2d_1"][1]
    assert sections["growth"][1].count("<img") == 2
    for name in ("why-attribution", "conv2d_1-maximized", "classes-maximized", "health", "growth-kernels"):
        assert any(path.name.endswith(f"-{name}.png") for path in out.iterdir()), name


def test_explain_why_refuses_an_unknown_class_or_layer_before_any_work(why_run, capsys):
    out, arguments = why_run
    assert main(arguments + ["--class", "cat"]) == 2
    assert "class 'cat' is not one of the model's classes" in capsys.readouterr().err
    assert main(arguments + ["--layer", "dense"]) == 2
    assert "Grad-CAM needs feature maps" in capsys.readouterr().err


def test_why_sections_for_another_class_method_and_layer(trained, digits):
    from convscope.explain.why import add_why_sections

    model, image = trained[0], digits[1].images[3]
    sections = []
    result = add_why_sections(
        sections, model, image, methods=("gradcam",), target="0", layer="conv2d", settings=None
    )
    (only,) = result["attributions"]
    assert (only.method, only.target, only.layer) == ("gradcam", 0, "conv2d")
    assert [s.anchor for s in sections][-1] == "why" and result["health"] is None


def test_health_counts_dead_units_and_warns_when_most_of_a_layer_is_dead(trained, digits):
    model = trained[0].replica()
    model.layers = [layer for layer in model.layers]
    images, labels = digits[0].images[:100], digits[0].labels[:100]
    report = network_health(model, images, labels)
    by_name = {layer.name: layer for layer in report}
    assert by_name["relu"].relu_units == 16 and by_name["relu_2"].relu_units == 128
    assert by_name["conv2d"].gradient_rms["weight"] > 0 and not health_warnings(report)

    from convscope.models import seed_cnn

    broken = seed_cnn((8, 8, 1), 10, seed=0)
    broken.load_state_dict(trained[0].state_dict())
    broken.layers[0].params["bias"][:12] = -100.0  # 12 of 16 first-layer kernels can never fire
    report = network_health(broken, images, labels)
    relu = {layer.name: layer for layer in report}["relu"]
    assert relu.dead_units >= 12 and relu.dead_share > 0.5
    (warning,) = [w for w in health_warnings(report) if w.startswith("relu:")]
    assert "are dead" in warning and relu.gradient_rms == {}
    assert np.isfinite(relu.activation_mean)
