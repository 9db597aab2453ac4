"""The integer mean's fast path (axis-by-axis sums, shift rounding) against numpy."""

from __future__ import annotations

import numpy as np
import pytest

from imaging import reference_level
from napari_pyramids.pyramid.reduce import coarsen

INTEGER_DTYPES = ["uint8", "int8", "uint16", "int16", "uint32", "int32", "int64", "uint64"]


def extreme_block(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Random values over the whole range, with many windows at the very extremes."""
    info = np.iinfo(dtype)
    block = rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    corners = rng.random(shape)
    block[corners < 0.2] = info.max
    block[corners > 0.8] = info.min
    return block


@pytest.mark.parametrize("dtype", INTEGER_DTYPES)
@pytest.mark.parametrize(
    ("shape", "factors"),
    [((9, 10), (2, 2)), ((6, 17), (2, 4)), ((3, 8, 9), (1, 2, 2)), ((5, 6, 7), (2, 2, 2))],
)
def test_power_of_two_windows_match_the_reference(rng, dtype, shape, factors):
    block = extreme_block(rng, shape, dtype)
    for edge in ("trim", "keep"):
        expected = reference_level(block, factors, "mean", edge)
        np.testing.assert_array_equal(coarsen(block, factors, "mean", edge), expected)


@pytest.mark.parametrize("dtype", ["uint8", "int16", "uint16"])
def test_every_tie_rounds_to_even(dtype):
    # All 2x2 windows whose sums are 0..40 (so every remainder, and ties on odd and even).
    low = 0 if np.dtype(dtype).kind == "u" else -20
    sums = np.arange(low, low + 41)
    block = np.zeros((2, 2 * sums.size), dtype=dtype)
    for i, total in enumerate(sums):
        q, r = divmod(int(total), 4)
        block[:, 2 * i : 2 * i + 2] = [[q + (r > 0), q + (r > 1)], [q + (r > 2), q]]
    expected = reference_level(block, (2, 2), "mean")
    np.testing.assert_array_equal(coarsen(block, (2, 2), "mean"), expected)


def test_big_uint16_blocks_agree_slab_by_slab(rng):
    # Bigger than a reducer slab, with Poisson-like values as in microscopy images.
    block = rng.poisson(900, size=(2, 1030, 2050)).astype(np.uint16)
    expected = reference_level(block[:, :8, :], (1, 2, 2), "mean")
    result = coarsen(block, (1, 2, 2), "mean")
    np.testing.assert_array_equal(result[:, :4, :], expected)
    total = block[:, :1030, :2050].reshape(2, 515, 2, 1025, 2).sum(axis=(2, 4))
    np.testing.assert_array_equal(result, np.rint(total / 4).astype(np.uint16))


@pytest.mark.parametrize(
    ("dtype", "low", "high"),
    [
        ("uint16", 0, 16383),  # 4 * 16383 + 2 fits uint16: summed in uint16
        ("uint16", 0, 16384),  # one more does not: summed wide
        ("int16", -8192, 8191),
        ("int16", -8193, 8191),
        ("uint8", 0, 63),
        ("uint8", 0, 64),
    ],
)
def test_sums_in_the_narrow_type_only_when_they_fit(rng, dtype, low, high):
    block = rng.integers(low, high, size=(12, 14), dtype=dtype, endpoint=True)
    block[0, :2] = block[1, :2] = high  # a window at the top of the range
    block[2, :2] = block[3, :2] = low
    for edge in ("trim", "keep"):
        expected = reference_level(block, (2, 2), "mean", edge)
        np.testing.assert_array_equal(coarsen(block, (2, 2), "mean", edge), expected)
