"""The block reducers against a per-window numpy reference, and their memory use."""

from __future__ import annotations

import itertools
import tracemalloc

import numpy as np
import pytest

from imaging import reference_level
from napari_pyramids.pyramid.methods import METHODS
from napari_pyramids.pyramid.reduce import SLAB_BYTES, coarsen, working_memory

DTYPES = ["uint8", "uint16", "int16", "int32", "uint32", "int64", "uint64", "float32", "float64"]


def random_block(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return rng.random(shape) > 0.5
    if dt.kind == "f":
        # Multiples of 2**-24: sums of a few are exact in float64, so any order agrees.
        return (rng.integers(0, 2**24, size=shape) / 2**24).astype(dt)
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, size=shape, dtype=dt, endpoint=True)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_method_matches_numpy_reference(rng, method, dtype):
    block = random_block(rng, (3, 9, 10), dtype)
    for edge in ("trim", "keep"):
        expected = reference_level(block, (1, 2, 3), method, edge)
        result = coarsen(block, (1, 2, 3), method, edge)
        assert result.dtype == block.dtype
        np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("method", METHODS)
def test_bool_images_reduce_as_zero_one(rng, method):
    block = rng.random((7, 6)) > 0.4
    for edge in ("trim", "keep"):
        result = coarsen(block, (2, 2), method, edge)
        assert result.dtype == bool
        np.testing.assert_array_equal(result, reference_level(block, (2, 2), method, edge))


def test_integer_mean_rounds_half_to_even_instead_of_truncating():
    # Windows of 4 summing to 2, 6, 3 and 5: means 0.5, 1.5, 0.75 and 1.25.
    block = np.array([[1, 0, 3, 0, 1, 1, 2, 1], [1, 0, 3, 0, 1, 0, 1, 1]], dtype=np.uint8)
    assert coarsen(block, (2, 2), "mean").tolist() == [[0, 2, 1, 1]]


def test_signed_mean_rounds_negative_halves_to_even():
    block = np.array([[-1, -2], [-2, -1], [-5, -4], [-3, -2]], dtype=np.int16)
    # Means -1.5 and -3.5 round to -2 and -4.
    assert coarsen(block, (2, 2), "mean").ravel().tolist() == [-2, -4]


def test_uint64_mean_does_not_overflow():
    top = np.iinfo(np.uint64).max
    block = np.full((2, 2), top, dtype=np.uint64)
    block[0, 0] = top - 3
    # Exact mean is top - 0.75, which rounds to top - 1.
    assert coarsen(block, (2, 2), "mean")[0, 0] == top - 1


def test_mode_ties_go_to_the_smallest_label():
    block = np.array([[7, 3], [3, 7]], dtype=np.uint32)
    assert coarsen(block, (2, 2), "mode")[0, 0] == 3


def test_mode_keeps_existing_label_ids(rng):
    labels = rng.choice(np.array([0, 17, 40000, 2**31 + 5], dtype=np.uint64), size=(30, 31))
    result = coarsen(labels, (3, 3), "mode", "keep")
    assert set(np.unique(result)) <= set(np.unique(labels))


def test_keep_edge_reduces_partial_windows_over_their_pixels():
    block = np.arange(5 * 5, dtype=np.float64).reshape(5, 5)
    result = coarsen(block, (2, 2), "mean", "keep")
    assert result.shape == (3, 3)
    assert result[2, 2] == block[4, 4]
    assert result[0, 2] == block[0:2, 4].mean()
    assert result[2, 0] == block[4, 0:2].mean()


def test_a_level_computed_in_blocks_equals_the_whole_level(rng):
    # Blocks start on window boundaries; only the last one along each axis is partial.
    data = random_block(rng, (2, 13, 22), "uint16")
    factors = (1, 2, 2)
    for method, edge in itertools.product(METHODS, ("trim", "keep")):
        whole = coarsen(data, factors, method, edge)
        pieces = np.empty_like(whole)
        for y0, x0 in itertools.product(range(0, 13, 4), range(0, 22, 6)):
            part = coarsen(data[:, y0 : y0 + 4, x0 : x0 + 6], factors, method, edge)
            pieces[:, y0 // 2 : y0 // 2 + part.shape[1], x0 // 2 : x0 // 2 + part.shape[2]] = part
        np.testing.assert_array_equal(pieces, whole, err_msg=f"{method} {edge}")


def test_callable_is_called_like_dask_coarsen_and_rounded(rng):
    block = random_block(rng, (6, 8), "uint16")
    calls = []

    def spread(x, axis):
        calls.append((x.shape, axis))
        return x.max(axis=axis) - x.min(axis=axis) + 0.5

    result = coarsen(block, (2, 2), spread)
    assert calls == [((3, 2, 4, 2), (1, 3))]
    windows = block.reshape(3, 2, 4, 2)
    expected = np.rint(windows.max(axis=(1, 3)) - windows.min(axis=(1, 3)) + 0.5)
    np.testing.assert_array_equal(result, expected.astype(np.uint16))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize("shape", [(5, 1024, 1024), (2560, 2048), (1, 2, 10, 1024, 512)])
def test_working_memory_stays_within_the_planned_bound(rng, method, dtype, shape):
    # The planner sizes blocks with working_memory(); a reducer using more would break the
    # memory budget. Integer mean in particular makes no float64 copy of the block.
    block = random_block(rng, shape, dtype)
    factors = (1,) * (len(shape) - 2) + (2, 2)
    tracemalloc.start()
    try:
        coarsen(block, factors, method)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert block.nbytes > SLAB_BYTES  # big enough that slabs matter
    assert peak <= working_memory(block.nbytes, 4, method)
