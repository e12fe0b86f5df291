"""One image through one model, told as report sections in the article's order:
input -> conv -> ReLU -> pool -> conv -> ReLU -> pool -> flatten -> dense -> softmax,
with each conv layer's learned kernels and the data-set patches that excite them most,
then (when given) the training curves and the evaluation on a test set.
"""

import numpy as np

from convscope.checks import check_images
from convscope.explain import blocks, feature_maps, learned, plots
from convscope.explain.figures import shape_text
from convscope.explain.patches import top_patches
from convscope.explain.receptive import receptive_fields
from convscope.explain.report import Section

PATCH_LAYERS = 2  # top patches for the first two conv layers

LAYER_KINDS = {
    "Conv2D": "conv",
    "ReLU": "relu",
    "MaxPool2D": "pool",
    "AvgPool2D": "pool",
    "Flatten": "flatten",
    "Dense": "dense",
}


def _field_text(field) -> str:
    if field is None:
        return ""
    size, jump = shape_text(field.size), shape_text(field.jump)
    return (
        f" Each value here sees a {size} patch of the input (its receptive field); neighbouring values "
        f"are {jump} input pixels apart."
    )


def _pair_text(pair) -> str:
    """(2, 2) -> '2', (1, 2) -> '1×2'."""
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}×{pair[1]}"


def _conv_extras(layer) -> str:
    """', dilation 2, 4 groups' for a conv layer that uses those options, else ''."""
    extras = "" if layer.dilation == (1, 1) else f", dilation {_pair_text(layer.dilation)}"
    return extras + ("" if layer.groups == 1 else f", {layer.groups} groups")


def layer_text(layer, field) -> str:
    """What a layer does, in the article's words, with its numbers filled in."""
    kind = type(layer).__name__
    config = layer.get_config()
    in_shape, out_shape = shape_text(layer.input_shape), shape_text(layer.output_shape)
    if kind == "Conv2D":
        kh, kw = config["kernel_size"]
        fused = config["activation"] == "relu"
        relu = " The layer applies ReLU itself, so its maps are never negative." if fused else ""
        return (
            f"{config['filters']} kernels of {kh}×{kw}×{layer.input_shape[2]} slide over the {in_shape} "
            f"block (stride {_pair_text(layer.stride)}, padding {config['padding']!r}{_conv_extras(layer)}); "
            "each one's dot products "
            f"form one feature map, bright where the input looks like the kernel: {out_shape} out."
            + relu
            + _field_text(field)
        )
    if kind == "ReLU":
        return (
            "ReLU sets every negative value to 0: what is left says where each kernel's pattern was found."
            + _field_text(field)
        )
    if kind == "MaxPool2D":
        ph, pw = config["pool_size"]
        return (
            f"Max pooling keeps the brightest value of each {ph}×{pw} window "
            f"(stride {_pair_text(layer.stride)}): "
            f"{in_shape} becomes {out_shape}, the strong responses survive, no parameters."
            + _field_text(field)
        )
    if kind == "AvgPool2D":
        ph, pw = config["pool_size"]
        return (
            f"Average pooling keeps the mean of each {ph}×{pw} window (stride {_pair_text(layer.stride)}): "
            f"{in_shape} becomes {out_shape}, no parameters." + _field_text(field)
        )
    if kind == "Flatten":
        return f"The {in_shape} block is laid out as one vector of {out_shape} numbers, row by row."
    if kind == "Dense":
        return (
            f"Fully connected: each of the {out_shape} outputs is a weighted sum of all {in_shape} inputs "
            f"plus a bias{' then ReLU' if config['activation'] == 'relu' else ''}."
        )
    if kind == "Dropout":
        return "Dropout zeroes random values while training; when predicting it passes values through."
    if kind == "Residual":
        return blocks.residual_text(layer, _field_text(field))
    return f"{kind}: {in_shape} -> {out_shape}."


def input_sections(image: np.ndarray, notes=()) -> list:
    """The input as the model sees it and, for colour images, its channels as separate maps."""
    done = f" About this image: {'; '.join(notes)}." if notes else ""
    section = Section(
        "input",
        "input",
        f"The input as the model sees it: {shape_text(image.shape)}",
        f"An image is a matrix of numbers, one per pixel and channel, here scaled to 0..1.{done}",
    )
    section.add("input", "the input image, big pixels", feature_maps.input_figure(image))
    if image.shape[2] > 1:
        section.text += f" A colour image is {image.shape[2]} 2D matrices, one per channel:"
        section.add("input-channels", "the channels", feature_maps.channels_figure(image))
    return [section]


def _class_names(model) -> list:
    return model.class_names or [str(i) for i in range(model.num_classes)]


def _is_class_scores(model, index: int) -> bool:
    layer = model.layers[index]
    return type(layer).__name__ == "Dense" and layer.output_shape == (model.num_classes,)


def _new_section(model, index: int, output: np.ndarray, field) -> Section:
    """An empty section for one layer: anchor, kind, title with the output shape, and its text."""
    layer = model.layers[index]
    kind = LAYER_KINDS.get(type(layer).__name__, "dense" if output.ndim == 1 else "relu")
    title = f"{index}. {layer.name} ({type(layer).__name__}) → {shape_text(layer.output_shape)}"
    return Section(layer.name, kind, title, layer_text(layer, field))


def _add_output(section: Section, model, index: int, output: np.ndarray) -> Section:
    """A layer's output for the image: a grid of maps, softmax bars, class-score bars or a strip of values."""
    layer = model.layers[index]
    if type(layer).__name__ == "Softmax" or getattr(layer, "activation", None) == "softmax":
        section.kind = "softmax"
        section.text = "Softmax turns the scores into probabilities that add up to 1; the largest one wins."
        figure = plots.probabilities_figure(output, _class_names(model))
        return section.add(f"{layer.name}-probabilities", "class probabilities", figure)
    if output.ndim == 3:
        figure = feature_maps.block_figure(output, f"{layer.name} ({type(layer).__name__})")
        return section.add(
            f"{layer.name}-feature-maps", "its output for this image: one panel per channel", figure
        )
    if _is_class_scores(model, index):
        section.text += " These are the scores (logits) of the classes."
        figure = feature_maps.scores_figure(output, _class_names(model), f"{layer.name}: one score per class")
        return section.add(f"{layer.name}-scores", "one score per class", figure)
    figure = feature_maps.vector_figure(output, f"{layer.name} {shape_text(output.shape)}")
    return section.add(f"{layer.name}-values", "the values, as a strip of cells", figure)


def _add_kernels(section: Section, layer, conv_number: int) -> Section:
    """A conv layer's learned kernels: one panel each for the first conv layer, per output channel after."""
    weights = layer.params["weight"]
    if conv_number == 0:
        figure = learned.first_layer_kernels_figure(weights, f"{layer.name}: learned kernels")
    else:
        figure = learned.kernels_per_output_figure(weights, f"{layer.name}: learned kernels")
    return section.add(f"{layer.name}-kernels", "the learned kernels", figure)


def _add_top_patches(section: Section, model, index: int, patch_images) -> Section:
    """What each kernel of conv layer `index` looks for: its top patches in patch_images (N, H, W, C)."""
    layer = model.layers[index]
    top = top_patches(model, patch_images, index)
    caption = (
        f"what each kernel looks for: the {top.activations.shape[1]} of {len(patch_images)} data-set images "
        f"that excite it most, each cut to its {shape_text(top.field.size)} receptive field at its strongest "
        "position (black beyond the image edge is the zero padding; on small images the patch is lit "
        "inside its dimmed image)"
    )
    figure = learned.top_patches_figure(top, f"{layer.name}: top patches", images=patch_images)
    return section.add(f"{layer.name}-top-patches", caption, figure)


def layer_sections(model, image: np.ndarray, patch_images=None) -> list:
    """One section per layer for one image (H, W, C). A conv layer shows its kernels, then its feature
    maps, then (for the first two conv layers, when patch_images (N, H, W, C) are given) its top
    patches. Ends with the softmax probabilities."""
    x = check_images(image[None], model.input_shape, what="image")
    outputs = [output[0] for output in model.feature_maps(x)]
    inputs = [model.standardize(x)[0], *outputs[:-1]]  # what each layer reads
    fields = receptive_fields(model)
    sections, conv_number = [], 0
    for index, layer in enumerate(model.layers):
        section = _new_section(model, index, outputs[index], fields[index])
        is_conv = type(layer).__name__ == "Conv2D"
        if is_conv:
            _add_kernels(section, layer, conv_number)
        if type(layer).__name__ == "Residual":
            blocks.add_insides(section, layer, inputs[index])
        _add_output(section, model, index, outputs[index])
        if is_conv and patch_images is not None and conv_number < PATCH_LAYERS:
            _add_top_patches(section, model, index, patch_images)
        conv_number += is_conv
        sections.append(section)
    if sections[-1].kind != "softmax":
        probabilities = model.predict_proba(x)[0]
        section = Section("softmax", "softmax", "softmax", "The model's output through softmax.")
        figure = plots.probabilities_figure(probabilities, _class_names(model))
        sections.append(section.add("probabilities", "class probabilities", figure))
    return sections


def training_section(history, note: str = "", held_out: str = "validation") -> Section:
    """Loss and accuracy per epoch; `note` is added to the text (say where validation data came from),
    `held_out` names those curves ("test" when fit's validation_data was the test split)."""
    section = Section(
        "training",
        "training",
        "Training: loss and accuracy per epoch",
        "Each epoch the loss at the output is backpropagated through every layer and the weights take "
        "a step against their gradients; the kernels above are what this produced."
        + (f" {note}" if note else ""),
    )
    figure = plots.history_figure(history, held_out)
    return section.add("training-curves", "loss (log scale) and accuracy per epoch", figure)


def evaluation_section(model, images, labels, split="test") -> Section:
    """Confusion matrix and the most confident mistakes on a labelled set (N, H, W, C), (N,)."""
    probabilities = model.predict_proba(images)
    names = _class_names(model)
    matrix = plots.confusion_matrix(labels, probabilities.argmax(axis=1), model.num_classes)
    mistakes = plots.most_confident_mistakes(probabilities, labels)
    section = Section(
        "evaluation",
        "evaluation",
        f"Evaluation on {len(labels)} {split} images",
        "Rows are the true classes, columns the predicted ones: the diagonal is right, everything else "
        "a mistake. Below, the mistakes the model was surest about.",
    )
    section.add("confusion-matrix", "confusion matrix", plots.confusion_figure(matrix, names))
    figure = plots.mistakes_figure(images, labels, probabilities, mistakes, names)
    return section.add("mistakes", "most confident mistakes", figure)


def photo_section(image: np.ndarray, kernel_label: str, kernel: np.ndarray, padding="valid", stride=1):
    """A classic kernel slid over a photo (H, W, C) with the engine's conv op: input, kernel, feature map."""
    from convscope.explain.convolve import convolution_figure, convolve_image

    feature_map = convolve_image(image, kernel, padding, stride)
    section = Section(
        "kernel",
        "photo",
        f"A kernel slides over a photo: {kernel_label}",
        "At every position the kernel's weights multiply the pixels under it and the products are summed "
        "(over all three colour channels: the kernel has depth 3). The sums form the feature map, bright "
        "where the photo looks like the kernel.",
    )
    figure = convolution_figure(image, kernel, feature_map, padding, stride, kernel_label)
    return section.add(f"convolve-{kernel_label.replace(' ', '-')}", "input, kernel, feature map", figure)


def explain_sections(model, image: np.ndarray, notes=(), patch_images=None) -> list:
    """The input's sections, then every layer's (see layer_sections)."""
    return input_sections(image, notes) + layer_sections(model, image, patch_images)
