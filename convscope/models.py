"""Ready-made architectures."""

from functools import partial

from convscope.blocks import Residual
from convscope.layers import (
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    MaxPool2D,
    ReLU,
    Softmax,
)
from convscope.model import Sequential


def seed_cnn(input_shape=(28, 28, 1), num_classes=10, seed=0, class_names=None) -> Sequential:
    """The article's network: conv 3x3 x16 same + ReLU, max pool 2x2, conv 3x3 x32 same + ReLU,
    max pool 2x2, flatten, dense 128 + ReLU, dense num_classes + softmax.

    For (28, 28, 1) inputs and 10 classes it has 206,922 parameters. Layer indices (and so the
    state_dict names 0, 3, 7, 9) match the equivalent torch.nn.Sequential.
    """
    return Sequential(
        [
            Conv2D(16, 3, padding="same"),
            ReLU(),
            MaxPool2D(2),
            Conv2D(32, 3, padding="same"),
            ReLU(),
            MaxPool2D(2),
            Flatten(),
            Dense(128),
            ReLU(),
            Dense(num_classes),
            Softmax(),
        ],
        input_shape=input_shape,
        seed=seed,
        class_names=class_names,
        name="seed_cnn",
    )


def _conv_bn_relu(filters: int) -> list:
    """conv 3x3 'same' - batch norm - ReLU; the conv has no bias, the batch norm's shift does its job."""
    return [Conv2D(filters, 3, padding="same", use_bias=False), BatchNorm2D(), ReLU()]


def _vgg_block(filters: int) -> list:
    """[conv 3x3 - batch norm - ReLU] twice, then 2x2 max pooling: half the height and width."""
    return [*_conv_bn_relu(filters), *_conv_bn_relu(filters), MaxPool2D(2)]


def small_vgg(
    input_shape=(32, 32, 3), num_classes=10, seed=0, class_names=None, width=32, dropout=0.3
) -> Sequential:
    """A stronger recipe than the seed CNN: three VGG blocks of [conv 3x3 - BN - ReLU] x 2 + max pool 2x2
    with width, 2 * width and 4 * width kernels, then global average pooling, dropout, dense
    num_classes + softmax.

    For (32, 32, 3) inputs, 10 classes and width 32 it has 288,746 trainable parameters (and 896
    running statistics); the spatial size goes 32 -> 16 -> 8 -> 4 before the global average. Inputs
    need at least 8 x 8 pixels. Train it with augmentation and more epochs than the seed CNN (see
    `convscope train --help`).
    """
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"small_vgg: width must be a positive int, got {width!r}")
    layers = [layer for filters in (width, 2 * width, 4 * width) for layer in _vgg_block(filters)]
    layers += [GlobalAvgPool2D(), Dropout(dropout), Dense(num_classes), Softmax()]
    return Sequential(layers, input_shape=input_shape, seed=seed, class_names=class_names, name="small_vgg")


def _basic_block(filters: int, stride: int, shortcut: str) -> Residual:
    """The paper's CIFAR block: conv 3x3 (stride) - BN - ReLU - conv 3x3 - BN, plus the shortcut, then
    ReLU. The convs have no bias (the batch norm's shift does its job)."""
    body = [
        Conv2D(filters, 3, stride=stride, padding=1, use_bias=False),
        BatchNorm2D(),
        ReLU(),
        Conv2D(filters, 3, padding=1, use_bias=False),
        BatchNorm2D(),
    ]
    return Residual(body, shortcut=shortcut)


def resnet(
    depth=20, input_shape=(32, 32, 3), num_classes=10, seed=0, class_names=None, shortcut="A", width=16
) -> Sequential:
    """He et al. (2016)'s CIFAR-10 ResNet of `depth` = 6n + 2 layers with weights (20, 32, 44, 56, 110):
    conv 3x3 with `width` (16) kernels - BN - ReLU, three stages of n residual blocks with width,
    2 * width and 4 * width kernels (the first block of the second and third stages halves the height
    and width with stride 2: 32x32 -> 16x16 -> 8x8 maps), global average pooling, dense num_classes +
    softmax.

    shortcut: 'A' (the paper's CIFAR choice: identity, and subsampling + zero channels where the
    shape changes, no parameters) or 'B' (a 1x1 conv with stride 2 + BN where it changes). ResNet-20
    with 'A' has 269,722 trainable parameters (the paper's 0.27M) and 1,376 running statistics.
    Weights start as torch's defaults (uniform, see convscope.layers), batch norm at weight 1, bias 0.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"resnet: depth must be 6n + 2 for n >= 1 (8, 14, 20, 32, 44, 56, 110), got {depth!r}"
        )
    if shortcut not in ("A", "B"):
        raise ValueError(f"resnet: shortcut must be 'A' or 'B', got {shortcut!r}")
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"resnet: width must be a positive int, got {width!r}")
    blocks = (depth - 2) // 6
    layers = [Conv2D(width, 3, padding=1, use_bias=False), BatchNorm2D(), ReLU()]
    for stage, filters in enumerate((width, 2 * width, 4 * width)):
        for block in range(blocks):
            layers.append(_basic_block(filters, 2 if stage > 0 and block == 0 else 1, shortcut))
    layers += [GlobalAvgPool2D(), Dense(num_classes), Softmax()]
    return Sequential(
        layers, input_shape=input_shape, seed=seed, class_names=class_names, name=f"resnet{depth}"
    )


RESNET_DEPTHS = (20, 32, 44, 56)
# the names `convscope train --model` takes
MODELS = {
    "seed": seed_cnn,
    "small-vgg": small_vgg,
    **{f"resnet{depth}": partial(resnet, depth) for depth in RESNET_DEPTHS},
}

# What `convscope train` does when a flag is not given: the defaults below, overridden by the model's
# recipe (MODEL_RECIPES, or `--recipe NAME`), overridden by the flags given. The seed CNN is small
# enough to underfit CIFAR with 4-pixel shifts, so its crops shift by up to 2 pixels.
TRAINING_DEFAULTS = {
    "epochs": 10,
    "batch_size": 64,
    "optimizer": "adam",
    "lr": None,  # the optimizer's (cli.train.DEFAULT_LR)
    "nesterov": False,
    "schedule": "onecycle",
    "weight_decay": 0.0,
    "augment": False,
    "crop_padding": 2,
    "cutout": 0,
    "label_smoothing": 0.0,
    "val_split": None,
}
RECIPES = {
    "seed": {"crop_padding": 2, "label_smoothing": 0.0},
    "small-vgg": {"crop_padding": 4, "label_smoothing": 0.1},
    # He et al. 2016, section 4.2: SGD momentum 0.9, weight decay 1e-4, batch 128, lr 0.1 divided by 10
    # at 32k and 48k iterations, stopping at 64k (182 epochs of 352 steps on 45,000 images: 64,064,
    # the divisions at 32,032 and 48,048); flips and 4-pixel padded crops; the last 5,000 images held
    # out. The paper subtracts the per-pixel mean; convscope standardises each channel instead.
    "paper": {
        "epochs": 182,
        "batch_size": 128,
        "optimizer": "sgd",
        "lr": 0.1,
        "schedule": "steps",
        "weight_decay": 1e-4,
        "augment": True,
        "crop_padding": 4,
        "val_split": ("last", 5000),
    },
    # Fewer epochs for 2 CPU cores: one-cycle with Nesterov momentum up to lr 0.2, stronger weight
    # decay and label smoothing (both regularise a run too short to overfit much), the paper's
    # augmentation and split. Evaluate with --tta (flips).
    "budget": {
        "epochs": 40,
        "batch_size": 128,
        "optimizer": "sgd",
        "lr": 0.2,
        "nesterov": True,
        "schedule": "onecycle",
        "weight_decay": 5e-4,
        "augment": True,
        "crop_padding": 4,
        "label_smoothing": 0.1,
        "val_split": ("last", 5000),
    },
}
MODEL_RECIPES = {
    "seed": "seed",
    "small-vgg": "small-vgg",
    **{name: "paper" for name in MODELS if "resnet" in name},
}
NAMED_RECIPES = ("paper", "budget")  # the ones `convscope train --recipe` takes


def recipe_settings(model: str, recipe: str | None = None, **given) -> dict:
    """Every training setting of TRAINING_DEFAULTS: the recipe's (default: the model's own) where it
    has one, and every setting given (not None) taking precedence."""
    settings = {**TRAINING_DEFAULTS, **RECIPES[recipe or MODEL_RECIPES[model]]}
    return {key: default if given.get(key) is None else given[key] for key, default in settings.items()}
