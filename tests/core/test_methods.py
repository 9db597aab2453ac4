"""pyramid.methods: one record per method, and what each fact in it makes the build do."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from imaging import read_attrs, reference_level, write_image
from napari_pyramids import PyramidError, build_pyramid, open_image, plan_pyramid
from napari_pyramids.cli import _parser
from napari_pyramids.options import BuildOptions
from napari_pyramids.pyramid.methods import (
    BUILT_IN,
    CALLABLE,
    METHODS,
    method_for_callable,
    method_named,
    reducer_for,
)

BY_NAME = {method.name: method for method in BUILT_IN}


def test_the_registry_is_closed_and_every_door_offers_it():
    assert METHODS == ("mean", "median", "min", "max", "mode", "nearest")
    assert [method_named(name) for name in METHODS] == list(BUILT_IN)
    assert method_named("callable") is CALLABLE
    for name in METHODS:
        assert _parser().parse_args(["build", "img.zarr", "--method", name]).method == name
    for name in ("callable", "average"):
        with pytest.raises(SystemExit):
            _parser().parse_args(["build", "img.zarr", "--method", name])
    with pytest.raises(PyramidError, match="unknown method 'callable'; choose one of mean"):
        BuildOptions(method="callable")  # a name for a caller's function, not a choice
    with pytest.raises(PyramidError, match="unknown method 'average'"):
        method_named("average")


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int32", "float32"])
def test_every_record_reducer_matches_the_numpy_reference(rng, name, dtype):
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    if info is None:
        block = (rng.integers(0, 2**20, size=(6, 8, 9)) / 2**10).astype(dtype)
    else:
        block = rng.integers(info.min, info.max, size=(6, 8, 9), dtype=dtype, endpoint=True)
    result = BY_NAME[name].reducer(block, (2, 4, 3))
    np.testing.assert_array_equal(result, reference_level(block, (2, 4, 3), name))
    assert result.dtype == block.dtype


def test_numpy_functions_map_to_their_record_and_others_to_callable(rng):
    for method in BUILT_IN:
        for func in method.numpy_equivalents:
            assert method_for_callable(func) is method
    assert method_for_callable(np.ptp) is CALLABLE
    block = rng.integers(0, 1000, size=(4, 6), dtype=np.uint16)
    spread = reducer_for(np.ptp)(block, (2, 3))
    windows = block.reshape(2, 2, 2, 3).transpose(0, 2, 1, 3).reshape(2, 2, 6)
    np.testing.assert_array_equal(spread, np.ptp(windows, axis=-1))


def test_a_numpy_function_builds_the_same_pyramid_as_its_method(tmp_path, rng):
    data = rng.integers(0, 999, size=(40, 36), dtype=np.uint16)
    by_func = write_image(tmp_path / "f.zarr", data)
    by_name = write_image(tmp_path / "n.zarr", data)
    build_pyramid(zarrurl=by_func, num_levels=3, aggregation_function=np.amax)
    build_pyramid(zarrurl=by_name, num_levels=3, method="max")
    assert read_attrs(by_func)["multiscales"][0]["type"] == "max"
    for level in ("1", "2"):
        np.testing.assert_array_equal(
            zarr.open_array(by_func / level, mode="r")[...],
            zarr.open_array(by_name / level, mode="r")[...],
        )
    np.testing.assert_array_equal(
        zarr.open_array(by_func / "1", mode="r")[...], reference_level(data, (2, 2), "max")
    )


def _x_positions(root, k: int, width: int) -> np.ndarray:
    """Physical x of the pixel centres of level ``k``, from its metadata."""
    dataset = read_attrs(root)["multiscales"][0]["datasets"][k]
    transforms = {t["type"]: t for t in dataset["coordinateTransformations"]}
    scale = transforms["scale"]["scale"][-1]
    origin = transforms.get("translation", {"translation": [0.0, 0.0]})["translation"][-1]
    return origin + scale * np.arange(width)


@pytest.mark.parametrize("name", METHODS)
def test_the_window_flag_places_each_level_where_its_pixels_come_from(tmp_path, name):
    # Level 0 holds its own x index, so a mean or nearest pixel tells which level-0 position
    # it stands for; the metadata must put it there (NGFF: scale and translation give the
    # pixel centre). The other window methods follow the mean's placement.
    s0, t0 = 0.25, -3.0
    ramp = np.tile(np.arange(64, dtype=np.float32), (16, 1))
    roots = {}
    for method in {name, "mean", "nearest"}:
        roots[method] = write_image(
            tmp_path / f"{method}.zarr", ramp, scale=(1.0, s0), translation=(0.0, t0)
        )
        build_pyramid(zarrurl=roots[method], num_levels=4, method=method)
    for k in (1, 2, 3):
        for reference in ("mean", "nearest"):
            level = zarr.open_array(roots[reference] / str(k), mode="r")[0]
            np.testing.assert_allclose(
                _x_positions(roots[reference], k, level.size), t0 + s0 * level
            )
        placed_as = "mean" if BY_NAME[name].window else "nearest"
        width = 64 // 2**k
        np.testing.assert_allclose(
            _x_positions(roots[name], k, width), _x_positions(roots[placed_as], k, width)
        )


@pytest.mark.parametrize("name", METHODS)
def test_label_images_refuse_exactly_the_methods_that_invent_ids(tmp_path, rng, name):
    labels = rng.integers(0, 4, size=(32, 32), dtype=np.uint32)
    root = write_image(tmp_path / "labels.zarr", labels, labels=True)
    image = open_image(root)
    if not BY_NAME[name].label_safe:
        with pytest.raises(PyramidError, match=f"label image: {name} would invent label ids"):
            plan_pyramid(image, BuildOptions(method=name))
        # Mean of ids 0 and 2 is 1, an id no pixel of that window holds.
        assert BY_NAME[name].reducer(np.array([[0, 0], [2, 2]], np.uint32), (2, 2))[0, 0] == 1
        return
    build_pyramid(zarrurl=root, num_levels=3, method=name)
    level = zarr.open_array(root / "1", mode="r")[...]
    windows = labels.reshape(16, 2, 16, 2).transpose(0, 2, 1, 3).reshape(16, 16, 4)
    assert ((windows == level[..., None]).any(axis=-1)).all()
