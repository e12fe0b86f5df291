"""Network health: dead ReLU units, and per-layer activation and gradient statistics over a data sample.

A ReLU unit is dead on a sample when it is never positive on any of its images: for a block
(H, W, C) the unit is a channel (its kernel's map is 0 everywhere, on every image), for a flat
output a neuron. A layer where more than half of the units are dead gets a warning: those kernels
or neurons pass nothing on, and no gradient reaches their weights.

Activation statistics (mean, standard deviation, share of zeros, largest |value|) are those of every
layer's output in inference mode. Gradient statistics are those of one training-mode backward pass of
the cross-entropy loss over the sample (the labels given, else the model's own predictions): the root
mean square of each parameter's gradient and its ratio to the parameter's own, which says how fast
the layer would move.
"""

from dataclasses import dataclass, field

import numpy as np

from convscope.checks import check_images, check_labels
from convscope.explain.attribution import one_blas_thread

DEAD_WARNING_SHARE = 0.5
MAX_SAMPLE = 512


@dataclass
class LayerHealth:
    index: int
    name: str
    kind: str
    activation_mean: float
    activation_std: float
    zero_share: float  # values exactly 0 in the output
    activation_max: float  # the largest |value|
    relu_units: int = 0  # units after a ReLU (0 for other layers)
    dead_units: int = 0
    gradient_rms: dict = field(default_factory=dict)  # parameter name -> rms of its gradient
    update_ratio: dict = field(default_factory=dict)  # parameter name -> rms(gradient) / rms(parameter)

    @property
    def dead_share(self) -> float:
        return self.dead_units / self.relu_units if self.relu_units else 0.0

    @property
    def warning(self) -> str | None:
        if self.relu_units and self.dead_share > DEAD_WARNING_SHARE:
            unit = "channels" if self.kind == "block" else "units"
            return (
                f"{self.name}: {self.dead_units} of {self.relu_units} {unit} ({self.dead_share:.0%}) "
                "are dead (never active on the sample): they pass nothing on, their weights get no gradient"
            )
        return None


def _is_relu(layer) -> bool:
    return type(layer).__name__ == "ReLU" or getattr(layer, "activation", None) == "relu"


def _dead_units(output: np.ndarray) -> tuple[int, int]:
    """(units, dead units) of a ReLU output: channels of a block (N, H, W, C), neurons of (N, D)."""
    peak = output.reshape(output.shape[0], -1, output.shape[-1]).max(axis=(0, 1))
    return int(peak.size), int((peak <= 0).sum())


def network_health(model, images, labels=None, max_images: int = MAX_SAMPLE) -> list[LayerHealth]:
    """Health of every layer over the first `max_images` images (N, H, W, C) (and labels (N,))."""
    images = check_images(images, model.input_shape, what="sample images")[:max_images]
    if len(images) == 0:
        raise ValueError("network health needs at least one sample image")
    with one_blas_thread():
        outputs = model.feature_maps(images)
        if labels is None:
            labels = model.predict(images)
        labels = check_labels(
            np.asarray(labels)[: len(images)], len(images), model.num_classes, what="labels"
        )
        replica = model.replica()  # the training-mode pass must not touch the model's own caches
        replica.loss_and_gradients(model.standardize(images), labels, rng=np.random.default_rng(0))
    report = []
    for index, (layer, output) in enumerate(zip(model.layers, outputs, strict=True)):
        values = output.astype(np.float64)
        health = LayerHealth(
            index=index,
            name=layer.name,
            kind="block" if output.ndim == 4 else "flat",
            activation_mean=float(values.mean()),
            activation_std=float(values.std()),
            zero_share=float((values == 0).mean()),
            activation_max=float(np.abs(values).max()),
        )
        if _is_relu(layer):
            health.relu_units, health.dead_units = _dead_units(output)
        for name, gradient in replica.layers[index].grads.items():
            rms = float(np.sqrt((gradient.astype(np.float64) ** 2).mean()))
            weight_rms = float(np.sqrt((layer.params[name].astype(np.float64) ** 2).mean()))
            health.gradient_rms[name] = rms
            health.update_ratio[name] = rms / weight_rms if weight_rms > 0 else float("inf")
        report.append(health)
    return report


def health_warnings(report) -> list[str]:
    return [layer.warning for layer in report if layer.warning]


def health_lines(report) -> list[str]:
    """A text table: one line per layer."""
    lines = [
        f"{'layer':<16}{'mean':>9}{'std':>9}{'zeros':>7}{'dead':>12}  weight gradient rms (ratio to weights)"
    ]
    for layer in report:
        dead = f"{layer.dead_units}/{layer.relu_units}" if layer.relu_units else ""
        gradient = ", ".join(
            f"{name} {layer.gradient_rms[name]:.2e} ({layer.update_ratio[name]:.1e})"
            for name in layer.gradient_rms
        )
        lines.append(
            f"{layer.name:<16}{layer.activation_mean:>9.3f}{layer.activation_std:>9.3f}"
            f"{layer.zero_share:>7.0%}{dead:>12}  {gradient}"
        )
    return lines
