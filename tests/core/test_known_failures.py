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

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import zarr

from faultkit import validate_ome, vector_pyramid
from imaging import file_hashes, level_paths, reference_pyramid, write_image
from napari_pyramids.api import build_pyramid
from napari_pyramids.images import open_image
from napari_pyramids.pyramid.plan import plan_pyramid


@pytest.fixture(scope="module")
def pool():
    with ThreadPoolExecutor(4) as executor:
        yield executor


def read_levels(root, count):
    paths = level_paths(root)
    assert len(paths) == count
    return [zarr.open_array(root / p, mode="r")[...] for p in paths]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_overwrite_rebuild_never_reads_the_levels_it_replaces(tmp_path, zarr_format, pool):
    data = np.random.default_rng(1).integers(1, 60000, size=(512, 512), dtype=np.uint16)
    root = write_image(tmp_path / "img.zarr", data, zarr_format=zarr_format, chunks=(64, 64))
    build_pyramid(zarrurl=root, num_levels=5, method="max")
    # Old levels of the right shapes but wrong content: reading any of them would show.
    for path in ("1", "2", "3", "4"):
        old = zarr.open_array(root / path, mode="r+")
        old[...] = 7
    params = {"num_levels": 5, "memory_budget": "16MiB", "workers": 64, "overwrite": True}
    plan = plan_pyramid(open_image(root), **params)
    assert any(stage.source > 0 for stage in plan.stages), "later passes read new levels"
    build_pyramid(zarrurl=root, executor=pool, **params)
    expected = vector_pyramid(data, (2, 2), 5, "mean")
    for got, want in zip(read_levels(root, 5), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    validate_ome(root)


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
    paths = level_paths(root)
    assert paths[0] == level0
    assert len(set(paths)) == 4
    for got, want in zip(
        read_levels(root, 4), reference_pyramid(data, (2, 2), 4, "mean"), strict=True
    ):
        np.testing.assert_array_equal(got, want)
    validate_ome(root)


def _sharded_image(tmp_path):
    data = np.random.default_rng(4).integers(1, 4096, size=(2, 200, 232), dtype=np.uint16)
    root = write_image(
        tmp_path / "img.zarr", data, zarr_format=3, chunks=(1, 8, 8), shards=(1, 32, 32)
    )
    return data, root


def _sharded_plan(root, **params):
    plan = plan_pyramid(open_image(root), **params)
    for level in plan.new_levels:
        assert level.shards is not None
        assert np.prod(level.shards) > np.prod(level.chunks)
    assert plan.stages[0].n_blocks >= 8
    assert len(plan.stages) >= 2
    return plan


def _check_sharded(root, data, edge, num_levels=4):
    expected = reference_pyramid(data, (1, 2, 2), num_levels, "mean", edge)
    for k, (got, want) in enumerate(zip(read_levels(root, num_levels), expected, strict=True)):
        lost = np.count_nonzero(got != want)
        assert lost == 0, f"level {k}: {lost} of {want.size} voxels differ"
    validate_ome(root)


@pytest.mark.parametrize("edge", ["trim", "keep"])
def test_many_concurrent_blocks_into_sharded_levels_lose_nothing(tmp_path, edge, pool):
    data, root = _sharded_image(tmp_path)
    params = {"num_levels": 4, "memory_budget": "16MiB", "workers": 32, "edge": edge}
    plan = _sharded_plan(root, **params)
    build_pyramid(zarrurl=root, executor=pool, **params)
    _check_sharded(root, data, edge)
    # Every shard of every new level is on disk (fill-value shards are not skipped here,
    # the data has no zeros), so nothing was lost to a concurrent rewrite.
    for level in plan.new_levels:
        doc = json.loads((root / level.path / "zarr.json").read_text())
        grid = [-(-n // s) for n, s in zip(doc["shape"], level.shards, strict=True)]
        shards = [p for p in (root / level.path / "c").rglob("*") if p.is_file()]
        assert len(shards) == int(np.prod(grid))


def test_sharded_levels_on_a_dask_cluster_lose_nothing(tmp_path):
    distributed = pytest.importorskip("distributed")
    data, root = _sharded_image(tmp_path)
    params = {"num_levels": 4, "memory_budget": "16MiB", "workers": 32}
    _sharded_plan(root, **params)
    with distributed.Client(
        processes=False, n_workers=1, threads_per_worker=4, dashboard_address=None
    ):
        build_pyramid(zarrurl=root, **params)
    _check_sharded(root, data, "trim")
