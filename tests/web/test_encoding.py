"""The API's number rounding: array operations that give what one formatted string per value gave."""

import numpy as np

from convscope.web.encoding import SIGNIFICANT_DIGITS, rounded


def test_rounded_matches_formatting_each_value():
    rng = np.random.default_rng(0)
    values = rng.standard_normal(5000) * 10.0 ** rng.integers(-9, 9, 5000)
    values = np.concatenate([values, [0.0, -0.0, 1.0, 9.99995, 123456789.0, np.inf, -np.inf]]).astype(
        np.float32
    )
    expected = [float(f"{v:.{SIGNIFICANT_DIGITS}g}") for v in values.astype(np.float64)]
    assert rounded(values) == expected
    assert rounded(np.float32(0.123456)) == [0.12346]
