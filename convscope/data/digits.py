"""scikit-learn's bundled 8x8 handwritten digits: the offline default data set."""

import numpy as np

DIGITS_TEST_FRACTION = 0.2


def load_digits_split(split: str, seed: int = 0):
    """Images (N, 8, 8, 1) float32 in [0, 1] (pixel values 0..16 divided by 16), labels (N,) int64.

    The 1,797 images are split 80/20 into 'train' and 'test', stratified by class with `seed`.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=DIGITS_TEST_FRACTION, random_state=seed, stratify=y
    )
    return (x_train, y_train) if split == "train" else (x_test, y_test)
