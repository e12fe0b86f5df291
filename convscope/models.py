"""Ready-made architectures."""

from convscope.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU, Softmax
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
