"""Building pyramids on disk: every level against the per-level numpy reference."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import zarr

from imaging import (
    file_hashes,
    level_paths,
    read_attrs,
    reference_pyramid,
    tree_snapshot,
    write_image,
)
from napari_pyramids import (
    BuildCancelled,
    PyramidError,
    build_pyramid,
    open_image,
    options,
)
from napari_pyramids.pyramid import plan
from napari_pyramids.pyramid import reduce as downsample
from napari_pyramids.pyramid.methods import METHODS


@pytest.fixture
def tiny_blocks(monkeypatch):
    """Shrink blocks, slabs and the budget floor so small images take many blocks and passes."""
    monkeypatch.setattr(downsample, "SLAB_BYTES", 64)
    monkeypatch.setattr(plan, "TARGET_BLOCK_BYTES", 4096)
    monkeypatch.setattr(options, "MIN_MEMORY_BUDGET", 1024)
    # zarr's per-chunk bookkeeping (4 KiB a chunk) would dwarf a budget of bytes.
    monkeypatch.setattr(plan, "CHUNK_OVERHEAD", 8)


def stored(path, level_path="1"):
    return zarr.open_array(str(path / level_path), mode="r")[...]


def sample(rng, shape, dtype="uint16"):
    if np.dtype(dtype).kind == "f":
        return (rng.integers(0, 2**20, size=shape) / 2**10).astype(dtype)
    return rng.integers(0, 3000, size=shape).astype(dtype)


SHAPES = {2: (37, 29), 3: (5, 23, 30), 4: (2, 3, 21, 19), 5: (2, 1, 3, 17, 22)}


@pytest.mark.usefixtures("tiny_blocks")
@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("ndim", [2, 3, 4, 5])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("edge", ["trim", "keep"])
def test_levels_equal_per_level_numpy_reference(tmp_path, rng, zarr_format, ndim, method, edge):
    data = sample(rng, SHAPES[ndim])
    chunks = (1,) * (ndim - 2) + (4, 6)
    path = write_image(tmp_path / "img.zarr", data, zarr_format=zarr_format, chunks=chunks)
    built = build_pyramid(
        zarrurl=path, num_levels=4, method=method, edge=edge, memory_budget=2048, workers=2
    )
    assert built.total_blocks > 4  # many blocks
    assert len(built.stages) > 1  # and several passes
    factors = (1,) * (ndim - 2) + (2, 2)
    expected = reference_pyramid(data, factors, 4, method, edge)
    for k in range(1, 4):
        np.testing.assert_array_equal(stored(path, str(k)), expected[k], err_msg=f"level {k}")


@pytest.mark.usefixtures("tiny_blocks")
@pytest.mark.parametrize("method", ["mean", "mode"])
def test_sharded_v3_levels_are_sharded_and_complete(tmp_path, rng, method):
    data = sample(rng, (2, 70, 66))
    path = write_image(
        tmp_path / "img.zarr", data, zarr_format=3, chunks=(1, 8, 8), shards=(1, 16, 16),
        compressor="zstd",
    )  # fmt: skip
    built = build_pyramid(zarrurl=path, num_levels=3, method=method)
    assert built.stages[0].n_blocks > 4
    expected = reference_pyramid(data, (1, 2, 2), 3, method)
    for k in (1, 2):
        np.testing.assert_array_equal(stored(path, str(k)), expected[k])
        meta = json.loads((path / str(k) / "zarr.json").read_text())
        (codec,) = meta["codecs"]
        assert codec["name"] == "sharding_indexed"
        assert codec["configuration"]["chunk_shape"] == [1, 8, 8]
        assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [1, 16, 16]
        assert [c["name"] for c in codec["configuration"]["codecs"]] == ["bytes", "zstd"]
        assert meta["dimension_names"] == ["z", "y", "x"]


def test_isotropic_z_coarsening_and_factor_three(tmp_path, rng):
    data = sample(rng, (20, 31, 33))
    path = write_image(tmp_path / "img.zarr", data, chunks=(4, 8, 8))
    build_pyramid(zarrurl=path, num_levels=3, coarsening_xy=3, coarsening_z=2)
    expected = reference_pyramid(data, (2, 3, 3), 3, "mean")
    assert stored(path, "2").shape == (5, 3, 3)
    np.testing.assert_array_equal(stored(path, "2"), expected[2])
    scales = [
        d["coordinateTransformations"][0]["scale"]
        for d in read_attrs(path)["multiscales"][0]["datasets"]
    ]
    assert scales == [[1.0, 1.0, 1.0], [2.0, 3.0, 3.0], [4.0, 9.0, 9.0]]


def test_y_and_x_axes_come_from_the_axis_names(tmp_path, rng):
    # An image stored as (y, x, c): the last axis is not X.
    data = sample(rng, (24, 20, 3))
    path = write_image(tmp_path / "img.zarr", data, axes="yxc", chunks=(8, 8, 3))
    build_pyramid(zarrurl=path, num_levels=2)
    np.testing.assert_array_equal(stored(path), reference_pyramid(data, (2, 2, 1), 2, "mean")[1])


def test_float_images_stay_float(tmp_path, rng):
    data = sample(rng, (3, 18, 22), "float32")
    path = write_image(tmp_path / "img.zarr", data, zarr_format=3)
    build_pyramid(zarrurl=path, num_levels=3)
    level = stored(path, "2")
    assert level.dtype == np.float32
    np.testing.assert_array_equal(level, reference_pyramid(data, (1, 2, 2), 3, "mean")[2])


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_label_images_default_to_mode_and_keep_their_ids(tmp_path, rng, zarr_format):
    labels = rng.choice(np.array([0, 5, 9, 70000], dtype=np.uint32), size=(40, 36))
    path = write_image(tmp_path / "lbl.zarr", labels, zarr_format=zarr_format, labels=True)
    built = build_pyramid(zarrurl=path, num_levels=3)
    assert built.method == "mode"
    expected = reference_pyramid(labels, (2, 2), 3, "mode")
    np.testing.assert_array_equal(stored(path, "2"), expected[2])
    assert set(np.unique(stored(path, "2"))) <= {0, 5, 9, 70000}


def test_labels_group_members_are_recognised_as_labels(tmp_path, rng):
    image = write_image(tmp_path / "img.zarr", sample(rng, (16, 16)))
    labels_group = zarr.open_group(image / "labels", mode="w", zarr_format=2)
    labels_group.attrs["labels"] = ["cells"]
    cells = rng.integers(0, 4, size=(16, 16)).astype(np.uint16)
    path = write_image(image / "labels" / "cells", cells)
    assert open_image(path).is_label
    with pytest.raises(PyramidError, match="label image"):
        build_pyramid(zarrurl=path, method="mean")
    build_pyramid(zarrurl=path, method="mean", labels=False)
    np.testing.assert_array_equal(stored(path), reference_pyramid(cells, (2, 2), 2, "mean")[1])


def test_seed_aggregation_functions_map_to_methods_and_round(tmp_path, rng):
    data = sample(rng, (2, 16, 18))
    path = write_image(tmp_path / "img.zarr", data)
    built = build_pyramid(zarrurl=path, aggregation_function=np.max)
    assert built.method == "max"
    np.testing.assert_array_equal(stored(path), reference_pyramid(data, (1, 2, 2), 2, "max")[1])


def test_custom_callable_aggregation(tmp_path, rng):
    data = sample(rng, (16, 18))
    path = write_image(tmp_path / "img.zarr", data)

    def geometric_mean(x, axis):
        return np.exp(np.log(x.astype(np.float64) + 1).mean(axis=axis)) - 1

    build_pyramid(zarrurl=path, aggregation_function=geometric_mean)
    windows = data.reshape(8, 2, 9, 2).astype(np.float64)
    expected = np.rint(np.exp(np.log(windows + 1).mean(axis=(1, 3))) - 1).astype(np.uint16)
    np.testing.assert_array_equal(stored(path), expected)


def test_chunksize_sets_new_level_chunks_clipped_to_shape(tmp_path, rng):
    data = sample(rng, (2, 40, 40))
    path = write_image(tmp_path / "img.zarr", data, chunks=(1, 8, 8))
    build_pyramid(zarrurl=path, num_levels=3, chunksize=(2, 16, 16))
    assert zarr.open_array(str(path / "1"), mode="r").chunks == (2, 16, 16)
    assert zarr.open_array(str(path / "2"), mode="r").chunks == (2, 10, 10)
    np.testing.assert_array_equal(
        stored(path, "2"), reference_pyramid(data, (1, 2, 2), 3, "mean")[2]
    )


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize(
    ("level0", "expected"),
    [("s0", ["s1", "s2"]), ("scale0/image", ["scale1/image", "scale2/image"])],
)
def test_new_levels_follow_the_existing_path_convention(
    tmp_path, rng, zarr_format, level0, expected
):
    data = sample(rng, (20, 20))
    path = write_image(tmp_path / "img.zarr", data, zarr_format=zarr_format, level_path=level0)
    build_pyramid(zarrurl=path, num_levels=3)
    paths = level_paths(path)
    assert paths == [level0, *expected]
    reference = reference_pyramid(data, (2, 2), 3, "mean")
    for k, p in enumerate(expected, start=1):
        np.testing.assert_array_equal(stored(path, p), reference[k])
    if "/" in level0:
        # The parent group of a nested level exists like level 0's does.
        group_file = ".zgroup" if zarr_format == 2 else "zarr.json"
        assert (path / "scale1" / group_file).is_file()
        zarr.open_group(str(path / "scale1"), mode="r")


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_bare_array_gets_minimal_valid_metadata(tmp_path, rng, zarr_format):
    data = sample(rng, (2, 3, 16, 16))
    path = write_image(tmp_path / "bare.zarr", data, zarr_format=zarr_format, metadata=False)
    build_pyramid(zarrurl=path, num_levels=2)
    multiscale = read_attrs(path)["multiscales"][0]
    assert [a["name"] for a in multiscale["axes"]] == ["c", "z", "y", "x"]
    assert [d["path"] for d in multiscale["datasets"]] == ["0", "1"]
    np.testing.assert_array_equal(
        stored(path), reference_pyramid(data, (1, 1, 2, 2), 2, "mean")[1]
    )


def test_level_zero_bytes_are_never_touched(tmp_path, rng):
    data = sample(rng, (3, 33, 35))
    path = write_image(tmp_path / "img.zarr", data, compressor="blosc-lz4")
    before = file_hashes(path / "0")
    build_pyramid(zarrurl=path, num_levels=3)
    build_pyramid(zarrurl=path, num_levels=4, overwrite=True, method="median")
    assert file_hashes(path / "0") == before


def test_new_levels_copy_level_zero_codec_fill_value_and_separator(tmp_path, rng):
    data = sample(rng, (20, 20))
    group = zarr.open_group(tmp_path / "img.zarr", mode="w", zarr_format=2)
    from numcodecs import Blosc, Delta

    array = group.create_array(
        "0", shape=data.shape, chunks=(8, 8), dtype="<u2", fill_value=7,
        compressors=Blosc(cname="zstd", clevel=7, shuffle=Blosc.BITSHUFFLE),
        filters=[Delta(dtype="<u2")], chunk_key_encoding={"name": "v2", "separator": "."},
    )  # fmt: skip
    array[...] = data
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
            "datasets": [
                {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1]}]}
            ],
        }
    ]
    path = tmp_path / "img.zarr"
    build_pyramid(zarrurl=path)
    level0 = json.loads((path / "0" / ".zarray").read_text())
    level1 = json.loads((path / "1" / ".zarray").read_text())
    for key in ("compressor", "filters", "fill_value", "dimension_separator", "dtype", "order"):
        assert level1[key] == level0[key], key
    assert (path / "1" / "0.0").is_file()
    np.testing.assert_array_equal(stored(path), reference_pyramid(data, (2, 2), 2, "mean")[1])


def test_seed_open_array_kwargs_are_honoured(tmp_path):
    data = np.zeros((32, 32), dtype=np.uint8)
    data[:8, :8] = 9
    path = write_image(tmp_path / "img.zarr", data, chunks=(4, 4))
    build_pyramid(zarrurl=path, open_array_kwargs={"write_empty_chunks": False, "fill_value": 0})
    chunk_files = [
        f for f in (path / "1").rglob("*") if f.is_file() and not f.name.startswith(".")
    ]
    assert len(chunk_files) == 1  # only the non-empty chunk was written
    np.testing.assert_array_equal(stored(path), reference_pyramid(data, (2, 2), 2, "mean")[1])


def test_existing_level_is_refused_without_overwrite_and_nothing_changes(tmp_path, rng):
    path = write_image(tmp_path / "img.zarr", sample(rng, (20, 20)))
    build_pyramid(zarrurl=path, num_levels=2)
    before = tree_snapshot(path)
    with pytest.raises(ValueError, match=r"level '1' already exists.*overwrite"):
        build_pyramid(zarrurl=path, num_levels=3)
    assert tree_snapshot(path) == before


def test_unlisted_level_folder_is_refused_too(tmp_path, rng):
    # A seed-built pyramid: arrays 1.. exist but the metadata lists only level 0.
    data = sample(rng, (20, 20))
    path = write_image(tmp_path / "img.zarr", data)
    zarr.open_group(path, mode="a").create_array("1", shape=(10, 10), dtype="uint16")
    with pytest.raises(PyramidError, match="'1' already exists"):
        build_pyramid(zarrurl=path)
    build_pyramid(zarrurl=path, overwrite=True)
    np.testing.assert_array_equal(stored(path), reference_pyramid(data, (2, 2), 2, "mean")[1])


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_overwrite_replaces_and_drops_levels(tmp_path, rng, zarr_format):
    data = sample(rng, (2, 40, 44))
    path = write_image(tmp_path / "img.zarr", data, zarr_format=zarr_format)
    build_pyramid(zarrurl=path, num_levels=4, method="max")
    build_pyramid(zarrurl=path, num_levels=2, overwrite=True, method="min")
    paths = level_paths(path)
    assert paths == ["0", "1"]
    assert not (path / "2").exists()
    assert not (path / "3").exists()
    np.testing.assert_array_equal(stored(path), reference_pyramid(data, (1, 2, 2), 2, "min")[1])
    assert not [
        p
        for p in path.iterdir()
        if (p.name.startswith(".napari-pyramids") and p.name != ".napari-pyramids-record.json")
    ]


def test_progress_is_reported_per_block(tmp_path, rng, monkeypatch):
    monkeypatch.setattr(plan, "TARGET_BLOCK_BYTES", 2048)
    path = write_image(tmp_path / "img.zarr", sample(rng, (4, 64, 64)), chunks=(1, 16, 16))
    seen = []
    built = build_pyramid(zarrurl=path, num_levels=2, progress=lambda d, t: seen.append((d, t)))
    total = built.total_blocks
    assert total > 4
    assert seen == [(i, total) for i in range(total + 1)]


def test_cancel_stops_the_build_and_leaves_the_image_unchanged(tmp_path, rng, monkeypatch):
    monkeypatch.setattr(plan, "TARGET_BLOCK_BYTES", 2048)
    path = write_image(tmp_path / "img.zarr", sample(rng, (4, 64, 64)), chunks=(1, 16, 16))
    before = tree_snapshot(path)
    stop = threading.Event()
    calls = []

    def progress(done, total):
        calls.append(done)
        if done == 3:
            stop.set()

    with pytest.raises(BuildCancelled):
        build_pyramid(zarrurl=path, num_levels=2, progress=progress, cancel=stop)
    assert max(calls) < 3 + 2  # stopped after at most the blocks already running
    assert tree_snapshot(path) == before
    build_pyramid(zarrurl=path, num_levels=2)  # the same call completes afterwards


def test_one_level_writes_nothing(tmp_path, rng):
    path = write_image(tmp_path / "img.zarr", sample(rng, (20, 20)))
    before = tree_snapshot(path)
    built = build_pyramid(zarrurl=path, num_levels=1)
    assert built.new_levels == ()
    assert tree_snapshot(path) == before


@pytest.mark.parametrize(
    ("shape", "chunks", "method"),
    [
        ((256, 256), (128, 128), "mean"),  # one block of whole chunks
        ((4, 256, 256), (1, 128, 128), "median"),  # two blocks (see block bytes below)
        ((250, 250), (75, 75), "mode"),  # chunks that split windows: the block read whole
    ],
)
def test_a_build_of_few_blocks_reports_progress_in_many_steps(
    tmp_path, rng, monkeypatch, shape, chunks, method
):
    from napari_pyramids import engine
    from napari_pyramids.engine import BLOCK_PARTS, iter_build

    # Count the steps the build's structure gives, whatever this machine's speed.
    monkeypatch.setattr(engine, "PART_INTERVAL", 0.0)
    monkeypatch.setattr(plan, "TARGET_BLOCK_BYTES", 2 * 256 * 256 * 2)
    data = sample(rng, shape)
    path = write_image(tmp_path / "img.zarr", data, chunks=chunks)
    steps = list(iter_build(path, num_levels=3, method=method, workers=1))

    writing = [s for s in steps if s.phase == "writing"]
    total = writing[-1].total
    assert total <= 2
    made = [(s.done + s.part) / s.total for s in writing]
    assert made == sorted(made)  # never backwards
    assert made[0] == 0
    assert made[-1] == 1
    assert len(set(made)) >= 20
    assert len(set(made)) >= min(BLOCK_PARTS, 20) * total
    factors = (1, 2, 2) if len(shape) == 3 else (2, 2)
    expected = reference_pyramid(data, factors, 3, method)
    for k in (1, 2):
        np.testing.assert_array_equal(stored(path, str(k)), expected[k])


@pytest.mark.usefixtures("tiny_blocks")
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_whole_block_progress_yields_once_per_block_and_builds_the_same_levels(
    tmp_path, rng, zarr_format
):
    # What a dataset build asks for: no parts of blocks, each chunk reduced in one go.
    from napari_pyramids.engine import iter_build

    data = sample(rng, (2, 96, 80))
    path = write_image(tmp_path / "img.zarr", data, zarr_format=zarr_format, chunks=(1, 32, 32))
    steps = list(iter_build(path, num_levels=3, workers=2, block_parts=False))

    writing = [s for s in steps if s.phase == "writing"]
    total = writing[-1].total
    assert total >= 2
    assert [(s.done, s.part) for s in writing] == [(k, 0.0) for k in range(total + 1)]
    expected = reference_pyramid(data, (1, 2, 2), 3, "mean")
    for k in (1, 2):
        np.testing.assert_array_equal(stored(path, str(k)), expected[k])


def _set_scale(path, zarr_format, scale):
    """Edit level 0's scale in the image's metadata, as another program would."""
    group = zarr.open_group(str(path), mode="r+", zarr_format=zarr_format)
    attrs = group.attrs.asdict()
    ome = attrs["ome"] if zarr_format == 3 else attrs
    ome["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] = scale
    group.attrs.update(attrs)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_build_of_an_opened_image_follows_metadata_changed_since_it_was_opened(
    tmp_path, rng, zarr_format
):
    # A dataset build opens an image to see whether it is complete, then builds it: what
    # the levels get is decided by the metadata as it is under the lock, not as it was read.
    from napari_pyramids.engine import iter_build

    data = sample(rng, (2, 40, 36))
    path = write_image(tmp_path / "img.zarr", data, zarr_format=zarr_format, chunks=(1, 16, 16))
    opened = open_image(path)
    _set_scale(path, zarr_format, [1.0, 0.5, 0.25])
    list(iter_build(opened, num_levels=3, workers=1))

    datasets = read_attrs(path)["multiscales"][0]["datasets"]
    scales = [d["coordinateTransformations"][0]["scale"] for d in datasets]
    assert scales == [[1.0, 0.5, 0.25], [1.0, 1.0, 0.5], [1.0, 2.0, 1.0]]
    expected = reference_pyramid(data, (1, 2, 2), 3, "mean")
    for k in (1, 2):
        np.testing.assert_array_equal(stored(path, str(k)), expected[k])


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_image_built_by_another_build_before_the_lock_is_left_as_that_build_left_it(
    tmp_path, rng, zarr_format
):
    # The plan made before the lock saw no levels; another build publishes them before this
    # one takes the lock: this one must plan again from what is there, and refuse.
    from napari_pyramids.engine import iter_build
    from napari_pyramids.errors import LevelExistsError

    data = sample(rng, (2, 40, 36))
    path = write_image(tmp_path / "img.zarr", data, zarr_format=zarr_format, chunks=(1, 16, 16))
    opened = open_image(path)
    take_lock = opened.store.lock
    after_other: dict[str, str] = {}

    def other_build_first(build_id):
        build_pyramid(zarrurl=path, num_levels=3, method="max")
        after_other.update(tree_snapshot(path))
        return take_lock(build_id)

    opened.store.lock = other_build_first
    with pytest.raises(LevelExistsError):
        list(iter_build(opened, num_levels=3, workers=1))

    assert after_other
    assert tree_snapshot(path) == after_other
    expected = reference_pyramid(data, (1, 2, 2), 3, "max")
    for k in (1, 2):
        np.testing.assert_array_equal(stored(path, str(k)), expected[k])
