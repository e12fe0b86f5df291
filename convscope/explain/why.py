"""The report's answers to "why": which pixels decided (attribution), what each kernel and class wants to
see (activation maximisation), the network's health, and how the first layer's kernels grew.

`add_why_sections(sections, model, image, ...)` extends the sections of convscope.explain.story: each
conv layer's section gets its kernels' optimised inputs beside its top patches, and four sections
follow the softmax. Each step's wall time is kept in `timings` (seconds, by name) for the CLI to print.
"""

import time

from convscope.explain import attribution as attribution_module
from convscope.explain import health as health_module
from convscope.explain import maximize, why_figures
from convscope.explain.figures import shape_text
from convscope.explain.report import Section

METHOD_TEXT = {
    "gradient": "how much a small change of each pixel moves the class's score",
    "smoothgrad": "the gradient averaged over noisy copies of the image, less speckled",
    "gradcam": "the layer's feature maps weighted by how much the score depends on each",
    "occlusion": "how much the class's probability drops when a patch of the image is hidden",
}


def attribution_section(model, image, attributions) -> Section:
    """The input and every method's heat map, alone and over the input."""
    first = attributions[0]
    names = attribution_module.class_names(model)
    said = f"The model predicts {names[first.predicted]}" + (
        f"; the maps explain {first.class_name} (probability {first.probability:.1%})."
        if first.target != first.predicted
        else f" ({first.probability:.1%}); the maps explain that class."
    )
    methods = "; ".join(f"{a.method}: {METHOD_TEXT[a.method]} ({a.scale})" for a in attributions)
    section = Section(
        "why",
        "why",
        "Why: which pixels decided",
        f"{said} Bright is where the decision rests. {methods}. Each map has the input's resolution, "
        "its own colour bar, and is drawn alone (top) and over the input (bottom).",
    )
    figure = why_figures.attribution_figure(
        image, attributions, f"why {first.class_name}? attribution maps for class {first.class_name}"
    )
    return section.add("why-attribution", "attribution heat maps, alone and over the input", figure)


def _layer_section(sections, layer) -> Section | None:
    return next((section for section in sections if section.anchor == layer.name), None)


def add_kernel_maximization(sections, model, settings, timings) -> list:
    """Every conv layer's kernels, optimised (maximize.maximize_kernels), added to its section."""
    results = []
    for index in maximize.conv_layers(model):
        layer = model.layers[index]
        started = time.perf_counter()
        result = maximize.maximize_kernels(model, index, settings=settings)
        timings[f"maximize {layer.name}"] = time.perf_counter() - started
        results.append(result)
        section = _layer_section(sections, layer)
        if section is None:
            continue
        caption = (
            f"what each kernel wants to see: the input that excites it most at one position of the "
            f"{shape_text(layer.output_shape)} output, found by {settings.steps} steps of gradient ascent "
            f"from seeded noise (seed {settings.seed}, best of {settings.starts} starts); lit: that "
            "position's receptive field; the number is the value reached, comparable to the top "
            "patches' maxima"
        )
        figure = why_figures.maximized_kernels_figure(result, f"{layer.name}: what each kernel wants to see")
        section.add(f"{layer.name}-maximized", caption, figure)
    return results


def class_maximization_section(model, settings, timings) -> Section:
    started = time.perf_counter()
    result = maximize.maximize_classes(model, settings=settings)
    timings["maximize classes"] = time.perf_counter() - started
    section = Section(
        "classes",
        "why",
        "What each class wants to see",
        "For each class, the input that gives it the highest score (logit), grown by gradient ascent "
        "from seeded noise with jitter, an L2 pull towards the mean and a light blur, pixels kept in "
        "0..1 and standardised by the model as usual.",
    )
    figure = why_figures.maximized_classes_figure(
        result, attribution_module.class_names(model), "what each class wants to see"
    )
    return section.add("classes-maximized", "the input each class scores highest", figure)


def health_section(report, sample: int) -> Section:
    warnings = health_module.health_warnings(report)
    dead = "; ".join(
        f"{layer.name} {layer.dead_units}/{layer.relu_units}" for layer in report if layer.relu_units
    )
    text = (
        f"Over {sample} sample images: a ReLU unit (a channel of a block, a neuron of a vector) is dead "
        f"when it is never positive. Dead units per ReLU layer: {dead or 'no ReLU layers'}. "
        + (" ".join(f"WARNING: {w}." for w in warnings) if warnings else "No layer is mostly dead. ")
        + "Right: the root mean square of each layer's weight gradient in one training-mode pass "
        "of the loss over the sample."
    )
    section = Section("health", "health", "Network health", text)
    return section.add(
        "health",
        "dead ReLU share per layer and weight-gradient size",
        why_figures.health_figure(report, "network health"),
    )


def growth_section(snapshots) -> Section:
    count = len(snapshots.steps)
    every = "epoch" if snapshots.every == "epoch" else f"{snapshots.every * snapshots.stride} steps"
    section = Section(
        "growth",
        "growth",
        "How the kernels grew",
        f"{count} snapshots taken while training (before the first step, then every {every}; "
        f"{why_figures.strip_count(snapshots)} shown, evenly spread): each first-layer kernel as a strip "
        "across the epochs, from its random start to what it learned, and the same fixed image's "
        "first-layer feature maps at those moments.",
    )
    section.add(
        "growth-kernels",
        "first-layer kernels across training",
        why_figures.kernel_growth_figure(snapshots, "first-layer kernels, one row each, across training"),
    )
    figure = why_figures.feature_map_growth_figure(snapshots, "the fixed image's first-layer feature maps")
    return section.add("growth-feature-maps", "first-layer feature maps across training", figure)


def add_why_sections(
    sections,
    model,
    image,
    methods=attribution_module.METHODS,
    target=None,
    layer=None,
    sample_images=None,
    sample_labels=None,
    settings: maximize.Settings | None = maximize.DEFAULT_SETTINGS,
    attribution_options=None,
) -> dict:
    """Extend `sections` (from story.explain_sections) in place; returns {step: seconds} and, under
    'attributions' and 'health', what was computed."""
    timings: dict = {}
    started = time.perf_counter()  # the first pass loads the compiled kernels: not a method's time
    attribution_module.input_gradients(model, image[None], 0)
    timings["warm-up"] = time.perf_counter() - started
    attributions = attribution_module.explain_why(
        model, image, methods, target, layer, **(attribution_options or {})
    )
    for item in attributions:
        timings[item.method] = item.seconds
    sections.append(attribution_section(model, image, attributions))
    if settings is not None:
        add_kernel_maximization(sections, model, settings, timings)
        sections.append(class_maximization_section(model, settings, timings))
    report = None
    if sample_images is not None and len(sample_images):
        started = time.perf_counter()
        report = health_module.network_health(model, sample_images, sample_labels)
        timings["health"] = time.perf_counter() - started
        sections.append(health_section(report, min(len(sample_images), health_module.MAX_SAMPLE)))
    if getattr(model, "snapshots", None) is not None:
        sections.append(growth_section(model.snapshots))
    return {"timings": timings, "attributions": attributions, "health": report}
