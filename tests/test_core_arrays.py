"""The array helpers against numpy's own functions."""

import numpy as np
import pytest

from mixlib.core.arrays import run_lengths, run_starts, sorted_unique


@pytest.mark.parametrize("values", [
    np.zeros(0, dtype=np.int64),
    np.array([7]),
    np.random.default_rng(0).integers(-50, 50, 1000),
    np.random.default_rng(1).integers(0, 2**62, 5000),
    np.random.default_rng(2).integers(0, 30, 300).astype(str),
    np.random.default_rng(3).random(400).round(1),
])
def test_helpers_equal_numpy(values):
    np.testing.assert_array_equal(sorted_unique(values), np.unique(values))
    ordered = np.sort(values)
    _, first, counts = np.unique(ordered, return_index=True, return_counts=True)
    np.testing.assert_array_equal(np.flatnonzero(run_starts(ordered)), first)
    np.testing.assert_array_equal(run_lengths(ordered), counts)
