"""Strided reads of a stored level (the preview's sketches) against zarr-python's own."""

from __future__ import annotations

import gc
import itertools

import numpy as np
import pytest
import zarr
from zarr.codecs import TransposeCodec

from napari_pyramids.ome.image import read_array_info
from napari_pyramids.storage import LocalStore, arrays, open_level_array, read_sampled
from napari_pyramids.storage.chunkio import ChunkArray
from napari_pyramids.storage.shards import ShardArray

SHAPE = (5, 61, 47)
CHUNKS = (2, 8, 10)

# name: (zarr-python create_array keyword arguments, the access the engine picks for it)
LAYOUTS = {
    "v2-chunks": (dict(zarr_format=2), ChunkArray),
    "v3-sharded": (dict(zarr_format=3, chunks=(1, 4, 5), shards=CHUNKS), ShardArray),
    "v3-transpose": (
        dict(zarr_format=3, filters=[TransposeCodec(order=(2, 1, 0))]),
        arrays.ZarrArray,
    ),
}


def stored(tmp_path, rng, layout):
    """A partly written array (the rest is its fill value), as zarr-python and as we open it."""
    kwargs = {"chunks": CHUNKS, **LAYOUTS[layout][0]}
    array = zarr.create_array(
        str(tmp_path / "a"), shape=SHAPE, dtype="uint16", fill_value=3, **kwargs
    )
    array[:, :40, 5:] = rng.integers(0, 60000, size=(5, 40, 42), dtype=np.uint16)
    store = LocalStore(tmp_path)
    opened = open_level_array(store, "a", read_array_info(store, "a", kwargs["zarr_format"]))
    assert isinstance(opened, LAYOUTS[layout][1])
    return array, opened


def selections(rng, count):
    """Random slices with steps from 1 to past the chunk length, and the whole array."""
    yield tuple(slice(None, None, step) for step in (1, 7, 3))
    for _ in range(count):
        picked = []
        for n in SHAPE:
            start, stop = sorted(int(i) for i in rng.integers(0, n + 1, size=2))
            picked.append(slice(start, stop, int(rng.integers(1, 14))))
        yield tuple(picked)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_strided_reads_equal_zarr_python_including_unwritten_chunks(tmp_path, rng, layout):
    array, opened = stored(tmp_path, rng, layout)
    for selection in selections(rng, 60):
        np.testing.assert_array_equal(
            read_sampled(opened, selection), array[selection], err_msg=str(selection)
        )


class CountingReads:
    """A stored level that records the regions read from it (and reads them)."""

    def __init__(self, array):
        self.array, self.regions = array, []
        self.shape, self.dtype, self.chunks = array.shape, array.dtype, array.chunks

    def read(self, region):
        self.regions.append(region)
        return self.array.read(region)


def test_only_units_holding_a_sampled_value_are_read_one_at_a_time(tmp_path, rng):
    _, opened = stored(tmp_path, rng, "v2-chunks")
    counting = CountingReads(opened)
    selection = (slice(0, 5, 4), slice(1, 61, 9), slice(0, 47, 12))
    read_sampled(counting, selection)

    # The units holding a sampled index, worked out index by index.
    wanted = {
        tuple(i // c for i, c in zip(point, CHUNKS, strict=True))
        for point in itertools.product(
            *(range(*s.indices(n)) for s, n in zip(selection, SHAPE, strict=True))
        )
    }
    read = [
        tuple(r.start // c for r, c in zip(region, CHUNKS, strict=True))
        for region in counting.regions
    ]
    assert sorted(read) == sorted(wanted)
    for region in counting.regions:  # each read inside one unit
        assert all((r.stop - 1) // c == r.start // c for r, c in zip(region, CHUNKS, strict=True))


@pytest.mark.parametrize("layout", ["v2-chunks", "v3-sharded"])
def test_reading_leaves_no_reference_cycles_for_the_garbage_collector(tmp_path, rng, layout):
    """The preview reads level 0 hundreds of times per setting change: garbage cycles there
    bring on Python's full collections (0.15 s holding napari's thread)."""
    _, opened = stored(tmp_path, rng, layout)
    read_sampled(opened, (slice(None),) * 3)  # first reads may set up caches
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        for selection in selections(rng, 20):
            read_sampled(opened, selection)
        assert gc.collect() == 0
    finally:
        if enabled:
            gc.enable()
