"""Stochastic weight averaging (Izmailov et al. 2018, "Averaging Weights Leads to Wider Optima and
Better Generalization"), as torch.optim.swa_utils does it.

After the learning-rate schedule has run its course, training goes on for a few more epochs at a
constant learning rate, and the weights at the end of each of those epochs are averaged. SGD at that
rate bounces around a wide, flat region of low loss; the average lands near its centre, which tends to
generalise better than any single point SGD visits. Batch normalisation's running statistics belong to
none of the averaged networks, so they are measured afresh for the averaged weights, in one more pass
over the training images, augmented as in training (`recompute_batchnorm`, torch's `update_bn`).
"""

import numpy as np

from convscope.layers import BatchNorm2D


def average_into(average: dict, params: dict, count: int) -> None:
    """Fold `params` {name: array} into `average`, the running mean of `count` earlier sets of the same
    names, in place: average += (params - average) / (count + 1)."""
    for name, value in params.items():
        average[name] += (value - average[name]) / np.float32(count + 1)


def batchnorm_layers(model) -> list:
    """Every BatchNorm2D of a Sequential, those inside residual blocks included, in order."""
    found = []
    for layer in model.layers:
        inner = [layer for _, layer in layer.named_layers()] if hasattr(layer, "named_layers") else [layer]
        found += [each for each in inner if isinstance(each, BatchNorm2D)]
    return found


def recompute_batchnorm(model, batches, rng=None) -> int:
    """Set the running mean and variance of every BatchNorm2D to the average, over `batches` (an iterable
    of prepared, standardised training batches (N, H, W, C)), of the batch statistics each layer sees in a
    training-mode forward pass, as torch.optim.swa_utils.update_bn (momentum None) does over a training
    loader. Give the batches as training saw them, augmentation included: the running statistics the
    weights were trained with are those of augmented images, and clean images alone measure other ones.
    `rng` drives dropout layers, if any (default: a Generator seeded 0). Returns the number of
    BatchNorm2D layers; with none, nothing runs."""
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    runner = model._parallel()
    rng = np.random.default_rng(0) if rng is None else rng
    try:
        for index, batch in enumerate(batches):
            for layer in layers:  # a cumulative mean: batch k gets weight 1 / (k + 1)
                layer.momentum = 1.0 / (index + 1)
            runner.record_batch_statistics(batch, rng)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
    return len(layers)
