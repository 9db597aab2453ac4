"""Failures seen in other pyramid writers cannot happen here.

- ngff-zarr #650/#676: overwriting a store the computation still read from wrote zeros.
  Here an overwrite rebuild reads level 0 (never written) and, for later passes, the new
  levels in the build folder, never the levels being replaced; nor a stale description of
  an image replaced at the same path; nor a level 0 whose name a new level would take.
- zarr-python #3682 / dask #12583: dask chunks smaller than zarr shards lost 30-50 % of
  the writes when several tasks wrote into one shard. Here blocks are whole shards of every
  level they write, and many concurrent blocks lose nothing.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import zarr

from faultkit import file_hashes, validate_ome
from imaging import read_attrs, reference_pyramid, write_image
from napari_pyramids.core.api import build_pyramid


def read_levels(root, count):
    paths = [d["path"] for d in read_attrs(root)["multiscales"][0]["datasets"]]
    assert len(paths) == count
    return [zarr.open_array(root / p, mode="r")[...] for p in paths]


def test_image_replaced_at_the_same_path_is_read_afresh(tmp_path):
    root = tmp_path / "img.zarr"
    first = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    write_image(root, first)
    build_pyramid(zarrurl=root, num_levels=2)
    # Same path, new image: other shape, chunks and values. Nothing of the first may be used.
    shutil.rmtree(root)
    second = np.random.default_rng(2).integers(1, 1000, size=(96, 80), dtype=np.uint16)
    write_image(root, second, chunks=(32, 32))
    build_pyramid(zarrurl=root, num_levels=3)
    for got, want in zip(
        read_levels(root, 3), reference_pyramid(second, (2, 2), 3, "mean"), strict=True
    ):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("level0", ["1", "s1", "10", "scale3/image"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_level0_named_like_a_level_is_never_replaced(tmp_path, level0, overwrite):
    data = np.random.default_rng(3).integers(1, 1000, size=(64, 48), dtype=np.uint16)
    root = write_image(tmp_path / "img.zarr", data, chunks=(32, 32), level_path=level0)
    hashes = file_hashes(root / level0)
    build_pyramid(zarrurl=root, num_levels=4, overwrite=overwrite)
    assert file_hashes(root / level0) == hashes
    paths = [d["path"] for d in read_attrs(root)["multiscales"][0]["datasets"]]
    assert paths[0] == level0
    assert len(set(paths)) == 4
    for got, want in zip(
        read_levels(root, 4), reference_pyramid(data, (2, 2), 4, "mean"), strict=True
    ):
        np.testing.assert_array_equal(got, want)
    validate_ome(root)
